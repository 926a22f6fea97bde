"""PEP 249 async cursors: Django's ``CursorWrapper``/``CursorDebugWrapper``, awaitable.

``conn.cursor()`` returns an :class:`AsyncCursorWrapper` without I/O. The
connection is opened (and the driver cursor created) by ``async with`` or by the
first ``execute``. The driver cursor is closed when the ``async with`` block
exits, also on error. Driver errors are re-raised as Django's classes
(``django.db.utils.IntegrityError``, ...) with the driver error as ``__cause__``.

This is the hot path of every query: keep it to attribute reads and one
``await`` per driver call.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from async_db.backends.base.base import BaseAsyncDatabaseWrapper

logger = logging.getLogger("django.db.backends")

Params = Sequence[Any] | dict[str, Any] | None


class AsyncCursorWrapper:
    """An async DB-API cursor bound to one database wrapper."""

    def __init__(self, db: BaseAsyncDatabaseWrapper, name: str | None = None) -> None:
        self.db = db
        #: The driver cursor, created on first use.
        self.cursor: Any = None
        self._name = name
        self._arraysize: int | None = None
        #: Rows fetched ahead by ``async for`` and not yet returned.
        self._ahead: deque[Any] | None = None
        #: Rows per round trip when iterating (psycopg's server cursors' default).
        self.itersize = 100

    def __repr__(self) -> str:
        state = "unopened" if self.cursor is None else "open"
        return f"<{self.__class__.__qualname__} alias={self.db.alias!r} {state}>"

    async def _open(self) -> Any:
        db = self.db
        if db.connection is not None and (
            db.health_check_done or not db.health_check_enabled
        ):
            # Hot path: connected and checked, no I/O needed.
            cursor = db._create_cursor_now(self._name)
        else:
            cursor = await db._open_cursor(self._name)
        if self._arraysize is not None:
            cursor.arraysize = self._arraysize
        self.cursor = cursor
        return cursor

    async def __aenter__(self) -> AsyncCursorWrapper:
        if self.cursor is None:
            db = self.db
            if (
                db.connection is not None
                and self._arraysize is None
                and (db.health_check_done or not db.health_check_enabled)
            ):
                # Hot path, without the _open() coroutine frame.
                self.cursor = db._create_cursor_now(self._name)
            else:
                await self._open()
        return self

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        # Close instead of passing through to avoid backend-specific behaviour
        # (Django #17671). A plain method returning the awaitable: closing an
        # unnamed driver cursor does no I/O and cannot fail, so the hot path
        # needs no coroutine frame of its own here.
        cursor = self.cursor
        if cursor is None:
            return _nothing()
        if self._name is None:
            return cursor.close()  # type: ignore[no-any-return]
        return self._close_quietly(cursor)

    async def _close_quietly(self, cursor: Any) -> None:
        # A named cursor closes on the server. Errors in cleanup code aren't
        # useful: don't let them replace the block's own exception.
        try:
            await cursor.close()
        except BaseException as exc:
            # Failed or cancelled mid-CLOSE: the driver cursor would stay
            # open forever.
            self.db.abandon_cursor(cursor)
            if not isinstance(exc, self.db.Database.Error):
                raise

    async def close(self) -> None:
        cursor = self.cursor
        if cursor is None:
            return
        try:
            await cursor.close()
        except BaseException as exc:
            if self._name is not None:
                self.db.abandon_cursor(cursor)
            if isinstance(exc, self.db.Database.Error):
                raise self.db.translate_error(exc) from exc
            raise

    # ##### Attributes #####

    @property
    def description(self) -> Any:
        return None if self.cursor is None else self.cursor.description

    @property
    def rowcount(self) -> int:
        return -1 if self.cursor is None else int(self.cursor.rowcount)

    @property
    def arraysize(self) -> int:
        if self.cursor is not None:
            return int(self.cursor.arraysize)
        return 1 if self._arraysize is None else self._arraysize

    @arraysize.setter
    def arraysize(self, size: int) -> None:
        self._arraysize = size
        if self.cursor is not None:
            self.cursor.arraysize = size

    # ##### Execution #####

    async def execute(self, sql: Any, params: Params = None) -> AsyncCursorWrapper:
        """Execute ``sql`` with ``%s``/``%(name)s`` parameters; return the cursor."""
        db = self.db
        if db.execute_wrappers:
            await self._execute_with_wrappers(sql, params, False, self._execute)
            return self
        # The hot path, inlined: _execute() without its coroutine frame.
        if self._ahead is not None:
            self._ahead = None
        cursor = self.cursor
        if cursor is None:
            cursor = await self._open()
        if db._owner is not None:
            db.validate_task_sharing()
        if db.needs_rollback:
            db.validate_no_broken_transaction()
        try:
            if params is None:
                await cursor.execute(sql)
            else:
                await cursor.execute(sql, params)
        except db.Database.Error as exc:
            raise db.translate_error(exc) from exc
        return self

    async def executemany(self, sql: Any, param_list: Sequence[Params]) -> None:
        """Execute ``sql`` once per parameter set in ``param_list``."""
        if self.db.execute_wrappers:
            await self._execute_with_wrappers(sql, param_list, True, self._executemany)
        else:
            await self._executemany(sql, param_list)

    async def _execute(self, sql: Any, params: Params, *ignored: Any) -> None:
        self._ahead = None
        cursor = self.cursor
        if cursor is None:
            cursor = await self._open()
        db = self.db
        if db._owner is not None:
            db.validate_task_sharing()
        db.validate_no_broken_transaction()
        try:
            if params is None:
                # Without parameters '%' is not a placeholder, as in Django.
                await cursor.execute(sql)
            else:
                await cursor.execute(sql, params)
        except db.Database.Error as exc:
            raise db.translate_error(exc) from exc

    async def _executemany(
        self, sql: Any, param_list: Sequence[Params], *ignored: Any
    ) -> None:
        cursor = self.cursor
        if cursor is None:
            cursor = await self._open()
        db = self.db
        if db._owner is not None:
            db.validate_task_sharing()
        db.validate_no_broken_transaction()
        try:
            await cursor.executemany(sql, param_list)
        except db.Database.Error as exc:
            raise db.translate_error(exc) from exc

    async def _execute_with_wrappers(
        self,
        sql: Any,
        params: Any,
        many: bool,
        executor: Callable[..., Any],
    ) -> Any:
        # As Django: the first installed wrapper is the outermost. Each level is
        # made a coroutine function so sync and async wrappers nest freely.
        context = {"connection": self.db, "cursor": self}
        for wrapper in reversed(self.db.execute_wrappers):
            executor = functools.partial(_as_async_wrapper(wrapper), executor)
        return await executor(sql, params, many, context)

    # ##### Fetching #####

    async def fetchone(self) -> Any:
        if self._ahead:
            return self._ahead.popleft()
        cursor = self.cursor or self._require_cursor()
        try:
            return await cursor.fetchone()
        except self.db.Database.Error as exc:
            raise self.db.translate_error(exc) from exc

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Fetch up to ``size`` rows (``arraysize`` when omitted)."""
        ahead: list[Any] = []
        if self._ahead:
            size = size or self.arraysize
            ahead = self._take_ahead(size)
            if len(ahead) == size:
                return ahead
            size -= len(ahead)
        cursor = self.cursor or self._require_cursor()
        try:
            rows: list[Any] = await cursor.fetchmany(size or 0)
        except self.db.Database.Error as exc:
            raise self.db.translate_error(exc) from exc
        return ahead + rows if ahead else rows

    async def fetchall(self) -> list[Any]:
        ahead = self._take_ahead(None) if self._ahead else []
        cursor = self.cursor or self._require_cursor()
        try:
            rows: list[Any] = await cursor.fetchall()
        except self.db.Database.Error as exc:
            raise self.db.translate_error(exc) from exc
        return ahead + rows if ahead else rows

    def _take_ahead(self, size: int | None) -> list[Any]:
        ahead = self._ahead
        assert ahead is not None
        if size is None or size >= len(ahead):
            rows = list(ahead)
            ahead.clear()
            return rows
        return [ahead.popleft() for _ in range(size)]

    def __aiter__(self) -> AsyncCursorWrapper:
        return self

    async def __anext__(self) -> Any:
        """The next row; rows are fetched ``itersize`` at a time, so a
        server-side cursor costs one round trip per batch, not per row."""
        ahead = self._ahead
        if not ahead:
            cursor = self.cursor or self._require_cursor()
            try:
                rows = await cursor.fetchmany(self.itersize)
            except self.db.Database.Error as exc:
                raise self.db.translate_error(exc) from exc
            if not rows:
                raise StopAsyncIteration
            ahead = self._ahead = deque(rows)
        return ahead.popleft()

    def _require_cursor(self) -> Any:
        cursor = self.cursor
        if cursor is None:
            from django.db import ProgrammingError

            raise ProgrammingError(
                f"No results to fetch: nothing was executed on this cursor "
                f"(alias '{self.db.alias}')."
            )
        return cursor


