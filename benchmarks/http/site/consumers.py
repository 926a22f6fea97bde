"""A Channels consumer on async-db: item lookups over a WebSocket.

No ``database_sync_to_async``: the consumer instance runs in one task, so it
has a connection of its own, released when the socket closes. Between
messages it calls ``aclose_old_connections()`` so an idle socket doesn't pin a
pool slot.
"""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import (  # type: ignore[import-untyped]
    AsyncWebsocketConsumer,
)

from async_db import DEFAULT_DB_ALIAS, aclose_old_connections, async_connections
from benchmarks.http.site.views import SELECT_ITEM


class ItemConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Receives ``{"id": pk}``; answers the item (and the backend pid)."""

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        pk = int(json.loads(text_data or "{}")["id"])
        async with async_connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            await cursor.execute(SELECT_ITEM, [pk])
            row = await cursor.fetchone()
            await cursor.execute("SELECT pg_backend_pid()")
            (pid,) = await cursor.fetchone()
        reply: dict[str, Any] = {"pid": pid, "item": None}
        if row is not None:
            reply["item"] = {"id": row[0], "name": row[1], "value": row[2]}
        await self.send(text_data=json.dumps(reply))
        await aclose_old_connections()
