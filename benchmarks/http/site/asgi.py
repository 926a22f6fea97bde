"""The ASGI application: Django for HTTP, plus the lifespan protocol.

Django's ``ASGIHandler`` serves HTTP only, so :func:`application` answers
``lifespan`` messages itself and forwards everything else to Django:

* startup: with ``ASYNC_DB_SITE_CHECK_DATABASE`` (the default), run
  ``SELECT 1`` on an async-db connection, so a wrong DSN fails the start
  (``lifespan.startup.failed``) instead of the first request, and the pool is
  open before the server accepts connections;
* shutdown: ``await async_connections.close_pools()``, then close Django's own
  (sync) pools, so the server leaves no backend behind, and log
  ``pools closed (pid N)`` (logger ``async_db_site``, INFO: one line per
  worker process).

Run with ``python -m uvicorn benchmarks.http.site.asgi:application``
(``--lifespan on`` makes a failed startup fatal).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.http.site.settings")

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.asgi import get_asgi_application

from async_db import (
    DEFAULT_DB_ALIAS,
    async_connections,
    new_connections,
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

logger = logging.getLogger("async_db_site")

#: Django's handler (calls ``django.setup()``): HTTP only.
django_application = get_asgi_application()


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """The site: lifespan handled here, HTTP by Django, WebSockets by a
    Channels consumer (``/ws/items/``)."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "websocket":
        await websocket_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)


async def websocket_application(scope: Scope, receive: Receive, send: Send) -> None:
    from benchmarks.http.site.consumers import ItemConsumer

    if scope["path"] != "/ws/items/":
        await send({"type": "websocket.close", "code": 4404})
        return
    await ItemConsumer.as_asgi()(scope, receive, send)


async def lifespan(receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol: startup, then shutdown, in one task."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:
                logger.exception("startup failed")
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await shutdown()
            except Exception as exc:
                logger.exception("shutdown failed")
                await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.shutdown.complete"})
            return


async def startup() -> None:
    if settings.ASYNC_DB_SITE_CHECK_DATABASE:
        # A scope of its own: the connection goes back to the pool at its end,
        # not when the (application-long) lifespan task ends.
        async with (
            new_connections(),
            async_connections[DEFAULT_DB_ALIAS].cursor() as cursor,
        ):
            await cursor.execute("SELECT 1")


async def shutdown() -> None:
    await async_connections.close_pools()
    await sync_to_async(close_orm_pools, thread_sensitive=False)()
    # One line per process: with several workers, tests check every worker's.
    logger.info("pools closed (pid %d)", os.getpid())


def close_orm_pools() -> None:
    """Close the pools of Django's own backend (used by the ORM views)."""
    from django.db import connections

    connections.close_all()
    for alias in connections:
        connection: Any = connections[alias]
        # Only the PostgreSQL backend pools (``OPTIONS["pool"]``).
        if getattr(connection, "pool", None) is not None:
            connection.close_pool()