class AsyncCursorDebugWrapper(AsyncCursorWrapper):
    """Logs every query to ``db.queries_log`` and the ``django.db.backends``
    logger (sql, params, duration, alias), as Django's ``CursorDebugWrapper``."""

    async def execute(self, sql: Any, params: Params = None) -> AsyncCursorWrapper:
        with self.debug_sql(sql, params, use_last_executed_query=True):
            return await super().execute(sql, params)

    async def executemany(self, sql: Any, param_list: Sequence[Params]) -> None:
        with self.debug_sql(sql, param_list, many=True):
            await super().executemany(sql, param_list)

    @contextmanager
    def debug_sql(
        self,
        sql: Any = None,
        params: Any = None,
        use_last_executed_query: bool = False,
        many: bool = False,
    ) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            duration = time.monotonic() - start
            if use_last_executed_query and self.cursor is not None:
                sql = self.db.last_executed_query(self.cursor, sql, params)
            try:
                times: int | str = len(params) if many else ""
            except TypeError:
                # params could be an iterator.
                times = "?"
            self.db.queries_log.append(
                {
                    "sql": f"{times} times: {sql}" if many else str(sql),
                    "time": f"{duration:.3f}",
                }
            )
            logger.debug(
                "(%.3f) %s; args=%s; alias=%s",
                duration,
                sql,
                params,
                self.db.alias,
                extra={
                    "duration": duration,
                    "sql": sql,
                    "params": params,
                    "alias": self.db.alias,
                },
            )


async def _nothing() -> None:
    return None


def _as_async_wrapper(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """Adapt a sync ``execute_wrapper`` so every level of the chain is awaitable.

    A sync wrapper runs before the query; its ``execute(...)`` call returns an
    awaitable that this adapter awaits, so a sync wrapper can inspect or block
    a query but cannot time it (use ``async def`` for that).
    """
    if inspect.iscoroutinefunction(wrapper):
        return wrapper

    async def adapter(execute: Any, sql: Any, params: Any, many: bool, ctx: Any) -> Any:
        result = wrapper(execute, sql, params, many, ctx)
        if inspect.isawaitable(result):
            result = await result
        return result

    return adapter
