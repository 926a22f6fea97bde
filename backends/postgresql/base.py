"""PostgreSQL async backend on ``psycopg.AsyncConnection``.

Connection parameters are read from the ``DATABASES`` entry exactly as Django's
``django.db.backends.postgresql`` reads them, and the session is initialised the
same way (time zone per ``USE_TZ``/``TIME_ZONE``, ``assume_role``,
``isolation_level``), with Django's own adapter map, so values round-trip as
Django's backend returns them.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import psycopg
import psycopg_pool
from django.core.exceptions import ImproperlyConfigured
from django.db import ProgrammingError
from django.db.backends.postgresql.psycopg_any import (
    get_adapters_template,
    register_tzloader,
)
from psycopg import IsolationLevel, adapters, sql
from psycopg.client_cursor import ClientCursorMixin
from psycopg.pq import Format, TransactionStatus

from async_db.backends.base.base import BaseAsyncDatabaseWrapper, django_setting
from async_db.backends.base.pools import PoolTimeout
from async_db.backends.postgresql.pool import AsyncDatabasePool

TIMESTAMPTZ_OID = adapters.types["timestamptz"].oid
#: PostgreSQL's NAMEDATALEN - 1 (Django's ``ops.max_name_length()``).
MAX_NAME_LENGTH = 63
#: psycopg_pool's default min_size; lowered to max_size when that is smaller.
DEFAULT_MIN_SIZE = 4

logger = logging.getLogger("async_db")


class AsyncClientCursor(psycopg.AsyncClientCursor[Any]):
    """Client-side binding, Django's default (``Cursor`` in Django's backend)."""


class AsyncServerBindingCursor(psycopg.AsyncCursor[Any]):
    """Server-side binding, with ``OPTIONS["server_side_binding"] = True``."""


class AsyncServerSideCursor(
    ClientCursorMixin[Any, Any], psycopg.AsyncServerCursor[Any]
):
    """A named (server-side) cursor that still binds parameters client-side,
    as Django's ``ServerSideCursor`` (psycopg forces server binding otherwise)."""


