"""Query logging to the django.db.backends logger and the queries list."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import override_settings

from async_db.backends.base.cursor import AsyncCursorDebugWrapper, AsyncCursorWrapper


async def test_no_logging_by_default(connection: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    cursor = connection.cursor()
    assert type(cursor) is AsyncCursorWrapper
    async with cursor:
        await cursor.execute("SELECT 1")
    assert connection.queries == []
    assert not [r for r in caplog.records if r.name == "django.db.backends"]


async def test_force_debug_cursor_logs_sql_params_duration_alias(
    connection: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    connection.force_debug_cursor = True
    cursor = connection.cursor()
    assert isinstance(cursor, AsyncCursorDebugWrapper)
    async with cursor:
        await cursor.execute("SELECT %s::text", ["it's"])
    (record,) = [r for r in caplog.records if r.name == "django.db.backends"]
    # The SQL as sent, values merged by psycopg's client-side binding.
    assert record.sql == "SELECT 'it''s'::text"
    assert record.params == ["it's"]
    assert record.alias == "default"
    assert record.duration >= 0
    assert "alias=default" in record.getMessage()
    (entry,) = connection.queries
    assert entry["sql"] == "SELECT 'it''s'::text"
    assert float(entry["time"]) >= 0


async def test_debug_setting_fills_queries(make_connection: Any, table: str) -> None:
    with override_settings(DEBUG=True):
        conn = make_connection()
        try:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    f"INSERT INTO {table} (name) VALUES (%s)", [("a",), ("b",)]
                )
                await cursor.execute("SELECT 1")
            await conn.set_autocommit(False)
            await conn.commit()
            await conn.set_autocommit(True)
        finally:
            await conn.close()
    sqls = [q["sql"] for q in conn.queries]
    assert sqls == [
        f"2 times: INSERT INTO {table} (name) VALUES (%s)",
        "SELECT 1",
        "BEGIN",
        "COMMIT",
    ]


async def test_failed_query_is_logged_too(connection: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    connection.force_debug_cursor = True
    async with connection.cursor() as cursor:
        with pytest.raises(Exception, match="no_such_table"):
            await cursor.execute("SELECT * FROM no_such_table")
    assert len(connection.queries) == 1


async def test_queries_limit_warns(connection: Any) -> None:
    connection.queries_log.extend({"sql": "x", "time": "0"} for _ in range(9000))
    with pytest.warns(UserWarning, match="Limit for query logging exceeded"):
        assert len(connection.queries) == 9000
