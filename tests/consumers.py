"""A Channels consumer on async-db: no database_sync_to_async anywhere."""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from async_db import aclose_old_connections, async_connections

#: Wrappers each consumer used, for the tests to inspect after disconnect.
used: list[Any] = []


class ItemConsumer(AsyncWebsocketConsumer):
    alias = "pooled"

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=json.dumps({"pid": await self.backend_pid()}))

    async def receive(
        self, text_data: str | None = None, bytes_data: Any = None
    ) -> None:
        # Between units of work: return the pooled connection (CONN_MAX_AGE=0),
        # so an idle consumer doesn't pin a pool slot.
        await aclose_old_connections()
        message = json.loads(text_data or "{}")
        if message.get("op") == "pid":
            await self.send(text_data=json.dumps({"pid": await self.backend_pid()}))
            await aclose_old_connections()
        elif message.get("op") == "hold":
            await self.send(text_data=json.dumps({"pid": await self.backend_pid()}))

    async def backend_pid(self) -> int:
        conn = async_connections[self.alias]
        used.append(conn)
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT pg_backend_pid()")
            (pid,) = await cursor.fetchone()
        return int(pid)
