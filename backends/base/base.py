"""The abstract async database wrapper: Django's ``BaseDatabaseWrapper``, awaitable.

Names, state and rules follow ``django.db.backends.base.base.BaseDatabaseWrapper``
so a Django reviewer can read the two side by side. Methods that may do I/O are
coroutines; pure bookkeeping (``get_rollback``, ``set_rollback``, the
``validate_*`` checks, ``execute_wrapper``) stays synchronous.

Who may use a wrapper: the task that owns it (``owner``, set by the handler) for
queries, commits, rollbacks and savepoints; ``close()`` from anywhere. A wrapper
built directly with ``owner=None`` is not bound to a task.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import itertools
import logging
import os
import time
import weakref
import zoneinfo
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from django.conf import global_settings, settings
from django.core.exceptions import ImproperlyConfigured
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)
from django.db.transaction import TransactionManagementError
from django.db.utils import DatabaseErrorWrapper
from django.db.utils import Error as DjangoError

from async_db.backends.base.cursor import AsyncCursorDebugWrapper, AsyncCursorWrapper
from async_db.backends.base.pools import PoolRegistry

if TYPE_CHECKING:
    from types import ModuleType

logger = logging.getLogger("django.db.backends")
#: Django logs failing robust on_commit callbacks here.
hooks_logger = logging.getLogger("django.db.backends.base")

#: Django's order in DatabaseErrorWrapper: most specific first.
_DJANGO_ERRORS: tuple[type[Exception], ...] = (
    DataError,
    OperationalError,
    IntegrityError,
    InternalError,
    ProgrammingError,
    NotSupportedError,
    DatabaseError,
    InterfaceError,
    DjangoError,
)

#: An ``on_commit`` callback: sync or async, no arguments.
OnCommitCallback = Callable[[], Any]
#: ``execute_wrapper`` callables: ``fn(execute, sql, params, many, context)``.
ExecuteWrapper = Callable[..., Any]


class TransactionObserver(Protocol):
    """What a wrapper needs from the handler that created it."""

    def note_transaction(
        self, connection: BaseAsyncDatabaseWrapper, is_open: bool
    ) -> None:
        """``connection`` opened (``is_open``) or ended its transaction."""


def django_setting(name: str) -> Any:
    """Read a Django setting, falling back to Django's defaults when settings
    are not configured (``AsyncConnectionHandler(settings={...})`` without
    ``settings.configure()``)."""
    try:
        return getattr(settings, name)
    except ImproperlyConfigured:
        return getattr(global_settings, name)


@contextmanager
def debug_transaction(connection: BaseAsyncDatabaseWrapper, sql: str) -> Iterator[None]:
    """Log a transaction statement (BEGIN/COMMIT/ROLLBACK) as Django does."""
    start = time.monotonic()
    try:
        yield
    finally:
        if connection.queries_logged:
            duration = time.monotonic() - start
            connection.queries_log.append({"sql": sql, "time": f"{duration:.3f}"})
            logger.debug(
                "(%.3f) %s; args=%s; alias=%s",
                duration,
                sql,
                None,
                connection.alias,
                extra={"duration": duration, "sql": sql, "alias": connection.alias},
            )


class BaseAsyncDatabaseWrapper:
    """An async database connection for one alias, used by one task."""

    vendor: ClassVar[str] = "unknown"
    display_name: ClassVar[str] = "unknown"
    #: The PEP 249 driver module; its exception classes are translated.
    Database: ClassVar[ModuleType]
    queries_limit: ClassVar[int] = 9000

    def __init__(
        self,
        settings_dict: dict[str, Any],
        alias: str = DEFAULT_DB_ALIAS,
        *,
        owner: asyncio.Task[Any] | None = None,
        handler: TransactionObserver | None = None,
        pools: PoolRegistry | None = None,
    ) -> None:
        self.connection: Any = None
        self.settings_dict = settings_dict
        self.alias = alias
        # The task allowed to run queries on this wrapper (None: any task),
        # weakly: a wrapper must not keep its task alive (a task collected
        # while it holds a connection is released by the handler).
        self._owner = None if owner is None else weakref.ref(owner)
        #: The handler that created this wrapper, if any. The wrapper tells it
        #: when a transaction opens or closes (``note_transaction``), so the
        #: handler can apply its spawned-task rule; the backends never import
        #: the handler's storage.
        self.handler = handler
        #: Where this alias's connection pool lives (shared per handler).
        self.pools = pools if pools is not None else PoolRegistry()
        # Stack of "this `async with conn` block opened the connection" flags.
        self._opened_by_block: list[bool] = []
        self.queries_log: deque[dict[str, str]] = deque(maxlen=self.queries_limit)
        self.force_debug_cursor = False

        # Transaction state, exactly Django's names (see Atomic in transaction.py).
        self.autocommit = False
        self.in_atomic_block = False
        self.savepoint_state = 0
        self.savepoint_ids: list[str | None] = []
        self.atomic_blocks: list[Any] = []
        self.commit_on_exit = True
        self.needs_rollback = False
        self.rollback_exc: BaseException | None = None

        # Connection termination state.
        self.close_at: float | None = None
        self.closed_in_transaction = False
        self.errors_occurred = False
        self.health_check_enabled = False
        self.health_check_done = False

        # (savepoint ids, callback, robust) registered by on_commit().
        self.run_on_commit: list[tuple[set[str | None], OnCommitCallback, bool]] = []
        self.run_commit_hooks_on_set_autocommit_on = False
        # The queue of commit hooks being run, while they run (see on_commit).
        self._hook_queue: (
            list[tuple[set[str | None], OnCommitCallback, bool]] | None
        ) = None
        self.execute_wrappers: list[ExecuteWrapper] = []
        #: Test-only (``isolated(spawned_tasks="share")``): what makes the tasks
        #: sharing this wrapper take turns; atomic blocks hold a turn.
        self.share: Any = None

        # Serialises connect() so concurrent ensure_connection() opens one
        # connection; created lazily because a lock binds to a running loop.
        self._connect_lock: asyncio.Lock | None = None
        self.wrap_database_errors = DatabaseErrorWrapper(self)

    def __repr__(self) -> str:
        # Never the settings: they hold the password.
        return (
            f"<{self.__class__.__qualname__} "
            f"vendor={self.vendor!r} alias={self.alias!r}>"
        )

    def translate_error(self, exc: Exception) -> Exception:
        """The Django exception for driver error ``exc`` (``DatabaseErrorWrapper``'s
        mapping, as a function so hot paths can use a zero-cost ``try``)."""
        for dj_exc_type in _DJANGO_ERRORS:
            if isinstance(exc, getattr(self.Database, dj_exc_type.__name__)):
                # Only errors that may make the connection unusable count.
                if dj_exc_type not in (DataError, IntegrityError):
                    self.errors_occurred = True
                return dj_exc_type(*exc.args)
        return exc

    # ##### Settings-derived properties #####

    @cached_property
    def timezone(self) -> datetime.tzinfo | None:
        """The tzinfo datetimes are returned in; ``None`` when ``USE_TZ=False``."""
        if not django_setting("USE_TZ"):
            return None
        if self.settings_dict["TIME_ZONE"] is None:
            return datetime.UTC
        return zoneinfo.ZoneInfo(self.settings_dict["TIME_ZONE"])

    @cached_property
    def timezone_name(self) -> str:
        """Name of the time zone of the database connection."""
        if not django_setting("USE_TZ"):
            return str(django_setting("TIME_ZONE"))
        if self.settings_dict["TIME_ZONE"] is None:
            return "UTC"
        return str(self.settings_dict["TIME_ZONE"])

    @property
    def queries_logged(self) -> bool:
        return self.force_debug_cursor or bool(django_setting("DEBUG"))

    def _cursor_class(self) -> type[AsyncCursorWrapper]:
        if self.force_debug_cursor or django_setting("DEBUG"):
            return AsyncCursorDebugWrapper
        return AsyncCursorWrapper

    @property
    def queries(self) -> list[dict[str, str]]:
        if len(self.queries_log) == self.queries_log.maxlen:
            import warnings

            warnings.warn(
                f"Limit for query logging exceeded, only the last "
                f"{self.queries_log.maxlen} queries will be returned.",
                stacklevel=2,
            )
        return list(self.queries_log)

    # ##### Backend-specific methods #####

    def get_connection_params(self) -> dict[str, Any]:
        """Return the keyword arguments for ``get_new_connection``."""
        raise NotImplementedError("subclasses must define get_connection_params()")

    async def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        """Open a driver connection."""
        raise NotImplementedError("subclasses must define get_new_connection()")

    async def init_connection_state(self) -> None:
        """Initialise the session (time zone, role, ...)."""

    def create_cursor(self, name: str | None = None) -> Any:
        """Create a driver cursor. Assume that a connection is established."""
        raise NotImplementedError("subclasses must define create_cursor()")

    async def _set_autocommit(self, autocommit: bool) -> None:
        raise NotImplementedError("subclasses must define _set_autocommit()")

    async def is_usable(self) -> bool:
        """Whether the connection answers a trivial query. Never raises."""
        raise NotImplementedError("subclasses must define is_usable()")

    def is_idle(self) -> bool:
        """Whether the open connection is outside any transaction and not in
        the middle of a query (no I/O)."""
        raise NotImplementedError("subclasses must define is_idle()")

    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str | None:
        """The SQL as sent, for query logging."""
        return sql

    def savepoint_create_sql(self, sid: str) -> str:
        return f'SAVEPOINT "{sid}"'

    def savepoint_commit_sql(self, sid: str) -> str:
        return f'RELEASE SAVEPOINT "{sid}"'

    def savepoint_rollback_sql(self, sid: str) -> str:
        return f'ROLLBACK TO SAVEPOINT "{sid}"'

    # ##### Connecting #####

    def check_settings(self) -> None:
        if self.settings_dict["TIME_ZONE"] is not None and not django_setting("USE_TZ"):
            raise ImproperlyConfigured(
                f"Connection '{self.alias}' cannot set TIME_ZONE because USE_TZ is "
                f"False."
            )

    async def connect(self) -> None:
        """Connect to the database. Assume that the connection is closed."""
        self.check_settings()
        # In case the previous connection was closed while in an atomic block.
        self.in_atomic_block = False
        self.savepoint_ids = []
        self.atomic_blocks = []
        self.needs_rollback = False
        self.health_check_enabled = bool(self.settings_dict["CONN_HEALTH_CHECKS"])
        max_age = self.settings_dict["CONN_MAX_AGE"]
        self.close_at = None if max_age is None else time.monotonic() + max_age
        self.closed_in_transaction = False
        self.errors_occurred = False
        # New connections are healthy.
        self.health_check_done = True
        conn_params = self.new_connection_params()
        # Assign before the next await: a cancellation from here on finds the
        # connection on the wrapper and the except clause below closes it.
        self.connection = await self.get_new_connection(conn_params)
        try:
            await self.set_autocommit(self.settings_dict["AUTOCOMMIT"])
            await self.init_connection_state()
        # Cancellation included: a half-initialised session is never kept.
        except (Exception, asyncio.CancelledError):
            await self._discard_connection()
            raise
        self.run_on_commit = []

    async def ensure_connection(self) -> None:
        """Guarantee that a connection to the database is established."""
        self.validate_task_sharing()
        if self.connection is not None:
            return
        if self.in_atomic_block and self.closed_in_transaction:
            raise ProgrammingError("Cannot open a new connection in an atomic block.")
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if self.connection is None:
                with self.wrap_database_errors:
                    await self.connect()

    async def _discard_connection(self) -> None:
        """Drop a connection in an unknown state: never reused, never pooled."""
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                await self._discard(connection)
            except Exception as exc:
                logger.warning("error ignored closing %r: %s", self, exc)

    async def _discard(self, connection: Any) -> None:
        await connection.close()

    # ##### Cursors #####

    def cursor(self) -> AsyncCursorWrapper:
        """Return a cursor; the connection opens on ``async with`` or first use.

        No ``await``: ``async with conn.cursor() as cursor:``.
        """
        return self._make_cursor(None)

    def chunked_cursor(self) -> AsyncCursorWrapper:
        """A cursor that streams rows from the server (a named cursor), or a
        plain one with ``DISABLE_SERVER_SIDE_CURSORS`` (as Django, for
        transaction-mode poolers)."""
        if self.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
            return self._make_cursor(None)
        return self._make_cursor(_next_cursor_name())

    def abandon_cursor(self, cursor: Any) -> None:
        """Mark a named driver ``cursor`` closed without I/O, after its
        ``CLOSE`` was interrupted (cancelled, or failed on a broken
        connection).

        The server side is not lost: a cursor inside a transaction ends with
        it; a holdable one ends with its connection, and a pooled checkout's
        release runs ``CLOSE ALL``. Without this the driver object would warn
        (``ResourceWarning``) when collected, for a cursor nothing can close
        any more. Backends whose cursors need nothing here keep this no-op.
        """

    def _make_cursor(self, name: str | None) -> AsyncCursorWrapper:
        return self._cursor_class()(self, name)

    async def _open_cursor(self, name: str | None) -> Any:
        """Called by the cursor wrapper on first use: connect, then create."""
        if self.health_check_enabled and not self.health_check_done:
            await self.close_if_health_check_failed()
        if self.connection is None:
            await self.ensure_connection()
        return self._create_cursor_now(name)

    def _create_cursor_now(self, name: str | None) -> Any:
        # No owner check here: creating a driver cursor does no I/O, and every
        # execute checks (asyncio.current_task() is pure Python on 3.11).
        try:
            return self.create_cursor(name)
        except self.Database.Error as exc:
            raise self.translate_error(exc) from exc

    # ##### Transactions #####

    async def _commit(self) -> None:
        if self.connection is not None:
            with debug_transaction(self, "COMMIT"), self.wrap_database_errors:
                await self.connection.commit()

    async def _rollback(self) -> None:
        if self.connection is not None:
            with debug_transaction(self, "ROLLBACK"), self.wrap_database_errors:
                await self.connection.rollback()

    async def _close(self) -> None:
        if self.connection is not None:
            with self.wrap_database_errors:
                await self.connection.close()

    async def commit(self) -> None:
        """Commit a transaction."""
        self.validate_task_sharing()
        self.validate_no_atomic_block()
        await self._commit()
        # A successful commit means that the database connection works.
        self.errors_occurred = False
        self.run_commit_hooks_on_set_autocommit_on = True

    async def rollback(self) -> None:
        """Roll back a transaction."""
        self.validate_task_sharing()
        self.validate_no_atomic_block()
        await self._rollback()
        # A successful rollback means that the database connection works.
        self.errors_occurred = False
        self.needs_rollback = False
        self.run_on_commit = []

    async def close(self) -> None:
        """Close the connection. Allowed from any task (cleanup must always work)."""
        self.run_on_commit = []
        # Don't call validate_no_atomic_block() to avoid making it difficult
        # to get rid of a connection in an invalid state. The next connect()
        # will reset the transaction state anyway.
        if self.closed_in_transaction or self.connection is None:
            return
        try:
            await self._close()
        finally:
            if self.in_atomic_block:
                self.closed_in_transaction = True
                self.needs_rollback = True
            else:
                self.connection = None
                self._note_transaction(False)

    def _note_transaction(self, is_open: bool) -> None:
        """Report to the handler whether this wrapper has a transaction open."""
        handler = self.handler
        if handler is not None:
            handler.note_transaction(self, is_open)

    def new_connection_params(self) -> dict[str, Any]:
        """The parameters ``connect()`` passes to ``get_new_connection``."""
        return self.get_connection_params()

    async def release(self) -> None:
        """Give the connection back at the end of its task or scope (close it,
        or return it to its pool). Called from a release task."""
        await self.close()

    def close_now(self) -> bool:
        """Release the connection without awaiting, if the backend can (an
        unpooled connection is just closed). Return whether nothing is left
        to release. Used at task end, when there may be no loop iteration
        left to await in."""
        return self.connection is None

    async def __aenter__(self) -> BaseAsyncDatabaseWrapper:
        """``async with async_connections[alias] as conn:``: an explicit
        lifetime. The connection is closed (returned) on exit only if this
        block opened it."""
        self._opened_by_block.append(self.connection is None)
        try:
            await self.ensure_connection()
        except BaseException:
            self._opened_by_block.pop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._opened_by_block.pop() and not self.in_atomic_block:
            await self.close()

    async def get_autocommit(self) -> bool:
        """Get the autocommit state (connects if needed)."""
        await self.ensure_connection()  # checks the owner
        return self.autocommit

    async def set_autocommit(self, autocommit: bool) -> None:
        """Enable or disable autocommit; turning it off starts a transaction."""
        self.validate_no_atomic_block()
        self.validate_task_sharing()
        await self.close_if_health_check_failed()
        await self.ensure_connection()
        if autocommit:
            await self._set_autocommit(autocommit)
        else:
            with debug_transaction(self, "BEGIN"):
                await self._set_autocommit(autocommit)
        self.autocommit = autocommit
        # Spawn-time marker: tasks spawned from now on see the transaction.
        self._note_transaction(not autocommit)
        if autocommit and self.run_commit_hooks_on_set_autocommit_on:
            await self.run_and_clear_commit_hooks()
            self.run_commit_hooks_on_set_autocommit_on = False

    def get_rollback(self) -> bool:
        """Get the "needs rollback" flag -- for *advanced use* only."""
        self.validate_task_sharing()
        if not self.in_atomic_block:
            raise TransactionManagementError(
                "The rollback flag doesn't work outside of an 'atomic' block."
            )
        return self.needs_rollback

    def set_rollback(self, rollback: bool) -> None:
        """Set or unset the "needs rollback" flag -- for *advanced use* only."""
        self.validate_task_sharing()
        if not self.in_atomic_block:
            raise TransactionManagementError(
                "The rollback flag doesn't work outside of an 'atomic' block."
            )
        self.needs_rollback = rollback

    def validate_no_atomic_block(self) -> None:
        """Raise an error if an atomic block is active."""
        if self.in_atomic_block:
            raise TransactionManagementError(
                "This is forbidden when an 'atomic' block is active."
            )

    def validate_no_broken_transaction(self) -> None:
        if self.needs_rollback:
            raise TransactionManagementError(
                "An error occurred in the current transaction. You can't "
                "execute queries until the end of the 'atomic' block."
            ) from self.rollback_exc

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open: an atomic block, or autocommit off."""
        return self.connection is not None and (
            self.in_atomic_block or not self.autocommit
        )

    # ##### Savepoints #####

    def _savepoint_allowed(self) -> bool:
        # Savepoints cannot be created outside a transaction.
        return self.connection is not None and not self.autocommit

    async def _execute_transaction_sql(self, sql: str) -> None:
        async with self.cursor() as cursor:
            await cursor.execute(sql)

    async def savepoint(self) -> str | None:
        """Create a savepoint; return its id, or None outside a transaction."""
        self.validate_task_sharing()
        if not self._savepoint_allowed():
            return None
        self.savepoint_state += 1
        sid = f"s_x{self.savepoint_state}"
        await self._execute_transaction_sql(self.savepoint_create_sql(sid))
        return sid

    async def savepoint_rollback(self, sid: str) -> None:
        """Roll back to a savepoint and drop the callbacks registered since."""
        self.validate_task_sharing()
        if not self._savepoint_allowed():
            return
        await self._execute_transaction_sql(self.savepoint_rollback_sql(sid))
        self.run_on_commit = [
            (sids, func, robust)
            for (sids, func, robust) in self.run_on_commit
            if sid not in sids
        ]

    async def savepoint_commit(self, sid: str) -> None:
        """Release a savepoint."""
        self.validate_task_sharing()
        if not self._savepoint_allowed():
            return
        await self._execute_transaction_sql(self.savepoint_commit_sql(sid))

    def clean_savepoints(self) -> None:
        """Reset the counter used to generate unique savepoint ids."""
        self.savepoint_state = 0

    # ##### Health and lifetime #####

    async def close_if_health_check_failed(self) -> None:
        """Close the connection if it fails a once-per-use health check."""
        if (
            self.connection is None
            or not self.health_check_enabled
            or self.health_check_done
        ):
            return
        if not await self.is_usable():
            await self.close()
        self.health_check_done = True

    async def close_if_unusable_or_obsolete(self) -> None:
        """Close the connection if errors made it unusable or it is too old."""
        self.validate_task_sharing()
        if self.connection is None:
            return
        self.health_check_done = False
        # If the application didn't restore the original autocommit setting,
        # don't take chances, drop the connection.
        if self.autocommit != self.settings_dict["AUTOCOMMIT"]:
            await self.close()
            return
        # If an exception other than DataError or IntegrityError occurred
        # since the last commit / rollback, check if the connection works.
        if self.errors_occurred:
            if await self.is_usable():
                self.errors_occurred = False
                self.health_check_done = True
            else:
                await self.close()
                return
        if self.close_at is not None and time.monotonic() >= self.close_at:
            await self.close()

    # ##### Task ownership #####

    @property
    def owner(self) -> asyncio.Task[Any] | None:
        """The task this wrapper belongs to (None: unbound, or collected)."""
        ref = self._owner
        return None if ref is None else ref()

    @owner.setter
    def owner(self, task: asyncio.Task[Any] | None) -> None:
        self._owner = None if task is None else weakref.ref(task)

    def validate_task_sharing(self) -> None:
        """Raise ``DatabaseError`` when used from a task other than the owner."""
        ref = self._owner
        if ref is None:
            return
        owner = ref()
        if asyncio.current_task() is not owner:
            name = "a task that no longer exists" if owner is None else owner.get_name()
            raise DatabaseError(
                f"The connection '{self.alias}' belongs to another task "
                f"({name}) and cannot be used from "
                f"{_describe_current_task()}. Each task gets its own connection "
                f"from async_connections['{self.alias}']."
            )

    # ##### on_commit #####

    async def on_commit(self, func: OnCommitCallback, robust: bool = False) -> None:
        """Run ``func`` after the current transaction commits (now if none)."""
        self.validate_task_sharing()
        if not callable(func):
            raise TypeError("on_commit()'s callback must be a callable.")
        if self.in_atomic_block:
            # Transaction in progress; save for execution on commit.
            self.run_on_commit.append((set(self.savepoint_ids), func, robust))
        elif not await self.get_autocommit():
            raise TransactionManagementError(
                "on_commit() cannot be used in manual transaction management"
            )
        elif self._hook_queue is not None:
            self._hook_queue.append((set(), func, robust))
        else:
            await _run_commit_hook(func, robust)

    async def run_and_clear_commit_hooks(self) -> None:
        self.validate_no_atomic_block()
        current_run_on_commit = self.run_on_commit
        self.run_on_commit = []
        # A hook registered (in autocommit) by a running hook joins this queue,
        # so it runs after the hook that registered it.
        outer_queue, self._hook_queue = self._hook_queue, current_run_on_commit
        try:
            while current_run_on_commit:
                _, func, robust = current_run_on_commit.pop(0)
                await _run_commit_hook(func, robust, "during transaction ")
        finally:
            self._hook_queue = outer_queue

    # ##### Execute wrappers #####

    @contextmanager
    def execute_wrapper(self, wrapper: ExecuteWrapper) -> Iterator[None]:
        """Install ``wrapper(execute, sql, params, many, context)`` around every
        ``execute``/``executemany`` in this block. ``wrapper`` may be sync or
        async; the outermost installed runs first."""
        self.execute_wrappers.append(wrapper)
        try:
            yield
        finally:
            self.execute_wrappers.pop()


#: Server-side cursor names: unique in the process, like Django's (a pooled
#: connection serves many wrappers, so a per-wrapper counter would repeat).
_cursor_ids = itertools.count(1)


def _next_cursor_name() -> str:
    return f"_async_db_curs_{os.getpid()}_{next(_cursor_ids)}"


async def _run_commit_hook(
    func: OnCommitCallback, robust: bool, when: str = ""
) -> None:
    if not robust:
        await _call_maybe_async(func)
        return
    try:
        await _call_maybe_async(func)
    except Exception as e:
        # Django's messages: "... in on_commit() (%s)." at once in autocommit,
        # "... in on_commit() during transaction (%s)." after a commit.
        hooks_logger.error(
            f"Error calling {getattr(func, '__qualname__', func)} in on_commit() "
            f"{when}(%s).",
            e,
            exc_info=True,
        )


async def _call_maybe_async(func: Callable[[], Any]) -> Any:
    result = func()
    if inspect.isawaitable(result):
        result = await result
    return result


def _describe_current_task() -> str:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return "outside any event loop"
    return "outside any task" if task is None else f"task {task.get_name()}"
