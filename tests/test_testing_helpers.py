"""async_db.test: rollback and flush isolation, on_commit capture, the plugin."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db import ProgrammingError
from django.db.transaction import TransactionManagementError

from async_db import async_atomic, async_connections, new_connections
from async_db.test import (
    capture_on_commit_callbacks,
    flushed,
    is_test_database,
    isolated,
)
from async_db.transaction import on_commit
from tests.fix_db import POOLED_APP_NAME, our_backends


async def insert(table: str, name: str) -> None:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute(f"INSERT INTO {table} (name) VALUES (%s)", [name])


async def visible(table: str) -> list[str]:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute(f"SELECT name FROM {table} ORDER BY id")
        return [n for (n,) in await cursor.fetchall()]


def committed(observer: Any, table: str) -> list[str]:
    return [n for (n,) in observer.execute(f"SELECT name FROM {table}").fetchall()]


async def test_isolated_rolls_back(table: str, observer: Any) -> None:
    async with isolated():
        await insert(table, "a")
        async with async_atomic():  # the test's own blocks nest as savepoints
            await insert(table, "b")
        async with async_atomic(durable=True):  # allowed, as in Django's TestCase
            await insert(table, "c")
        assert await visible(table) == ["a", "b", "c"]
        assert committed(observer, table) == []
    assert committed(observer, table) == []
    assert not async_connections["default"].in_atomic_block


async def test_isolated_as_decorator(table: str, observer: Any) -> None:
    @isolated()
    async def body() -> list[str]:
        await insert(table, "a")
        return await visible(table)

    assert await body() == ["a"]
    assert committed(observer, table) == []


async def test_spawned_task_fails_loudly_in_rollback_mode(table: str) -> None:
    async def background() -> None:
        await insert(table, "escaped")

    async with isolated():
        with pytest.raises(TransactionManagementError, match="new_connections"):
            await asyncio.create_task(background())


async def test_flushed_commits_then_truncates(table: str, observer: Any) -> None:
    async def background() -> None:
        async with new_connections():
            await insert(table, "spawned")

    async with flushed(tables=[table]):
        await insert(table, "a")
        await asyncio.create_task(background())
        assert sorted(committed(observer, table)) == ["a", "spawned"]
    assert committed(observer, table) == []


async def test_capture_on_commit_callbacks() -> None:
    calls: list[str] = []

    async def nested() -> None:
        calls.append("outer")
        await on_commit(lambda: calls.append("inner"))

    async with isolated():
        async with capture_on_commit_callbacks() as callbacks:
            await on_commit(lambda: calls.append("sync"))
            await on_commit(nested)
        assert len(callbacks) == 2 and calls == []
        async with capture_on_commit_callbacks(execute=True) as callbacks:
            await on_commit(nested)
        assert calls == ["outer", "inner"]
        assert len(callbacks) == 2  # the one registered by the callback too


@pytest.mark.async_db
async def test_marker_rollback_mode(table: str, observer: Any) -> None:
    conn = async_connections["default"]
    assert conn.in_atomic_block  # opened in this very task
    await insert(table, "x")
    assert committed(observer, table) == []


@pytest.mark.async_db(databases=["default", "pooled"])
async def test_marker_closes_the_pools_at_test_end(observer: Any) -> None:
    """The pool this test opens is closed when it ends (by the marker, in
    this test's loop): the autouse leak check after it finds no backend of the
    pooled alias, so a test database could be dropped."""
    async with async_connections["pooled"].cursor() as cursor:
        await cursor.execute("SELECT 1")
    assert async_connections.pools.peek("pooled") is not None
    assert our_backends(observer, POOLED_APP_NAME)  # the pool holds a backend


async def test_helpers_refuse_an_alias_that_is_not_a_test_database() -> None:
    """The tests' aliases are test databases (TEST NAME is NAME); with another
    NAME, the helpers refuse before doing anything."""
    entry = async_connections.settings["other"]
    name = entry["NAME"]
    entry["NAME"] = "not_a_test_db"
    try:
        with pytest.raises(ProgrammingError, match="alias 'other'"):
            async with flushed("other", tables=["nothing"]):
                pass
        with pytest.raises(ProgrammingError, match="'not_a_test_db'"):
            async with isolated("other"):
                pass
    finally:
        entry["NAME"] = name
    assert is_test_database("other")


@pytest.mark.async_db(transaction=True, tables=["async_db_marker_flush"])
async def test_marker_flush_mode(observer: Any) -> None:
    assert not async_connections["default"].in_atomic_block
    observer.execute(
        "CREATE TABLE IF NOT EXISTS async_db_marker_flush (id serial, name text)"
    )
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute("INSERT INTO async_db_marker_flush (name) VALUES ('x')")
    assert observer.execute(
        "SELECT count(*) FROM async_db_marker_flush"
    ).fetchone() == (1,)


def test_marker_flush_mode_flushed(observer: Any) -> None:
    """Runs after the previous test (file order): its table was truncated."""
    try:
        count = observer.execute(
            "SELECT count(*) FROM async_db_marker_flush"
        ).fetchone()
        assert count == (0,)
    finally:
        observer.execute("DROP TABLE IF EXISTS async_db_marker_flush")
