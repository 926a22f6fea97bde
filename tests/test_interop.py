"""The sync ORM inside an async transaction: warned, because it is another
connection."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from async_db import async_atomic
from async_db._interop import SyncQueryInAsyncTransactionWarning


def sync_count(table: str) -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        return int(cursor.fetchone()[0])


@pytest.fixture
async def close_sync_connections() -> Any:
    yield
    await sync_to_async(connections.close_all)()


async def test_sync_query_inside_async_transaction_warns(
    table: str, close_sync_connections: None
) -> None:
    from async_db import async_connections

    async with async_atomic():
        async with async_connections["default"].cursor() as cursor:
            await cursor.execute(f"INSERT INTO {table} (name) VALUES ('x')")
        with pytest.warns(
            SyncQueryInAsyncTransactionWarning, match="another connection"
        ):
            # The sync connection can't see the block's uncommitted row.
            assert await sync_to_async(sync_count)(table) == 0


async def test_no_warning_outside_transactions(
    table: str, close_sync_connections: None
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert await sync_to_async(sync_count)(table) == 0
    async with async_atomic(using="other"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # A transaction on another alias: not this one's business.
            assert await sync_to_async(sync_count)(table) == 0
