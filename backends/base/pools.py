"""Connection pools: one per alias per handler *per event loop*, closed with it.

Who uses a pool: the tasks of the event loop that opened it, and nobody else. A
connection is never handed across event loops. Each running loop gets its own
pools, lazily, on first use (so threaded WSGI servers, ``manage.py runserver``
and ``async_to_sync``, which run async code in a new loop per call or per
thread, work with the same ``DATABASES`` as an ASGI server).

When a pool is closed:

- by ``close_pools()`` (``PoolRegistry.close_all``), for the running loop;
- **when its loop ends**: ``asyncio.run`` (and so ``async_to_sync``, uvicorn,
  ``asgiref``) finalizes the loop's async generators after every task has
  finished (``loop.shutdown_asyncgens()``). The registry keeps one suspended
  async generator per loop, whose ``finally`` closes that loop's pools then:
  their idle connections are closed, not left to the garbage collector. A loop
  closed by hand without ``shutdown_asyncgens()`` leaves its pools to the
  garbage collector; they are forgotten on the next use from another loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from django.db import OperationalError


class PoolTimeout(OperationalError):
    """No pooled connection became available in time (pool exhausted, or the
    pool cannot connect: then ``__cause__`` is the connection error)."""


class _Entry:
    __slots__ = ("discarded", "opened", "pool")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.opened = False
        #: Closed connections not handed back yet (their return was cancelled).
        self.discarded: list[Any] = []


class _LoopPools:
    """The pools one registry opened in one event loop."""

    __slots__ = ("entries", "finalizer", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.entries: dict[str, _Entry] = {}
        self.finalizer: AsyncGenerator[None, None] | None = None


class PoolRegistry:
    """The pools of one handler, by event loop and alias.

    ``before_loop_close`` is awaited at a loop's end before its pools close
    (the handler passes "wait for the connection releases in flight", so every
    connection is back in its pool first).
    """

    def __init__(
        self, before_loop_close: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        # Keyed by loop: each thread's loop only ever touches its own key
        # (dict operations are atomic under the GIL).
        self._loops: dict[asyncio.AbstractEventLoop, _LoopPools] = {}
        self._before_loop_close = before_loop_close

    def __contains__(self, alias: str) -> bool:
        return self.peek(alias) is not None

    async def get(self, alias: str, factory: Callable[[], Any]) -> Any:
        """The open pool for ``alias`` in the running loop, created by
        ``factory()`` (an unopened pool) on first use."""
        loop = asyncio.get_running_loop()
        pools = self._loops.get(loop)
        if pools is None:
            pools = await self._start_loop(loop)
        entry = pools.entries.get(alias)
        if entry is None:
            entry = pools.entries[alias] = _Entry(factory())
        if not entry.opened:
            # open() is idempotent; concurrent first users all wait for it.
            await entry.pool.open()
            entry.opened = True
        while entry.discarded:
            # A return that was cancelled while the loop went on: the pool
            # still counts the connection; hand it back so it is replaced.
            await entry.pool.putconn(entry.discarded.pop())
        return entry.pool

    def peek(self, alias: str) -> Any:
        """The running loop's pool for ``alias`` if one exists (no creation)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        pools = self._loops.get(loop)
        entry = None if pools is None else pools.entries.get(alias)
        return None if entry is None else entry.pool

    def discard(self, alias: str, connection: Any) -> None:
        """Remember a pooled ``connection`` closed without being handed back
        (its return was cancelled): it goes back to its pool when the pool is
        next used in this loop, or when the pool closes. No I/O."""
        try:
            pools = self._loops.get(asyncio.get_running_loop())
        except RuntimeError:
            pools = None
        entry = None if pools is None else pools.entries.get(alias)
        if entry is not None:
            entry.discarded.append(connection)

    async def close_all(self) -> None:
        """Close the running loop's pools (a later use opens new ones), and
        forget the pools of loops that have been closed."""
        self._forget_closed_loops()
        pools = self._loops.pop(asyncio.get_running_loop(), None)
        if pools is None:
            return
        finalizer, pools.finalizer = pools.finalizer, None
        await _close_pools(pools)
        if finalizer is not None:
            await finalizer.aclose()  # nothing left for it to close

    # ##### Loop lifecycle #####

    async def _start_loop(self, loop: asyncio.AbstractEventLoop) -> _LoopPools:
        self._forget_closed_loops()
        pools = self._loops[loop] = _LoopPools(loop)
        finalizer = self._close_at_loop_end(pools)
        # The first iteration registers the generator with the running loop
        # (asyncio's firstiter hook): shutdown_asyncgens() will close it.
        await anext(finalizer)
        pools.finalizer = finalizer
        return pools

    async def _close_at_loop_end(self, pools: _LoopPools) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            # Reached from loop.shutdown_asyncgens(): every task of the loop
            # has finished. Or from a manual finish of a closed loop: nothing
            # can run there any more.
            if not pools.loop.is_closed() and self._loops.get(pools.loop) is pools:
                del self._loops[pools.loop]
                if self._before_loop_close is not None:
                    await self._before_loop_close()
                await _close_pools(pools)

    def _forget_closed_loops(self) -> None:
        for loop, pools in list(self._loops.items()):
            if loop.is_closed():
                # Closed by hand, without shutdown_asyncgens(): its pools'
                # connections are left to the garbage collector. Finish the
                # generator here, or its finalizer would be scheduled on the
                # closed loop when it is collected.
                del self._loops[loop]
                finalizer, pools.finalizer = pools.finalizer, None
                if finalizer is not None:
                    _finish_on_closed_loop(finalizer)


async def _close_pools(pools: _LoopPools) -> None:
    entries, pools.entries = pools.entries, {}
    for entry in entries.values():
        await entry.pool.close()
        # A closed pool closes what it is handed; it no longer counts them.
        for connection in entry.discarded:
            await entry.pool.putconn(connection)


def _finish_on_closed_loop(finalizer: AsyncGenerator[None, None]) -> None:
    # Its finally clause awaits nothing when the loop is closed, so one step
    # of aclose() runs it to the end without a loop.
    closing = finalizer.aclose()
    try:
        closing.send(None)
    except StopIteration:
        pass
    else:  # pragma: no cover - the finally clause awaited something
        closing.close()
