"""The wrapper's Django API: autocommit, commit/rollback, savepoints, health,
on_commit, task ownership."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db import DatabaseError, ProgrammingError
from django.db.transaction import TransactionManagementError


async def count(observer: Any, table: str) -> int:
    return int(observer.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def insert(conn: Any, table: str, name: str) -> None:
    async with conn.cursor() as cursor:
        await cursor.execute(f"INSERT INTO {table} (name) VALUES (%s)", [name])


async def test_autocommit_by_default(
    connection: Any, table: str, observer: Any
) -> None:
    assert await connection.get_autocommit() is True
    assert connection.in_transaction is False
    await insert(connection, table, "a")
    assert await count(observer, table) == 1


async def test_autocommit_false_setting(make_connection: Any) -> None:
    conn = make_connection(AUTOCOMMIT=False)
    try:
        assert await conn.get_autocommit() is False
        assert conn.in_transaction is True
    finally:
        await conn.close()


async def test_commit_and_rollback(connection: Any, table: str, observer: Any) -> None:
    await connection.set_autocommit(False)
    await insert(connection, table, "kept")
    assert await count(observer, table) == 0  # not visible before COMMIT
    await connection.commit()
    assert await count(observer, table) == 1
    await insert(connection, table, "dropped")
    await connection.rollback()
    await connection.set_autocommit(True)
    rows = observer.execute(f"SELECT name FROM {table}").fetchall()
    assert rows == [("kept",)]


async def test_savepoints(connection: Any, table: str, observer: Any) -> None:
    assert await connection.savepoint() is None  # no transaction: no savepoint
    connection.force_debug_cursor = True
    await connection.set_autocommit(False)
    await insert(connection, table, "a")
    sid = await connection.savepoint()
    assert sid is not None
    await insert(connection, table, "b")
    await connection.savepoint_rollback(sid)
    sid2 = await connection.savepoint()
    assert sid2 is not None and sid2 != sid
    await insert(connection, table, "c")
    await connection.savepoint_commit(sid2)
    await connection.commit()
    await connection.set_autocommit(True)
    rows = observer.execute(f"SELECT name FROM {table} ORDER BY id").fetchall()
    assert rows == [("a",), ("c",)]
    sql = [q["sql"] for q in connection.queries if "SAVEPOINT" in q["sql"]]
    assert sql == [
        f'SAVEPOINT "{sid}"',
        f'ROLLBACK TO SAVEPOINT "{sid}"',
        f'SAVEPOINT "{sid2}"',
        f'RELEASE SAVEPOINT "{sid2}"',
    ]


async def test_commit_rollback_autocommit_forbidden_in_atomic_block(
    connection: Any,
) -> None:
    connection.in_atomic_block = True
    try:
        for call in (connection.commit, connection.rollback):
            with pytest.raises(
                TransactionManagementError, match="'atomic' block is active"
            ):
                await call()
        with pytest.raises(
            TransactionManagementError, match="'atomic' block is active"
        ):
            await connection.set_autocommit(False)
    finally:
        connection.in_atomic_block = False


async def test_rollback_flag_only_inside_atomic(connection: Any) -> None:
    with pytest.raises(
        TransactionManagementError, match="outside of an 'atomic' block"
    ):
        connection.get_rollback()
    with pytest.raises(
        TransactionManagementError, match="outside of an 'atomic' block"
    ):
        connection.set_rollback(True)


async def test_broken_transaction_blocks_queries(connection: Any) -> None:
    connection.needs_rollback = True
    connection.rollback_exc = ValueError("original")
    try:
        async with connection.cursor() as cursor:
            with pytest.raises(TransactionManagementError) as info:
                await cursor.execute("SELECT 1")
        assert isinstance(info.value.__cause__, ValueError)
    finally:
        connection.needs_rollback = False


async def test_is_usable_and_health_check(make_connection: Any, observer: Any) -> None:
    conn = make_connection(CONN_HEALTH_CHECKS=True, CONN_MAX_AGE=None)
    try:
        assert await conn.is_usable() is False  # not connected
        await conn.ensure_connection()
        assert await conn.is_usable() is True
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT pg_backend_pid()")
            (pid,) = await cursor.fetchone()
        observer.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert await conn.is_usable() is False
        # Once per use (Django's CONN_HEALTH_CHECKS): the next cursor replaces it.
        await conn.close_if_unusable_or_obsolete()
        assert conn.connection is not None  # checked lazily, on next use
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT pg_backend_pid()")
            (new_pid,) = await cursor.fetchone()
        assert new_pid != pid
    finally:
        await conn.close()


async def test_close_if_unusable_or_obsolete_max_age(make_connection: Any) -> None:
    conn = make_connection(CONN_MAX_AGE=0)
    await conn.ensure_connection()
    await conn.close_if_unusable_or_obsolete()
    assert conn.connection is None


async def test_close_if_unusable_when_autocommit_not_restored(connection: Any) -> None:
    await connection.set_autocommit(False)
    await connection.close_if_unusable_or_obsolete()
    assert connection.connection is None


async def test_close_is_idempotent(connection: Any) -> None:
    await connection.close()
    await connection.close()
    assert connection.connection is None


async def test_concurrent_ensure_connection_opens_one(
    make_connection: Any, observer: Any
) -> None:
    conn = make_connection()
    try:
        await asyncio.gather(*(conn.ensure_connection() for _ in range(5)))
        from tests.fix_db import our_backends

        assert len(our_backends(observer)) == 1
    finally:
        await conn.close()


async def test_closed_in_transaction_cannot_reconnect_in_block(connection: Any) -> None:
    connection.in_atomic_block = True
    try:
        await connection.close()
        assert connection.closed_in_transaction and connection.needs_rollback
        connection.connection = None
        with pytest.raises(ProgrammingError, match="Cannot open a new connection"):
            await connection.ensure_connection()
    finally:
        connection.in_atomic_block = False
        connection.closed_in_transaction = False
        connection.needs_rollback = False


async def test_on_commit_in_autocommit_runs_at_once(connection: Any) -> None:
    calls: list[str] = []

    async def async_hook() -> None:
        calls.append("async")

    await connection.on_commit(lambda: calls.append("sync"))
    await connection.on_commit(async_hook)
    assert calls == ["sync", "async"]
    with pytest.raises(TypeError, match="must be a callable"):
        await connection.on_commit(None)


async def test_on_commit_in_manual_transaction_is_an_error(connection: Any) -> None:
    calls: list[str] = []
    await connection.set_autocommit(False)
    with pytest.raises(TransactionManagementError, match="manual transaction"):
        await connection.on_commit(lambda: calls.append("x"))
    await connection.rollback()
    await connection.set_autocommit(True)
    assert calls == []


async def test_owner_task_check(make_connection: Any) -> None:
    conn = make_connection()
    conn.owner = asyncio.current_task()
    try:
        await conn.ensure_connection()

        async def foreign() -> None:
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT 1")

        with pytest.raises(DatabaseError, match="belongs to another task"):
            await asyncio.create_task(foreign())
        for call in (conn.commit, conn.rollback):
            with pytest.raises(DatabaseError, match="belongs to another task"):
                await asyncio.create_task(call())
        # A cursor created by the owner can't be used by another task either.
        async with conn.cursor() as cursor:

            async def use_cursor() -> None:
                await cursor.execute("SELECT 1")

            with pytest.raises(DatabaseError, match="belongs to another task"):
                await asyncio.create_task(use_cursor())
        # close() is allowed from anywhere.
        await asyncio.create_task(conn.close())
        assert conn.connection is None
    finally:
        await conn.close()
