"""``async_db.test.shared_session``: async-db on the server session of
Django's sync connection inside a test case's transaction (issue 13).

In process, without a test runner: Django's connection of the thread that
``sync_to_async`` uses opens an atomic block marked as a test case's (as
``TestCase._enter_atomics`` does); the test's async code then runs on that
session. The subprocess tests (tests/test_django_testcase.py,
tests/test_pytest_django.py) cover the runners.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import ProgrammingError, connections, transaction

from async_db import async_atomic, async_connections
from async_db.test import shared_session


def _open_test_transaction(table: str) -> tuple[Any, Any]:
    conn = connections["default"]
    block = transaction.atomic()
    block._from_testcase = True
    block.__enter__()
    with conn.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table} (name) VALUES ('sync')")
    return conn, block


def _close_test_transaction(conn: Any, block: Any) -> None:
    transaction.set_rollback(True)
    block.__exit__(None, None, None)
    conn.close()


def _sync_names(table: str) -> list[str]:
    with connections["default"].cursor() as cursor:
        cursor.execute(f"SELECT name FROM {table} ORDER BY id")
        return [name for (name,) in cursor.fetchall()]


@pytest.fixture
async def django_transaction(table: str) -> AsyncIterator[Any]:
    conn, block = await sync_to_async(_open_test_transaction)(table)
    try:
        yield conn
    finally:
        await sync_to_async(_close_test_transaction)(conn, block)


async def names(table: str) -> list[str]:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute(f"SELECT name FROM {table} ORDER BY id")
        return [name for (name,) in await cursor.fetchall()]


async def test_one_session_both_ways(
    django_transaction: Any, table: str, observer: Any
) -> None:
    async with shared_session({"default": django_transaction}):
        assert await names(table) == ["sync"]  # the sync side's uncommitted row
        # A savepoint, not a transaction.
        async with async_atomic(), async_connections["default"].cursor() as cursor:
            await cursor.execute(f"INSERT INTO {table} (name) VALUES ('async')")
        assert await sync_to_async(_sync_names)(table) == ["sync", "async"]
        committed = observer.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert committed == (0,)
        wrapper = async_connections["default"]
        # Never commits the shared session.
        with pytest.raises(Exception, match="forbidden when an 'atomic' block"):
            await wrapper.commit()
    # The rollback mode undid the async row (the sync side's is Django's).
    assert await sync_to_async(_sync_names)(table) == ["sync"]
    assert wrapper.connection is None and not wrapper.in_atomic_block


async def test_refused_outside_a_test_transaction(table: str) -> None:
    conn = await sync_to_async(lambda: connections["default"])()
    with pytest.raises(ProgrammingError, match=r"database 'default'.*test case"):
        async with shared_session({"default": conn}):
            pass


async def test_refused_when_the_task_is_connected(
    django_transaction: Any, table: str
) -> None:
    await names(table)  # this task's own connection is open
    with pytest.raises(ProgrammingError, match=r"'default'.*already open"):
        async with shared_session({"default": django_transaction}):
            pass
    await async_connections["default"].close()


async def test_durable_block_allowed_and_errors_roll_back_to_it(
    django_transaction: Any, table: str
) -> None:
    async with shared_session({"default": django_transaction}):
        with pytest.raises(ValueError):
            async with async_atomic(durable=True):
                async with async_connections["default"].cursor() as cursor:
                    await cursor.execute(f"INSERT INTO {table} (name) VALUES ('x')")
                raise ValueError
        assert await names(table) == ["sync"]
