"""PostgreSQL async backend on ``psycopg.AsyncConnection``.

Connection parameters are read from the ``DATABASES`` entry exactly as Django's
``django.db.backends.postgresql`` reads them, and the session is initialised the
same way (time zone per ``USE_TZ``/``TIME_ZONE``, ``assume_role``,
``isolation_level``), with Django's own adapter map, so values round-trip as
Django's backend returns them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql.psycopg_any import (
    get_adapters_template,
    register_tzloader,
)
from psycopg import IsolationLevel, adapters, sql
from psycopg.client_cursor import ClientCursorMixin
from psycopg.pq import Format

from backends.base.base import BaseAsyncDatabaseWrapper, django_setting

TIMESTAMPTZ_OID = adapters.types["timestamptz"].oid
#: PostgreSQL's NAMEDATALEN - 1 (Django's ``ops.max_name_length()``).
MAX_NAME_LENGTH = 63


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
        for key in ("assume_role", "isolation_level", "pool"):
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
        isolation_level = self._isolation_level_option()
        self.isolation_level = isolation_level or IsolationLevel.READ_COMMITTED
        connection = await psycopg.AsyncConnection.connect(**conn_params)
        if isolation_level is not None:
            try:
                await connection.set_isolation_level(isolation_level)
            except BaseException:
                await connection.close()
                raise
        return connection

    # ##### Session state #####

    async def init_connection_state(self) -> None:
        commit = await self._configure_connection(self.connection)
        if commit and not self.autocommit:
            await self.connection.commit()

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
        with self.wrap_database_errors:
            await self.connection.set_autocommit(autocommit)

    # ##### Cursors #####

    def create_cursor(self, name: str | None = None) -> Any:
        connection = self.connection
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
        else:
            cursor = connection.cursor()
        # Register the cursor time zone only if the connection disagrees, to
        # avoid copying the adapter map (as Django).
        tzloader = connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
        if self.timezone != tzloader.timezone:
            register_tzloader(self.timezone, cursor)
        return cursor

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

    async def is_usable(self) -> bool:
        if self.connection is None:
            return False
        try:
            # Use a psycopg cursor directly, bypassing our wrapper.
            async with self.connection.cursor() as cursor:
                await cursor.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True
