"""A Channels consumer on async-db: item lookups over a WebSocket.

No ``database_sync_to_async``: the consumer instance runs in one task, so it
has a connection of its own, and the native ORM's ``aget()`` runs on it.
Between messages it calls ``aclose_old_connections()`` so an idle socket
doesn't pin a pool slot, and the connection is released when the socket
closes.
"""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import (  # type: ignore[import-untyped]
    AsyncWebsocketConsumer,
)
from django.db.models.expressions import RawSQL

from async_db import aclose_old_connections
from benchmarks.http.site.models import Item


class ItemConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Receives ``{"id": pk}``; answers the item and the server backend that
    read it (``pid``), or ``{"item": null, "pid": null}``."""

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        pk = int(json.loads(text_data or "{}")["id"])
        reply: dict[str, Any] = {"pid": None, "item": None}
        try:
            item = await Item.objects.annotate(pid=RawSQL("pg_backend_pid()", [])).aget(
                pk=pk
            )
        except Item.DoesNotExist:
            pass
        else:
            reply = {"pid": item.pid, "item": item.to_json()}
        await self.send(text_data=json.dumps(reply))
        await aclose_old_connections()
