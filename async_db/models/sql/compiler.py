"""Async twins of the execution steps of ``django.db.models.sql.compiler``.

The compile connection's ``ops.compiler()`` builds these classes (see
``compile_connection``), so every compiler of a native call, nested ones
included, is one of them. Each is Django's own class with:

- ``aexecute_sql()``: the async twin of ``execute_sql()``: Django's
  ``as_sql()``, then the task's async cursor;
- a sync ``execute_sql()`` that never runs a query: it raises
  :class:`Deferred` carrying the compiler, so Django's sync code that ends in
  ``execute_sql()`` (``Query.get_aggregation``, ``has_results``) can be run up
  to that point, and the caller executes the compiler asynchronously;
- for compilation that itself runs a query (``SQLUpdateCompiler``'s pre-select
  of the rows a multi-table inheritance update touches), a replay: compile up
  to the query, run it natively, compile again from the untouched query with
  ``execute_sql()`` returning the rows already fetched.

SQL, converters (``get_converters``/``apply_converters``) and
``results_iter(results=...)`` are Django's, unchanged.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from django.core.exceptions import EmptyResultSet
from django.db import NotSupportedError
from django.db.models.sql import compiler as django_compiler
from django.db.models.sql.constants import (
    CURSOR,
    GET_ITERATOR_CHUNK_SIZE,
    MULTI,
    NO_RESULTS,
    ROW_COUNT,
    SINGLE,
)

from async_db.models.sql.compile_connection import _current, acompile

if TYPE_CHECKING:
    from async_db.backends.base.base import BaseAsyncDatabaseWrapper

__all__ = [
    "Deferred",
    "SQLAggregateCompiler",
    "SQLCompiler",
    "SQLDeleteCompiler",
    "SQLInsertCompiler",
    "SQLUpdateCompiler",
    "native_compiler",
]


class Deferred(BaseException):
    """Django's sync code reached ``compiler.execute_sql(*args, **kwargs)``:
    the query is ready to run; the native caller executes it. A
    ``BaseException`` so that no ``except Exception`` in Django swallows it."""

    def __init__(self, compiler: SQLCompiler, args: tuple[Any, ...]) -> None:
        super().__init__()
        self.compiler = compiler
        self.args = args


#: Results of the queries a compilation ran, in order, returned by
#: ``execute_sql()`` while it compiles again (see ``SQLUpdateCompiler``).
_replayed: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "async_db_replayed", default=None
)

#: Queries one compilation may run before it is taken for a loop: Django's
#: update pre-select is one.
_MAX_REPLAYS = 8


async def native_compiler(
    query: Any, conn: BaseAsyncDatabaseWrapper, elide_empty: bool = True
) -> Any:
    """``query.get_compiler(alias)``, built against the compile connection."""
    return await acompile(conn, query.get_compiler, conn.alias, elide_empty=elide_empty)


class SQLCompiler(django_compiler.SQLCompiler):
    """Django's ``SQLCompiler``, executed on the task's async connection."""

    async_connection: BaseAsyncDatabaseWrapper

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conn = _current.get()
        if conn is None:
            raise NotSupportedError(
                "async-db's compilers are built by native ORM calls only."
            )
        self.async_connection = conn

    def execute_sql(self, *args: Any, **kwargs: Any) -> Any:
        replayed = _replayed.get()
        if replayed:
            # Compiling again: this query already ran natively.
            return replayed.pop(0)
        raise Deferred(self, args + tuple(kwargs.values()))

    async def _anative_as_sql(self) -> Any:
        try:
            return await acompile(self.async_connection, self.as_sql)
        except Deferred as deferred:
            # Compilation itself wanted to run a query, where Django's
            # compiler is not known to be re-runnable (only the update's
            # pre-select is replayed, below).
            raise NotSupportedError(
                f"This query on {self._label()} runs a query while it is "
                f"compiled ({type(self).__qualname__}): not native."
            ) from deferred

    def _label(self) -> str:
        model = self.query.model
        return str(model._meta.label) if model is not None else "a table"

    async def aexecute_sql(
        self,
        result_type: str | None = MULTI,
        chunked_fetch: bool = False,
        chunk_size: int = GET_ITERATOR_CHUNK_SIZE,
    ) -> Any:
        """Async twin of ``SQLCompiler.execute_sql()``: same SQL, executed on
        the task's connection. ``MULTI`` returns a list of row blocks, or with
        ``chunked_fetch`` an async iterator of blocks fetched with
        ``fetchmany(chunk_size)`` from a server-side cursor."""
        result_type = result_type or NO_RESULTS
        try:
            sql, params = await self._anative_as_sql()
            if not sql:
                raise EmptyResultSet
        except EmptyResultSet:
            if result_type == MULTI:
                return []
            return None
        db = self.async_connection
        cursor = db.chunked_cursor() if chunked_fetch else db.cursor()
        try:
            await cursor.execute(sql, params)
        except BaseException:
            # Cancellation included: might fail for server-side cursors too.
            await cursor.close()
            raise

        if result_type == ROW_COUNT:
            try:
                return cursor.rowcount
            finally:
                await cursor.close()
        if result_type == CURSOR:
            # Give the caller the cursor to process and close.
            return cursor
        if result_type == SINGLE:
            try:
                val = await cursor.fetchone()
                if val:
                    return val[0 : self.col_count]
                return val
            finally:
                await cursor.close()
        if result_type == NO_RESULTS:
            await cursor.close()
            return None

        col_count = self.col_count if self.has_extra_select else None
        if not chunked_fetch or not self.connection.features.can_use_chunked_reads:
            # Non-chunked reads: everything in memory before going further,
            # as Django; one fetchall() instead of fetchmany() rounds.
            try:
                rows = await cursor.fetchall()
            finally:
                await cursor.close()
            if col_count is not None:
                rows = [r[:col_count] for r in rows]
            return [rows]
        return acursor_iter(cursor, col_count, chunk_size)

    async def aexplain_query(self) -> AsyncIterator[str]:
        """Async twin of ``SQLCompiler.explain_query()``."""
        result = await self.aexecute_sql()
        explain_info: Any = self.query.explain_info
        format_ = explain_info.format
        output_formatter = json.dumps if format_ and format_.lower() == "json" else str
        # As Django: ``result`` is a list of row blocks, so ``row`` is a block
        # and ``value`` a row.
        for row in result:
            for value in row:
                if not isinstance(value, str):
                    yield " ".join([output_formatter(c) for c in value])
                else:
                    yield value


async def acursor_iter(
    cursor: Any, col_count: int | None, itersize: int
) -> AsyncIterator[Sequence[Any]]:
    """Async twin of ``cursor_iter()``: blocks of rows, cursor closed when done
    (or when the iteration is abandoned and the generator closed)."""
    try:
        while rows := await cursor.fetchmany(itersize):
            yield rows if col_count is None else [r[:col_count] for r in rows]
    finally:
        await cursor.close()


class SQLInsertCompiler(SQLCompiler, django_compiler.SQLInsertCompiler):
    async def aexecute_sql(  # type: ignore[override]
        self, returning_fields: Sequence[Any] | None = None
    ) -> list[Any]:
        """Async twin of ``SQLInsertCompiler.execute_sql()``."""
        features = self.connection.features
        assert not (
            returning_fields
            and len(self.query.objs) != 1
            and not features.can_return_rows_from_bulk_insert
        )
        opts = self.query.get_meta()
        self.returning_fields = returning_fields
        cols = []
        statements = await self._anative_as_sql()
        async with self.async_connection.cursor() as cursor:
            for sql, params in statements:
                await cursor.execute(sql, params)
            if not self.returning_fields:
                return []
            # ops.fetch_returned_insert_rows/columns are cursor.fetchall() and
            # cursor.fetchone() on PostgreSQL; awaited here.
            if features.can_return_rows_from_bulk_insert and len(self.query.objs) > 1:
                rows = await cursor.fetchall()
                cols = [field.get_col(opts.db_table) for field in self.returning_fields]
            elif features.can_return_columns_from_insert:
                assert len(self.query.objs) == 1
                rows = [await cursor.fetchone()]
                cols = [field.get_col(opts.db_table) for field in self.returning_fields]
            else:
                raise NotSupportedError(
                    f"Inserting into {opts.label} natively needs INSERT ... "
                    f"RETURNING, which database '{self.using}' doesn't support."
                )
        converters = self.get_converters(cols)
        if converters:
            rows = list(self.apply_converters(rows, converters))
        return list(rows)


class SQLDeleteCompiler(SQLCompiler, django_compiler.SQLDeleteCompiler):
    pass


class SQLUpdateCompiler(SQLCompiler, django_compiler.SQLUpdateCompiler):
    async def _anative_as_sql(self) -> Any:
        """Django's ``as_sql()``. An update of parent fields of a multi-table
        inheritance child (``related_updates``) first selects the primary
        keys of the rows it touches, inside ``pre_sql_setup()``; that select
        runs natively on the same connection, then ``as_sql()`` runs again
        from a copy of the untouched query with its rows replayed, so
        ``query.related_ids`` (the parents' updates) are Django's own."""
        query: Any = self.query  # django-stubs lacks related_updates
        if not query.related_updates:
            return await super()._anative_as_sql()
        # acompile() compiles again after connecting (NeedsConnection), which
        # pre_sql_setup()'s changes to the query would not survive: connect
        # first. And pre_sql_setup() changes the query before it selects:
        # keep a copy to compile again from.
        await self.async_connection.ensure_connection()
        original = query.clone()
        elide_empty = getattr(self, "elide_empty", True)  # not in django-stubs
        results: list[Any] = []
        for _ in range(_MAX_REPLAYS):
            token = _replayed.set(list(results))
            try:
                return await acompile(self.async_connection, self.as_sql)
            except Deferred as exc:
                deferred = exc
            finally:
                _replayed.reset(token)
            inner: Any = deferred.compiler
            results.append(await inner.aexecute_sql(*deferred.args))
            # A fresh compiler state over a fresh copy, as Django would build.
            django_compiler.SQLUpdateCompiler.__init__(
                self, original.clone(), self.connection, self.using, elide_empty
            )
        raise NotSupportedError(
            f"Compiling this update of {self._label()} ran more than "
            f"{_MAX_REPLAYS} queries: not native."
        )

    async def aexecute_sql(self, result_type: str | None) -> Any:  # type: ignore[override]
        """Async twin of ``SQLUpdateCompiler.execute_sql()``: the primary
        update's row count (or the first related update's)."""
        row_count = await super().aexecute_sql(result_type)
        is_empty = row_count is None
        row_count = row_count or 0
        for query in self.query.get_related_updates():
            compiler = await native_compiler(query, self.async_connection)
            aux_row_count = await compiler.aexecute_sql(result_type)
            if is_empty and aux_row_count:
                row_count = aux_row_count
                is_empty = False
        return row_count


class SQLAggregateCompiler(SQLCompiler, django_compiler.SQLAggregateCompiler):
    pass
