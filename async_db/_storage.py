"""Who sees which connection: per-task storage on one module-level ContextVar.

The rules (DESIGN.md, "Handler and scoping"):

1. **Same task, same wrapper.** ``async_connections[alias]`` returns the same
   wrapper object for every access in one task, across awaits.
2. **Each task has its own.** A task created with ``create_task``, ``gather`` or
   ``TaskGroup`` starts with a *copy* of its parent's context, so it sees the
   parent's :class:`Scope`; but a scope belongs to the task that created it
   (``scope.task``), and any other task that reads it creates its own scope
   instead. Nothing a child stores is visible to its parent or siblings: the
   child's ``ContextVar.set`` only changes the child's context.
3. **No silent escape from a transaction.** When a wrapper opens a transaction
   (autocommit off, which ``async_atomic`` does too) the owning task records
   ``(handler, alias) -> task`` in a second ContextVar, copy-on-write. A child
   copies that record at spawn time; on its first use of the alias it finds a
   transaction opened by another task and raises ``TransactionManagementError``.
   The decision depends only on the context at spawn time, never on timing.
   ``new_connections()`` starts with an empty record: inside it, connections
   are explicitly independent.
4. **Released when the task ends.** The task's base scope registers a done
   callback on the task; when the task finishes (result, error, cancellation)
   its connections are closed or returned to their pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from django.db import ProgrammingError

if TYPE_CHECKING:
    from async_db.backends.base.base import BaseAsyncDatabaseWrapper

logger = logging.getLogger("async_db")

#: (handler, alias) -> wrapper, for the current task and scope.
_scope_var: ContextVar[Scope | None] = ContextVar("async_db_scope", default=None)
#: (handler, alias) -> task that has a transaction open on it (spawn-time marker).
_open_transactions: ContextVar[Mapping[tuple[object, str], asyncio.Task[Any]]] = (
    ContextVar("async_db_open_transactions", default=MappingProxyType({}))
)
#: Release tasks in flight, referenced so they are never garbage collected.
_releasing: set[asyncio.Task[None]] = set()


class Scope:
    """The connections one task uses in one scope (its base scope, or one
    ``new_connections()`` block). Only ``task`` ever mutates it."""

    __slots__ = ("connections", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.connections: dict[tuple[object, str], BaseAsyncDatabaseWrapper] = {}

    def pop_all(self) -> list[BaseAsyncDatabaseWrapper]:
        """Forget every connection (before releasing them, so a cancelled
        release never leaves a wrapper reachable from storage)."""
        connections = list(self.connections.values())
        self.connections.clear()
        return connections


def current_task(what: str) -> asyncio.Task[Any]:
    """The running task, or a clear error naming ``what`` was attempted."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is None:
        raise ProgrammingError(
            f"{what} needs a running asyncio task: there is no running event "
            f"loop here. Sync code uses django.db.connections."
        )
    return task


def task_scope(task: asyncio.Task[Any]) -> Scope:
    """The current task's scope, creating its base scope on first use."""
    scope = _scope_var.get()
    if scope is None or scope.task is not task:
        scope = Scope(task)
        _scope_var.set(scope)
        task.add_done_callback(lambda _task: release_at_task_end(scope))
    return scope


def existing_scope() -> Scope | None:
    """The current task's scope if it has one (no creation: cleanup code)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    scope = _scope_var.get()
    if scope is None or scope.task is not task:
        return None
    return scope


def open_transactions() -> Mapping[tuple[object, str], asyncio.Task[Any]]:
    """Every (handler, alias) with a transaction open, as seen by this context
    (a worker thread of ``sync_to_async`` sees its caller's)."""
    return _open_transactions.get()


def transaction_owner(key: tuple[object, str]) -> asyncio.Task[Any] | None:
    """The task that had a transaction open on ``key`` when this context was
    copied (or set), if any."""
    return _open_transactions.get().get(key)


def note_transaction(wrapper: BaseAsyncDatabaseWrapper, is_open: bool) -> None:
    """Record in the current context whether ``wrapper``'s task has a
    transaction open. Called by the wrapper when autocommit changes."""
    owner = wrapper.owner
    if owner is None:
        return
    key = (wrapper.handler, wrapper.alias)
    marks = _open_transactions.get()
    if is_open:
        if marks.get(key) is not owner:
            _open_transactions.set(MappingProxyType({**marks, key: owner}))
    elif marks.get(key) is owner:
        _open_transactions.set(
            MappingProxyType({k: v for k, v in marks.items() if k != key})
        )


class enter_new_scope:
    """Switch the current task to a fresh, empty scope until :meth:`exit`."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.scope = Scope(task)
        self._scope_token = _scope_var.set(self.scope)
        self._tx_token = _open_transactions.set(MappingProxyType({}))

    def exit(self) -> list[BaseAsyncDatabaseWrapper]:
        """Restore the previous scope; return this scope's connections."""
        _scope_var.reset(self._scope_token)
        _open_transactions.reset(self._tx_token)
        return self.scope.pop_all()


def release_at_task_end(scope: Scope) -> None:
    """Done callback of a task's base scope: release what the task left open.

    Unpooled connections are closed right here, synchronously, so nothing is
    left for a loop that is about to stop (``asyncio.run`` cancels pending
    tasks). Pooled ones need I/O to go back to their pool: a release task does
    it, referenced in ``_releasing`` until it is done.
    """
    pending = [conn for conn in scope.pop_all() if not conn.close_now()]
    if not pending:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # pragma: no cover - done callbacks run on the loop
        return
    release = loop.create_task(release_connections(pending))
    _releasing.add(release)
    release.add_done_callback(_releasing.discard)


async def release_connections(connections: list[BaseAsyncDatabaseWrapper]) -> None:
    """Close (return) every connection; one failure doesn't stop the others."""
    for conn in connections:
        try:
            await conn.release()
        except Exception as exc:
            logger.warning("error ignored releasing %r: %s", conn, exc)


async def wait_released() -> None:
    """Wait until every release started at task end has finished (tests,
    shutdown code that wants a quiet pool before closing it)."""
    while _releasing:
        await asyncio.gather(*list(_releasing), return_exceptions=True)


def iter_scope(
    scope: Scope | None, handler: object
) -> Iterator[BaseAsyncDatabaseWrapper]:
    if scope is None:
        return
    for (owner, _alias), conn in list(scope.connections.items()):
        if owner is handler:
            yield conn