class DatabaseWrapper(BaseAsyncDatabaseWrapper):
    vendor = "postgresql"
    display_name = "PostgreSQL"
    Database: ClassVar[Any] = psycopg

    isolation_level: IsolationLevel | None = None
    #: The pool the current connection came from (None: unpooled).
    _connection_pool: AsyncDatabasePool | None = None
    #: Server-side cursors opened on the current checkout (closed by the
    #: release if the task left them open).
    _held_cursors: list[Any] | None = None
    #: Whether cursors need their own time zone loader (per connection).
    _cursor_tz_differs: bool | None = None

    # ##### Connection parameters (Django's get_connection_params) #####

    def get_connection_params(self) -> dict[str, Any]:
        settings_dict = self.settings_dict
        options = dict(settings_dict["OPTIONS"])
        name = settings_dict["NAME"]
        # None may be used to connect to the default 'postgres' db.
        if name == "" and not options.get("service"):
            raise ImproperlyConfigured(
                f"settings.DATABASES['{self.alias}'] is improperly configured. "
                f"Please supply the NAME or OPTIONS['service'] value."
            )
        if len(name or "") > MAX_NAME_LENGTH:
            raise ImproperlyConfigured(
                f"The database name '{name}' ({len(name)} characters) is longer "
                f"than PostgreSQL's limit of {MAX_NAME_LENGTH} characters. Supply "
                f"a shorter NAME in settings.DATABASES."
            )
        if name:
            conn_params: dict[str, Any] = {"dbname": name, **options}
        elif name is None:
            options.pop("service", None)
            conn_params = {"dbname": "postgres", **options}
        else:
            conn_params = {**options}
        conn_params["client_encoding"] = "UTF8"
        if options.get("transaction_pooling") and options.get("assume_role"):
            raise ImproperlyConfigured(
                f"DATABASES['{self.alias}']['OPTIONS']: 'assume_role' cannot work "
                f"with 'transaction_pooling': a transaction-mode pooler runs each "
                f"transaction on any server connection, and SET ROLE stays on the "
                f"one it ran on. Connect as that role (USER) instead."
            )
        for key in ("assume_role", "isolation_level", "pool", "transaction_pooling"):
            conn_params.pop(key, None)
        server_side_binding = conn_params.pop("server_side_binding", None)
        conn_params.setdefault(
            "cursor_factory",
            AsyncServerBindingCursor
            if server_side_binding is True
            else AsyncClientCursor,
        )
        for setting, param in (
            ("USER", "user"),
            ("PASSWORD", "password"),
            ("HOST", "host"),
            ("PORT", "port"),
        ):
            if settings_dict[setting]:
                conn_params[param] = settings_dict[setting]
        conn_params["context"] = get_adapters_template(
            django_setting("USE_TZ"), self.timezone
        )
        # Disable prepared statements by default to keep connection poolers
        # working (as Django). Can be re-enabled via OPTIONS.
        conn_params["prepare_threshold"] = conn_params.pop("prepare_threshold", None)
        return conn_params

    def _isolation_level_option(self) -> IsolationLevel | None:
        """The configured isolation level, or None; validated before connecting."""
        options = self.settings_dict["OPTIONS"]
        if "isolation_level" not in options:
            return None
        value = options["isolation_level"]
        try:
            return IsolationLevel(value)
        except ValueError:
            raise ImproperlyConfigured(
                f"Invalid transaction isolation level {value} specified for "
                f"database '{self.alias}'. Use one of the psycopg.IsolationLevel "
                f"values."
            ) from None

    async def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        # Validated before connecting: a bad value never opens a connection.
        isolation_level = self._isolation_level_option()
        self.isolation_level = isolation_level or IsolationLevel.READ_COMMITTED
        if self.pool_options is None:
            try:
                return await psycopg.AsyncConnection.connect(**conn_params)
            except asyncio.CancelledError as exc:
                # psycopg leaves a half-open connection to the garbage collector
                # when connect() is cancelled: its generator holds the libpq
                # connection, and this traceback holds the generator. Clear the
                # finished frames so the socket closes now, not whenever the
                # exception is freed (a server backend would linger until then).
                traceback.clear_frames(exc.__traceback__)
                raise
        pool = await self.pools.get(self.alias, self._make_pool)
        try:
            connection = await pool.getconn()
        except psycopg_pool.PoolTimeout as exc:
            raise self._pool_timeout(pool) from exc
        # No await between getconn() and here: connect() stores the returned
        # connection on the wrapper before anything else can be cancelled.
        self._connection_pool = pool
        return connection

    # ##### Pools #####

    @property
    def pool_options(self) -> dict[str, Any] | None:
        """``OPTIONS["pool"]`` as AsyncConnectionPool arguments, or None."""
        options = self.settings_dict["OPTIONS"].get("pool")
        if not options:
            return None
        if options is True:
            return {}
        if not isinstance(options, dict):
            raise ImproperlyConfigured(
                f"DATABASES['{self.alias}']['OPTIONS']['pool'] must be True or a "
                f"dict of psycopg_pool.AsyncConnectionPool arguments, not "
                f"{type(options).__name__}."
            )
        return dict(options)

    def _pool_timeout(self, pool: AsyncDatabasePool) -> PoolTimeout:
        """The error for a getconn() that timed out: exhaustion, or a pool
        that cannot connect at all (then caused by the connection error)."""
        cause = pool.last_connect_error
        if cause is not None and pool.get_stats().get("pool_available", 0) == 0:
            error = PoolTimeout(
                f"Database '{self.alias}': its pool could not connect to the "
                f"server within {pool.timeout:.2f} seconds; the last attempt "
                f"failed with: {cause}"
            )
            error.__cause__ = cause
            return error
        return PoolTimeout(
            f"Database '{self.alias}': no connection available from its pool "
            f"(max_size={pool.max_size}) within {pool.timeout:.2f} seconds: every "
            f"connection stayed in use. Raise OPTIONS['pool']['max_size'] or "
            f"['timeout'], or release connections sooner."
        )

    def _make_pool(self) -> AsyncDatabasePool:
        options = self.pool_options or {}
        if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
            raise ImproperlyConfigured(
                f"Database '{self.alias}': pooling (OPTIONS['pool']) doesn't "
                f"support persistent connections; set CONN_MAX_AGE to 0."
            )
        for key in ("kwargs", "open", "configure", "connection_class"):
            if key in options:
                raise ImproperlyConfigured(
                    f"DATABASES['{self.alias}']['OPTIONS']['pool'] cannot set "
                    f"'{key}': async-db manages it."
                )
        connect_kwargs = self.get_connection_params()
        # Pooled connections idle in autocommit; connect() sets AUTOCOMMIT.
        connect_kwargs["autocommit"] = True
        # The pool's workers configure new connections outside any task's
        # wrapper: give them an unowned wrapper of their own.
        configurer = type(self)(self.settings_dict, self.alias)
        # The session is reset by the returning task, never in a pool worker
        # (see _return_to_pool and pool.py): the pool itself gets no reset.
        options.pop("reset", None)
        if "max_size" in options and "min_size" not in options:
            # psycopg_pool's min_size defaults to 4, which a smaller max_size
            # would contradict.
            options["min_size"] = min(DEFAULT_MIN_SIZE, options["max_size"])
        options.setdefault("name", f"async-db-{self.alias}")
        health = self.settings_dict["CONN_HEALTH_CHECKS"]
        try:
            return AsyncDatabasePool(
                kwargs=connect_kwargs,
                open=False,
                configure=configurer._configure_pooled,
                check=AsyncDatabasePool.check_connection if health else None,
                **options,
            )
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"Invalid DATABASES['{self.alias}']['OPTIONS']['pool']: {exc}"
            ) from exc

    async def _configure_pooled(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Pool ``configure`` callback: a new connection gets Django's session."""
        await self._configure_connection(connection)

    def _session_reset(self) -> Callable[[Any], Awaitable[None]] | None:
        """What resets a returned connection's session: ours by default,
        ``OPTIONS["pool"]["reset"]`` if given (``None``: no reset)."""
        options = self.pool_options or {}
        # Behind a transaction-mode pooler the next transaction may run on
        # another server connection: a RESET here resets nothing that matters.
        default = None if self.transaction_pooling else self._reset_session
        reset: Callable[[Any], Awaitable[None]] | None = options.get("reset", default)
        return reset

    @property
    def transaction_pooling(self) -> bool:
        """``OPTIONS["transaction_pooling"]``: behind PgBouncer (or another
        pooler) in transaction mode. Server-side cursors only inside a
        transaction, no session reset, no ``assume_role``."""
        return bool(self.settings_dict["OPTIONS"].get("transaction_pooling"))

    async def _reset_session(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Undo what a task changed in the session (``SET``, ``SET ROLE``, held
        cursors) and re-apply Django's session state, in one round trip (the
        statements go as one simple-protocol query)."""
        statements: list[sql.Composable] = [sql.SQL("CLOSE ALL"), sql.SQL("RESET ALL")]
        if self.timezone_name:
            statements.append(
                sql.SQL("SET TIME ZONE {}").format(sql.Literal(self.timezone_name))
            )
        role = self.settings_dict["OPTIONS"].get("assume_role")
        if role:
            statements.append(sql.SQL("SET ROLE {}").format(sql.Literal(role)))
        async with psycopg.AsyncClientCursor(connection) as cursor:
            await cursor.execute(sql.SQL("; ").join(statements))

    async def _return_to_pool(
        self, pool: AsyncDatabasePool, connection: psycopg.AsyncConnection[Any]
    ) -> None:
        """Give ``connection`` back clean (rolled back, held cursors closed,
        session reset), or closed so the pool replaces it.

        Runs in a release task or under a shield. If it is cancelled all the
        same (``asyncio.run`` cancels every task at the end), the connection
        is closed at once and handed back when its pool is next used or
        closed (``PoolRegistry.discard``): nothing waits on a loop that ends.
        """
        held, self._held_cursors = self._held_cursors, None
        try:
            status = connection.info.transaction_status
            for cursor in list(held or ()):
                # Left open by the task: close it as psycopg would (CLOSE).
                # Inside a transaction the rollback below ends it.
                if not cursor.closed and status == TransactionStatus.IDLE:
                    await cursor.close()
            if status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                await connection.rollback()
            elif status != TransactionStatus.IDLE:
                # ACTIVE or UNKNOWN: state unknown, never handed out again.
                raise _Unusable
            if not connection.autocommit:
                await connection.set_autocommit(True)
            reset = self._session_reset()
            if reset is not None:
                await reset(connection)
                if connection.info.transaction_status != TransactionStatus.IDLE:
                    raise _Unusable
            elif held:
                async with psycopg.AsyncClientCursor(connection) as cursor:
                    await cursor.execute("CLOSE ALL")
        # Cancellation included: a half-done rollback or reset leaves an
        # unknown state.
        except (Exception, asyncio.CancelledError) as exc:
            await connection.close()  # PQfinish: no I/O wait
            if isinstance(exc, asyncio.CancelledError):
                self.pools.discard(self.alias, connection)
                raise
            if not isinstance(exc, _Unusable):
                logger.warning(
                    "error ignored returning a connection of %r: %s", self, exc
                )
        finally:
            # Ended on the server (rollback, CLOSE ALL, or the connection
            # closed): driver objects the task still references must not
            # warn when collected.
            for cursor in held or ():
                self.abandon_cursor(cursor)
        await pool.putconn(connection)

    async def _close(self) -> None:
        connection, pool = self.connection, self._connection_pool
        if connection is None:
            return
        if pool is None:
            with self.wrap_database_errors:
                await connection.close()
            return
        # Connection can no longer be used (as Django), even if the return
        # below is cancelled: the shielded task finishes it.
        self.connection = None
        self._connection_pool = None
        await _shielded(self._return_to_pool(pool, connection))

    async def _discard(self, connection: Any) -> None:
        pool, self._connection_pool = self._connection_pool, None
        await connection.close()
        if pool is not None:
            # A closed connection: the pool drops it and opens a replacement.
            await _shielded(pool.putconn(connection))

    def new_connection_params(self) -> dict[str, Any]:
        # A pooled checkout doesn't connect: the pool has the parameters.
        if self.pool_options is not None:
            return {}
        return self.get_connection_params()

    async def release(self) -> None:
        if self._connection_pool is None or self.in_atomic_block:
            await self.close()
            return
        connection, pool = self.connection, self._connection_pool
        self.run_on_commit = []
        self.connection = None
        self._connection_pool = None
        self._note_transaction(False)
        # Called from a release task: no shield needed (see _return_to_pool
        # for what happens if the loop's end cancels it anyway).
        await self._return_to_pool(pool, connection)

    def close_now(self) -> bool:
        connection = self.connection
        if connection is None:
            return True
        if self._connection_pool is not None:
            return False
        # Closing needs no I/O wait (libpq's PQfinish); the server rolls back
        # whatever transaction the task left open.
        connection.pgconn.finish()
        self.connection = None
        return True

    async def close_if_health_check_failed(self) -> None:
        if self._connection_pool is not None:
            # The pool only hands out checked connections.
            return
        await super().close_if_health_check_failed()

    # ##### Session state #####

    async def init_connection_state(self) -> None:
        connection = self.connection
        self._cursor_tz_differs = None
        level = self._isolation_level_option()
        if level is not None or connection.isolation_level is not None:
            # psycopg keeps it client-side: no round trip. Pooled connections
            # may carry a previous user's value, so it is always normalised.
            await connection.set_isolation_level(level)
        if self._connection_pool is not None:
            return  # configured by the pool (configure/reset callbacks)
        commit = await self._configure_connection(connection)
        if commit and not self.autocommit:
            await connection.commit()

    async def _configure_connection(
        self, connection: psycopg.AsyncConnection[Any]
    ) -> bool:
        """Set time zone and role; return whether a commit is needed."""
        commit_tz = await self._configure_timezone(connection)
        commit_role = await self._configure_role(connection)
        return commit_tz or commit_role

    async def _configure_timezone(
        self, connection: psycopg.AsyncConnection[Any]
    ) -> bool:
        conn_timezone_name = connection.info.parameter_status("TimeZone")
        timezone_name = self.timezone_name
        if timezone_name and conn_timezone_name != timezone_name:
            async with connection.cursor() as cursor:
                await cursor.execute(
                    "SELECT set_config('TimeZone', %s, false)", [timezone_name]
                )
            return True
        return False

    async def _configure_role(self, connection: psycopg.AsyncConnection[Any]) -> bool:
        new_role = self.settings_dict["OPTIONS"].get("assume_role")
        if not new_role:
            return False
        async with connection.cursor() as cursor:
            await cursor.execute(sql.SQL("SET ROLE {}").format(sql.Literal(new_role)))
        return True

    async def _set_autocommit(self, autocommit: bool) -> None:
        connection = self.connection
        # Pooled checkouts arrive in autocommit already: skip psycopg's locked
        # call (a measurable share of a short task, issue 6's profile).
        if connection.autocommit != autocommit:
            with self.wrap_database_errors:
                await connection.set_autocommit(autocommit)

    # ##### Cursors #####

    def create_cursor(self, name: str | None = None) -> Any:
        connection = self.connection
        if name and connection.autocommit and self.transaction_pooling:
            raise ProgrammingError(
                f"Database '{self.alias}': a server-side cursor (chunked_cursor(), "
                f"QuerySet.aiterator()) outside a transaction cannot work behind a "
                f"transaction-mode pooler (OPTIONS['transaction_pooling']): its "
                f"rows would be fetched on another server connection. Use it "
                f"inside async_atomic(), or set DISABLE_SERVER_SIDE_CURSORS = True "
                f"for client-side cursors."
            )
        if name:
            # In autocommit mode the cursor is used outside a transaction,
            # hence a holdable cursor (as Django).
            if self.settings_dict["OPTIONS"].get("server_side_binding") is True:
                cursor = connection.cursor(
                    name, scrollable=False, withhold=connection.autocommit
                )
            else:
                cursor = AsyncServerSideCursor(
                    connection,
                    name=name,
                    scrollable=False,
                    withhold=connection.autocommit,
                )
            if self._connection_pool is not None:
                # A WITH HOLD cursor outlives its transaction: the release
                # closes it if the task didn't (see _return_to_pool). Unpooled
                # cursors end with their connection.
                if self._held_cursors is None:
                    self._held_cursors = []
                self._held_cursors.append(cursor)
        else:
            cursor = connection.cursor()
        # Register the cursor time zone only if the connection disagrees, to
        # avoid copying the adapter map (as Django). Decided once per
        # connection: this runs for every query.
        if self._cursor_tz_differs is None:
            loader = connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
            self._cursor_tz_differs = self.timezone != loader.timezone
        if self._cursor_tz_differs:
            register_tzloader(self.timezone, cursor)
        return cursor

    def abandon_cursor(self, cursor: Any) -> None:
        if not cursor.closed:
            # psycopg's non-blocking part of close(): the cursor object is
            # marked closed, nothing is sent (the server side ends with the
            # transaction, the connection, or the release's CLOSE ALL).
            cursor._close()

    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str | None:
        if self.settings_dict["OPTIONS"].get("server_side_binding") is True:
            return sql if isinstance(sql, str) else str(sql)
        # Client-side binding: the query as sent, with values merged (Django
        # reads the same private attribute).
        query = getattr(cursor, "_query", None)
        if query is not None and query.query is not None:
            return str(query.query.decode())
        return None

    # ##### Health #####

    def is_idle(self) -> bool:
        status = self.connection.info.transaction_status
        return bool(status == TransactionStatus.IDLE)

    async def is_usable(self) -> bool:
        self.validate_task_sharing()
        if self.connection is None:
            return False
        try:
            # Use a psycopg cursor directly, bypassing our wrapper.
            async with self.connection.cursor() as cursor:
                await cursor.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True


#: Releases in flight, referenced until done (a shielded task must outlive the
#: cancellation of its awaiter).
_returning: set[asyncio.Task[None]] = set()


async def _shielded(coro: Any) -> None:
    """Run ``coro`` to completion even if the caller is cancelled."""
    task = asyncio.ensure_future(coro)
    _returning.add(task)
    task.add_done_callback(_returning.discard)
    await asyncio.shield(task)


class _Unusable(Exception):
    """A returned connection that cannot be reused (closed, mid-query)."""
