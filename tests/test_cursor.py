"""PEP 249 async cursor methods against a real server."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import ProgrammingError


async def test_execute_returns_the_cursor(connection: Any) -> None:
    async with connection.cursor() as cursor:
        result = await cursor.execute("SELECT 1")
        assert result is cursor
        assert await cursor.fetchone() == (1,)


async def test_cursor_needs_no_await_and_connects_lazily(make_connection: Any) -> None:
    conn = make_connection()
    cursor = conn.cursor()
    assert conn.connection is None
    async with cursor:
        assert conn.connection is not None
        await cursor.execute("SELECT 2")
        assert await cursor.fetchone() == (2,)
    await conn.close()
    assert conn.connection is None


async def test_execute_without_async_with_opens_on_first_use(connection: Any) -> None:
    cursor = connection.cursor()
    await cursor.execute("SELECT 3")
    assert await cursor.fetchall() == [(3,)]
    await cursor.close()


async def test_fetchone_fetchmany_fetchall(connection: Any) -> None:
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT g FROM generate_series(1, 10) AS g")
        assert cursor.rowcount == 10
        assert await cursor.fetchone() == (1,)
        assert await cursor.fetchmany(3) == [(2,), (3,), (4,)]
        # size=None uses arraysize.
        cursor.arraysize = 2
        assert cursor.arraysize == 2
        assert await cursor.fetchmany() == [(5,), (6,)]
        assert await cursor.fetchall() == [(7,), (8,), (9,), (10,)]
        assert await cursor.fetchone() is None
        assert await cursor.fetchmany() == []


async def test_arraysize_set_before_open_applies(connection: Any) -> None:
    cursor = connection.cursor()
    assert cursor.arraysize == 1
    cursor.arraysize = 4
    async with cursor:
        assert cursor.arraysize == 4
        await cursor.execute("SELECT g FROM generate_series(1, 5) AS g")
        assert len(await cursor.fetchmany()) == 4


async def test_async_for(connection: Any) -> None:
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT g FROM generate_series(1, 5) AS g")
        rows = [row async for row in cursor]
    assert rows == [(1,), (2,), (3,), (4,), (5,)]


async def test_description_and_rowcount(connection: Any) -> None:
    cursor = connection.cursor()
    assert cursor.description is None
    assert cursor.rowcount == -1
    async with cursor:
        await cursor.execute("SELECT 1 AS one, 'x'::text AS two")
        assert [col.name for col in cursor.description] == ["one", "two"]
        assert cursor.rowcount == 1


async def test_executemany_and_rowcount(
    connection: Any, table: str, observer: Any
) -> None:
    async with connection.cursor() as cursor:
        result = await cursor.executemany(
            f"INSERT INTO {table} (name, value) VALUES (%s, %s)",
            [("a", 1), ("b", 2), ("c", 3)],
        )
        assert result is None
    rows = observer.execute(f"SELECT name, value FROM {table} ORDER BY id").fetchall()
    assert rows == [("a", 1), ("b", 2), ("c", 3)]


async def test_positional_and_named_parameters(connection: Any) -> None:
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT %s::int + %s::int", [2, 3])
        assert await cursor.fetchone() == (5,)
        await cursor.execute("SELECT %(a)s::text || %(b)s::text", {"a": "x", "b": "y"})
        assert await cursor.fetchone() == ("xy",)


async def test_hostile_value_is_stored_literally(
    connection: Any, table: str, observer: Any
) -> None:
    hostile = "O'Reilly\"; DROP TABLE " + table + "; --"
    async with connection.cursor() as cursor:
        await cursor.execute(f"INSERT INTO {table} (name) VALUES (%s)", [hostile])
        await cursor.execute(
            f"INSERT INTO {table} (name) VALUES (%(n)s)", {"n": hostile + "2"}
        )
    rows = observer.execute(f"SELECT name FROM {table} ORDER BY id").fetchall()
    assert rows == [(hostile,), (hostile + "2",)]


async def test_percent_without_params_is_literal(connection: Any) -> None:
    async with connection.cursor() as cursor:
        await cursor.execute("SELECT '100%'")
        assert await cursor.fetchone() == ("100%",)


async def test_cursor_closed_after_failing_block(connection: Any) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
            raise RuntimeError("boom")
    assert cursor.cursor.closed
    # The connection is still usable.
    async with connection.cursor() as cursor2:
        await cursor2.execute("SELECT 1")
        assert await cursor2.fetchone() == (1,)


async def test_cursor_closed_after_query_error(connection: Any) -> None:
    with pytest.raises(ProgrammingError):
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT * FROM no_such_table_here")
    assert cursor.cursor.closed


async def test_close_is_explicit_too(connection: Any) -> None:
    cursor = connection.cursor()
    await cursor.execute("SELECT 1")
    await cursor.close()
    assert cursor.cursor.closed
    with pytest.raises(Exception, match="closed"):
        await cursor.fetchone()


async def test_fetch_before_execute_is_a_clear_error(connection: Any) -> None:
    cursor = connection.cursor()
    with pytest.raises(ProgrammingError, match="nothing was executed"):
        await cursor.fetchone()


async def test_chunked_cursor_streams_from_server(connection: Any) -> None:
    await connection.set_autocommit(False)
    try:
        async with connection.chunked_cursor() as cursor:
            await cursor.execute("SELECT g FROM generate_series(1, 250) AS g")
            first = await cursor.fetchmany(100)
            rest = [row async for row in cursor]
        assert first[0] == (1,) and len(first) == 100
        assert len(rest) == 150 and rest[-1] == (250,)
    finally:
        await connection.rollback()
        await connection.set_autocommit(True)


async def test_chunked_cursor_in_autocommit_is_holdable(connection: Any) -> None:
    async with connection.chunked_cursor() as cursor:
        await cursor.execute("SELECT g FROM generate_series(1, 3) AS g")
        assert await cursor.fetchall() == [(1,), (2,), (3,)]
