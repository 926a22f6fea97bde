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
   its connections are closed or returned to their pool. A pending task that
   is garbage-collected (dropped without being awaited or cancelled: asyncio
   keeps only weak references to tasks) never finishes; a finalizer on the
   task releases its connections then (rolled back first) and warns with a
   ``ResourceWarning`` naming the task and the aliases. Nothing here keeps a
   task alive: scopes, wrappers and transaction marks refer to it weakly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import warnings
import weakref
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
#: (handler, alias) -> task that has a transaction open on it (spawn-time
#: marker), held weakly.
_open_transactions: ContextVar[
    Mapping[tuple[object, str], weakref.ref[asyncio.Task[Any]]]
] = ContextVar("async_db_open_transactions", default=MappingProxyType({}))
#: Release tasks in flight, referenced so they are never garbage collected.
_releasing: set[asyncio.Task[None]] = set()


class Scope:
    """The connections one task uses in one scope (its base scope, or one
    ``new_connections()`` block). Only ``task`` ever mutates it."""

    __slots__ = ("_task", "connections", "finalizer", "loop")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self._task = weakref.ref(task)
        self.loop = task.get_loop()
        self.connections: dict[tuple[object, str], BaseAsyncDatabaseWrapper] = {}
        #: Releases the connections if the task is collected unfinished.
        self.finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def task(self) -> asyncio.Task[Any] | None:
        return self._task()

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
        scope.finalizer = weakref.finalize(
            task, release_collected_task, scope, task.get_name()
        )
        scope.finalizer.atexit = False
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


def open_transactions() -> dict[tuple[object, str], asyncio.Task[Any]]:
    """Every (handler, alias) with a transaction open, as seen by this context
    (a worker thread of ``sync_to_async`` sees its caller's)."""
    marks = {key: ref() for key, ref in _open_transactions.get().items()}
    return {key: task for key, task in marks.items() if task is not None}


def transaction_owner(key: tuple[object, str]) -> asyncio.Task[Any] | None:
    """The task that had a transaction open on ``key`` when this context was
    copied (or set), if any."""
    ref = _open_transactions.get().get(key)
    return None if ref is None else ref()


def note_transaction(wrapper: BaseAsyncDatabaseWrapper, is_open: bool) -> None:
    """Record in the current context whether ``wrapper``'s task has a
    transaction open. Called by the wrapper when autocommit changes."""
    owner = wrapper.owner
    if owner is None:
        return
    key = (wrapper.handler, wrapper.alias)
    marks = _open_transactions.get()
    mark = marks.get(key)
    marked = None if mark is None else mark()
    if is_open:
        if marked is not owner:
            _open_transactions.set(MappingProxyType({**marks, key: weakref.ref(owner)}))
    elif marked is owner:
        _open_transactions.set(
            MappingProxyType({k: v for k, v in marks.items() if k != key})
        )


class enter_new_scope:
    """Switch the current task to a fresh, empty scope until :meth:`exit`."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        from async_db._share import leave_shares

        self.scope = Scope(task)
        self._scope_token = _scope_var.set(self.scope)
        self._tx_token = _open_transactions.set(MappingProxyType({}))
        self._share_token = leave_shares()

    def exit(self) -> list[BaseAsyncDatabaseWrapper]:
        """Restore the previous scope; return this scope's connections."""
        from async_db._share import _shares

        _scope_var.reset(self._scope_token)
        _open_transactions.reset(self._tx_token)
        _shares.reset(self._share_token)
        return self.scope.pop_all()


def release_at_task_end(scope: Scope) -> None:
    """Done callback of a task's base scope: release what the task left open.

    Unpooled connections are closed right here, synchronously, so nothing is
    left for a loop that is about to stop (``asyncio.run`` cancels pending
    tasks). Pooled ones need I/O to go back to their pool: a release task does
    it (see :func:`start_release`).
    """
    if scope.finalizer is not None:
        scope.finalizer.detach()
    pending = [conn for conn in scope.pop_all() if not conn.close_now()]
    if pending:
        start_release(scope.loop, pending)


def release_collected_task(scope: Scope, name: str) -> None:
    """Finalizer of a task collected before it finished: its done callbacks
    never run, so release its connections here (any thread, no await):
    unpooled ones are closed (the server rolls back), pooled ones are rolled
    back and returned by a release task on their loop. Then warn."""
    connections = scope.pop_all()
    if not connections:
        return
    pending = [conn for conn in connections if not conn.close_now()]
    if pending and not scope.loop.is_closed():
        scope.loop.call_soon_threadsafe(start_release, scope.loop, pending)
    aliases = ", ".join(sorted({f"'{conn.alias}'" for conn in connections}))
    warnings.warn(
        f"Task {name!r} was garbage-collected before it finished, while it held "
        f"connections to database {aliases}; they were rolled back and "
        f"released. Keep a reference to every task you create, and await or "
        f"cancel it.",
        ResourceWarning,
        stacklevel=1,
    )


def start_release(
    loop: asyncio.AbstractEventLoop, connections: list[BaseAsyncDatabaseWrapper]
) -> asyncio.Task[None]:
    """Release ``connections`` in a task of ``loop``, referenced until done.

    The release finishes even if that task is cancelled: ``asyncio.run``
    cancels every task at the end, ours too, sometimes before it has started.
    What it had not released yet then goes to a fresh task, which the loop
    still runs before its pools close (the pools wait for releases).
    """
    release = loop.create_task(release_connections(connections))
    _releasing.add(release)
    release.add_done_callback(functools.partial(_release_done, connections))
    return release


def _release_done(
    connections: list[BaseAsyncDatabaseWrapper], release: asyncio.Task[None]
) -> None:
    _releasing.discard(release)
    loop = release.get_loop()
    if release.cancelled() and connections and not loop.is_closed():
        start_release(loop, connections)


async def release_connections(connections: list[BaseAsyncDatabaseWrapper]) -> None:
    """Close (return) every connection; one failure doesn't stop the others.
    Each is taken off ``connections`` before its release starts."""
    while connections:
        conn = connections.pop(0)
        try:
            await conn.release()
        except Exception as exc:
            logger.warning("error ignored releasing %r: %s", conn, exc)


async def wait_released() -> None:
    """Wait until every release started in this loop has finished (tests,
    shutdown code that wants a quiet pool before closing it)."""
    loop = asyncio.get_running_loop()
    while True:
        mine = [task for task in list(_releasing) if task.get_loop() is loop]
        if not mine:
            return
        await asyncio.gather(*mine, return_exceptions=True)


def iter_scope(
    scope: Scope | None, handler: object
) -> Iterator[BaseAsyncDatabaseWrapper]:
    if scope is None:
        return
    for (owner, _alias), conn in list(scope.connections.items()):
        if owner is handler:
            yield conn
