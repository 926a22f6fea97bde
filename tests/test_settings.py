"""DATABASES -> connection parameters, exactly as Django's postgresql backend."""

from __future__ import annotations

import os
from typing import Any

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured

from async_db._engine import backend_name, create_connection, load_backend
from async_db.backends.postgresql.base import (
    AsyncClientCursor,
    AsyncServerBindingCursor,
    DatabaseWrapper,
)
from tests.fix_db import configured


def entry(**overrides: Any) -> dict[str, Any]:
    base = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "appdb",
        "USER": "app",
        "PASSWORD": "s3cret",
        "HOST": "db.internal",
        "PORT": "6432",
    }
    base.update(overrides)
    return configured(base)


def test_params_mapping() -> None:
    params = DatabaseWrapper(
        entry(OPTIONS={"sslmode": "require", "application_name": "web"})
    ).get_connection_params()
    assert params["dbname"] == "appdb"
    assert params["user"] == "app"
    assert params["password"] == "s3cret"
    assert params["host"] == "db.internal"
    assert params["port"] == "6432"
    assert params["sslmode"] == "require"
    assert params["application_name"] == "web"
    assert params["client_encoding"] == "UTF8"
    assert params["prepare_threshold"] is None
    assert params["cursor_factory"] is AsyncClientCursor


def test_socket_directory_host_is_passed_verbatim() -> None:
    params = DatabaseWrapper(
        entry(HOST="/var/run/postgresql", PORT="")
    ).get_connection_params()
    assert params["host"] == "/var/run/postgresql"
    assert "port" not in params


def test_our_options_are_not_sent_to_libpq() -> None:
    params = DatabaseWrapper(
        entry(
            OPTIONS={
                "isolation_level": psycopg.IsolationLevel.SERIALIZABLE,
                "assume_role": "r",
                "server_side_binding": True,
                "prepare_threshold": 5,
            }
        )
    ).get_connection_params()
    for key in ("isolation_level", "assume_role", "server_side_binding", "pool"):
        assert key not in params
    assert params["cursor_factory"] is AsyncServerBindingCursor
    assert params["prepare_threshold"] == 5


def test_name_none_connects_to_postgres_db() -> None:
    params = DatabaseWrapper(entry(NAME=None)).get_connection_params()
    assert params["dbname"] == "postgres"


def test_missing_name_is_improperly_configured() -> None:
    with pytest.raises(ImproperlyConfigured, match="supply the NAME"):
        DatabaseWrapper(entry(NAME="")).get_connection_params()


def test_service_without_name_is_allowed() -> None:
    params = DatabaseWrapper(
        entry(NAME="", OPTIONS={"service": "mysvc"})
    ).get_connection_params()
    assert params["service"] == "mysvc"
    assert "dbname" not in params


def test_too_long_name_is_improperly_configured() -> None:
    with pytest.raises(ImproperlyConfigured, match="longer than PostgreSQL's limit"):
        DatabaseWrapper(entry(NAME="x" * 64)).get_connection_params()


def test_engine_mapping() -> None:
    assert backend_name("default", entry()) == "async_db.backends.postgresql"
    assert load_backend("default", entry()) is DatabaseWrapper


def test_async_engine_key_names_a_backend_module() -> None:
    settings_dict = entry(
        ENGINE="myproject.custom", ASYNC_ENGINE="async_db.backends.postgresql"
    )
    assert load_backend("default", settings_dict) is DatabaseWrapper


def test_unsupported_engine_is_improperly_configured() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        create_connection("other", entry(ENGINE="django.db.backends.sqlite3"))
    message = str(info.value)
    assert "'django.db.backends.sqlite3'" in message
    assert "'other'" in message
    assert "'django.db.backends.postgresql'" in message
    assert "ASYNC_ENGINE" in message


def test_bad_async_engine_is_improperly_configured() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"'nowhere\.backend' .*alias 'x'"):
        load_backend("x", entry(ASYNC_ENGINE="nowhere.backend"))


def test_repr_has_no_password() -> None:
    wrapper = DatabaseWrapper(entry(), "default")
    assert repr(wrapper) == "<DatabaseWrapper vendor='postgresql' alias='default'>"
    assert "s3cret" not in repr(wrapper)


async def test_bad_isolation_level_is_improperly_configured(
    make_connection: Any,
) -> None:
    conn = make_connection(OPTIONS={"isolation_level": 42})
    with pytest.raises(
        ImproperlyConfigured, match="Invalid transaction isolation level 42"
    ):
        await conn.ensure_connection()
    assert conn.connection is None


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (psycopg.IsolationLevel.SERIALIZABLE, "serializable"),
        (psycopg.IsolationLevel.REPEATABLE_READ, "repeatable read"),
        (None, "read committed"),
    ],
)
async def test_isolation_level_applies_to_transactions(
    make_connection: Any, level: Any, expected: str
) -> None:
    options = {} if level is None else {"isolation_level": level}
    conn = make_connection(OPTIONS=options)
    try:
        await conn.set_autocommit(False)
        async with conn.cursor() as cursor:
            await cursor.execute("SHOW transaction_isolation")
            assert await cursor.fetchone() == (expected,)
        await conn.rollback()
        await conn.set_autocommit(True)
        assert conn.isolation_level == (level or psycopg.IsolationLevel.READ_COMMITTED)
    finally:
        await conn.close()


async def test_assume_role(make_connection: Any, observer: Any) -> None:
    observer.execute("DROP ROLE IF EXISTS async_db_assumed")
    observer.execute("CREATE ROLE async_db_assumed")
    try:
        conn = make_connection(OPTIONS={"assume_role": "async_db_assumed"})
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT current_user, session_user")
                current, session = await cursor.fetchone()
            assert current == "async_db_assumed"
            assert session != "async_db_assumed"
        finally:
            await conn.close()
    finally:
        observer.execute("DROP ROLE IF EXISTS async_db_assumed")


async def test_application_name_option(make_connection: Any, observer: Any) -> None:
    conn = make_connection(OPTIONS={"application_name": "async-db-tests"})
    async with conn.cursor() as cursor:
        await cursor.execute("SELECT current_setting('application_name')")
        assert await cursor.fetchone() == ("async-db-tests",)
    await conn.close()


async def test_server_side_binding_sends_parameters_separately(
    make_connection: Any,
) -> None:
    conn = make_connection(OPTIONS={"server_side_binding": True})
    try:
        async with conn.cursor() as cursor:
            # $1-style binding: the server sees a parameter, not a literal.
            await cursor.execute("SELECT pg_typeof(%s)::text", [1])
            assert await cursor.fetchone() == ("smallint",)
    finally:
        await conn.close()


def _socket_dir(observer: Any, db_settings: dict[str, Any]) -> str | None:
    host = db_settings["HOST"]
    if host.startswith("/"):
        return str(host)
    dirs = observer.execute("SHOW unix_socket_directories").fetchone()[0]
    port = observer.info.port
    for directory in (d.strip() for d in dirs.split(",")):
        if directory and os.path.exists(os.path.join(directory, f".s.PGSQL.{port}")):
            return directory
    return None


async def test_socket_directory_host_connects(
    make_connection: Any, observer: Any, db_settings: dict[str, Any]
) -> None:
    directory = _socket_dir(observer, db_settings)
    if directory is None:
        pytest.skip("the test server has no Unix socket on this machine (remote DSN)")
    conn = make_connection(HOST=directory, PORT=str(observer.info.port))
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT inet_server_addr() IS NULL")
            # A Unix-socket connection has no server address.
            assert await cursor.fetchone() == (True,)
    finally:
        await conn.close()
