"""Records, per request, the database work and where it ran.

- every sync ``django.db.connections`` connection created in the process
  (``connection_created``, any thread): the sync ORM's only way to a query;
- every query the task's async connection ran (an ``execute_wrapper``), with
  whether it ran off the event loop's thread.

``/stats/`` returns the records (``views.stats``).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import markcoroutinefunction
from django.db.backends.signals import connection_created

from async_db import async_connections

#: One record per request: path, queries, off-loop queries, sync connections.
REQUESTS: list[dict[str, Any]] = []
#: Every sync connection created since the site started: (alias, thread).
SYNC_CONNECTIONS: list[tuple[str, str]] = []


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    SYNC_CONNECTIONS.append((connection.alias, threading.current_thread().name))


connection_created.connect(_on_connection_created, weak=False)


class RecordDatabaseWork:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Callable[[Any], Awaitable[Any]]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: Any) -> Any:
        if request.path == "/stats/":
            return await self.get_response(request)
        loop_thread = threading.get_ident()
        queries: list[str] = []
        offloop: list[str] = []
        sync_before = len(SYNC_CONNECTIONS)

        def record(execute: Any, sql: Any, params: Any, many: bool, ctx: Any) -> Any:
            queries.append(str(sql))
            if threading.get_ident() != loop_thread:
                offloop.append(str(sql))
            return execute(sql, params, many, ctx)

        with async_connections["default"].execute_wrapper(record):
            response = await self.get_response(request)
        REQUESTS.append(
            {
                "path": request.path,
                "status": response.status_code,
                "queries": queries,
                "offloop": offloop,
                "sync_connections": SYNC_CONNECTIONS[sync_before:],
            }
        )
        return response
