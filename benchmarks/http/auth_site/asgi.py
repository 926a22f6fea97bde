"""The ASGI application: Django for HTTP; the lifespan shutdown closes
async-db's pools and Django's (no backend left behind)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.http.auth_site.settings")

from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application

from async_db import async_connections

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

django_application = get_asgi_application()


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "lifespan":
        await django_application(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await async_connections.close_pools()
            await sync_to_async(close_django_pools, thread_sensitive=False)()
            await send({"type": "lifespan.shutdown.complete"})
            return


def close_django_pools() -> None:
    from django.db import connections

    connections.close_all()
    for alias in connections:
        connection: Any = connections[alias]
        if getattr(connection, "pool", None) is not None:
            connection.close_pool()
