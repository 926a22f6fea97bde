"""Test-only: tasks spawned by a test share the test's connection.

``isolated(spawned_tasks="share")`` (``async_db.test``) runs a test inside a
rolled-back transaction *and* lets the tasks the test spawns (``gather``,
``TaskGroup``, a fan-out view) use that same connection, so their writes are
rolled back too instead of being refused by the spawned-task rule. Never used
outside tests.

Who sees the shared connection: the test's task and every task spawned from it
(directly or not) while the share is on, through ``async_connections[alias]``;
they find it through a ContextVar copied at spawn time. A ``new_connections()``
scope leaves the share: its connections are independent, as always.

One connection serves one query at a time, so the tasks take turns:

- each query holds the connection while it executes;
- an ``async_atomic`` block holds it from its start to its end, so savepoints
  nest correctly;
- a task spawned *inside* a holder's block may use the connection (it nests
  inside the holder's block): otherwise a fan-out under
  ``AsyncAtomicRequestsMiddleware`` would wait for itself;
- a task that waits longer than ``timeout`` gets a
  ``TransactionManagementError`` naming the task that holds the connection,
  never a silent deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from django.db.transaction import TransactionManagementError

if TYPE_CHECKING:
    from async_db.backends.base.base import BaseAsyncDatabaseWrapper

#: (handler, alias) -> the share, for the test's task and what it spawns.
_shares: ContextVar[Mapping[tuple[object, str], SharedConnection]] = ContextVar(
    "async_db_shares", default=MappingProxyType({})
)
#: The tasks holding a shared connection in this context (a task spawned
#: inside a holder's block inherits its holder here).
_holding: ContextVar[tuple[asyncio.Task[Any], ...]] = ContextVar(
    "async_db_share_holders", default=()
)


def shared_connection(key: tuple[object, str]) -> BaseAsyncDatabaseWrapper | None:
    """The wrapper shared with this task for ``key``, if any (no I/O)."""
    share = _shares.get().get(key)
    return None if share is None else share.wrapper


def leave_shares() -> Token[Mapping[tuple[object, str], SharedConnection]]:
    """``new_connections()``: its scope shares nothing."""
    return _shares.set(MappingProxyType({}))


class SharedConnection:
    """A wrapper shared by a test's task and the tasks it spawns."""

    def __init__(
        self, wrapper: BaseAsyncDatabaseWrapper, key: tuple[object, str], timeout: float
    ) -> None:
        self.wrapper = wrapper
        self.key = key
        self.timeout = timeout
        #: Tasks holding the connection, innermost last.
        self._holders: list[asyncio.Task[Any]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._owner: asyncio.Task[Any] | None = None
        self._tokens: list[Token[Any]] = []
        #: (task, holder object) -> the turn tokens it holds, innermost last.
        self._turns: dict[tuple[asyncio.Task[Any], object], list[Token[Any]]] = {}

    # ##### Installing #####

    def install(self) -> None:
        """Share the wrapper from now on (in the current task's context)."""
        wrapper = self.wrapper
        self._owner = wrapper.owner
        # Any task of the share may use it; the turns below keep them apart.
        wrapper.owner = None
        wrapper.share = self
        wrapper.execute_wrappers.append(self.serialise)
        shares = MappingProxyType({**_shares.get(), self.key: self})
        self._tokens.append(_shares.set(shares))

    def uninstall(self) -> None:
        wrapper = self.wrapper
        wrapper.execute_wrappers.remove(self.serialise)
        wrapper.share = None
        wrapper.owner = self._owner
        _shares.reset(self._tokens.pop())

    # ##### Taking turns #####

    def _may_enter(self, task: asyncio.Task[Any]) -> bool:
        if not self._holders:
            return True
        top = self._holders[-1]
        return top is task or top in _holding.get()

    async def acquire(self, holder: object) -> None:
        """Wait for this task's turn (bounded by ``timeout``), for ``holder``
        (an atomic block, a query); :meth:`release` with the same one ends it."""
        task = asyncio.current_task()
        assert task is not None
        if not self._may_enter(task):
            try:
                async with asyncio.timeout(self.timeout):
                    while not self._may_enter(task):
                        waiter = asyncio.get_running_loop().create_future()
                        self._waiters.append(waiter)
                        await waiter
            except TimeoutError:
                raise self._waited_too_long(task) from None
        self._holders.append(task)
        token = _holding.set((*_holding.get(), task))
        self._turns.setdefault((task, holder), []).append(token)

    def holds(self, holder: object) -> bool:
        """Whether the current task holds a turn for ``holder``."""
        return (asyncio.current_task(), holder) in self._turns

    def release(self, holder: object) -> None:
        task = asyncio.current_task()
        assert task is not None
        tokens = self._turns[task, holder]
        token = tokens.pop()
        if not tokens:
            del self._turns[task, holder]
        # The innermost hold of this task (a holder may end before a task it
        # spawned inside its block does).
        for index in range(len(self._holders) - 1, -1, -1):
            if self._holders[index] is task:
                del self._holders[index]
                break
        _holding.reset(token)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def serialise(
        self,
        execute: Callable[..., Any],
        sql: Any,
        params: Any,
        many: bool,
        context: Any,
    ) -> Any:
        """``execute_wrapper``: a query runs in its task's turn."""
        holder = context["cursor"]
        await self.acquire(holder)
        try:
            return await execute(sql, params, many, context)
        finally:
            self.release(holder)

    def _waited_too_long(self, task: asyncio.Task[Any]) -> TransactionManagementError:
        holder = self._holders[-1].get_name() if self._holders else "none"
        return TransactionManagementError(
            f"Task {task.get_name()!r} waited {self.timeout:g} seconds for the test "
            f"connection of database '{self.key[1]}' it shares "
            f"(spawned_tasks='share'), held by task {holder!r} inside an "
            f"async_atomic block or a query. A task that holds it is waiting for "
            f"this one? Spawn the task inside the holder's block, or await it "
            f"after the block ends."
        )
