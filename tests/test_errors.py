"""Driver errors become Django's exception classes, the psycopg error as __cause__."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from django.db import (
    DataError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
)
from django.db.utils import InternalError


async def test_unique_violation_is_integrity_error(connection: Any, table: str) -> None:
    async with connection.cursor() as cursor:
        await cursor.execute(f"INSERT INTO {table} (name) VALUES (%s)", ["dup"])
        with pytest.raises(IntegrityError) as info:
            await cursor.execute(f"INSERT INTO {table} (name) VALUES (%s)", ["dup"])
    assert isinstance(info.value.__cause__, psycopg.errors.UniqueViolation)
    assert "duplicate key" in str(info.value)
    # Integrity errors don't mark the connection as possibly broken (Django).
    assert connection.errors_occurred is False


async def test_syntax_error_is_programming_error(connection: Any) -> None:
    async with connection.cursor() as cursor:
        with pytest.raises(ProgrammingError) as info:
            await cursor.execute("SELEC 1")
    assert isinstance(info.value.__cause__, psycopg.errors.SyntaxError)
    assert connection.errors_occurred is True


async def test_bad_value_is_data_error(connection: Any) -> None:
    async with connection.cursor() as cursor:
        with pytest.raises(DataError) as info:
            await cursor.execute("SELECT 1 / 0")
    assert isinstance(info.value.__cause__, psycopg.errors.DivisionByZero)


async def test_wrong_parameter_count_is_programming_error(connection: Any) -> None:
    async with connection.cursor() as cursor:
        with pytest.raises(ProgrammingError) as info:
            await cursor.execute("SELECT %s, %s", [1])
    assert isinstance(info.value.__cause__, psycopg.ProgrammingError)


async def test_aborted_transaction_is_internal_error(connection: Any) -> None:
    await connection.set_autocommit(False)
    try:
        async with connection.cursor() as cursor:
            with pytest.raises(ProgrammingError):
                await cursor.execute("SELECT * FROM no_such_table_here")
            with pytest.raises(InternalError) as info:
                await cursor.execute("SELECT 1")
        assert isinstance(info.value.__cause__, psycopg.errors.InFailedSqlTransaction)
    finally:
        await connection.rollback()
        await connection.set_autocommit(True)


async def test_fetch_errors_are_translated(connection: Any) -> None:
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT 1")
        await cursor.close()
        with pytest.raises(Exception) as info:
            await cursor.fetchone()
    # psycopg raises InterfaceError for a closed cursor: Django's class, cause kept.
    from django.db import InterfaceError

    assert isinstance(info.value, InterfaceError)
    assert isinstance(info.value.__cause__, psycopg.InterfaceError)


async def test_connection_failure_is_operational_error(make_connection: Any) -> None:
    conn = make_connection(NAME="async_db_no_such_database")
    with pytest.raises(OperationalError) as info:
        async with conn.cursor():
            pass
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert "async_db_no_such_database" in str(info.value)
    assert conn.connection is None
