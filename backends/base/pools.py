"""Connection pools: one per alias per handler, bound to the loop that opened it.

A pool is created lazily by the first task that needs a connection, inside the
running loop, and closed by ``close_pools()``. A connection is never handed
across event loops: a pool whose loop has been closed is dropped and replaced;
a pool whose loop is still running elsewhere raises a clear error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from django.db import OperationalError, ProgrammingError


class PoolTimeout(OperationalError):
    """No pooled connection became available in time (pool exhausted)."""


class _Entry:
    __slots__ = ("loop", "opened", "pool")

    def __init__(self, pool: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.opened = False


class PoolRegistry:
    """The pools of one handler, by alias."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __contains__(self, alias: str) -> bool:
        return alias in self._entries

    async def get(self, alias: str, factory: Callable[[], Any]) -> Any:
        """The open pool for ``alias`` in the running loop, created by
        ``factory()`` (an unopened pool) on first use."""
        loop = asyncio.get_running_loop()
        entry = self._entries.get(alias)
        if entry is not None and entry.loop is not loop:
            if not entry.loop.is_closed():
                raise ProgrammingError(
                    f"The connection pool of database '{alias}' belongs to another "
                    f"running event loop. A connection is never handed across event "
                    f"loops: use one AsyncConnectionHandler per event loop, or call "
                    f"close_pools() in the other loop first."
                )
            # Its loop is gone, and so are the tasks that could return its
            # connections: forget it (the driver closes them when collected).
            del self._entries[alias]
            entry = None
        if entry is None:
            entry = self._entries[alias] = _Entry(factory(), loop)
        if not entry.opened:
            # open() is idempotent; concurrent first users all wait for it.
            await entry.pool.open()
            entry.opened = True
        return entry.pool

    def peek(self, alias: str) -> Any:
        """The pool for ``alias`` if one exists (no creation)."""
        entry = self._entries.get(alias)
        return None if entry is None else entry.pool

    async def close_all(self) -> None:
        """Close every pool of the running loop and forget all pools."""
        entries, self._entries = self._entries, {}
        loop = asyncio.get_running_loop()
        for entry in entries.values():
            if entry.loop is loop:
                await entry.pool.close()
