"""Issue 10, items 2-4: held server-side cursors, collected tasks, errors that
point the right way. Each test failed before its fix, against the server."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
from django.db import DatabaseError, OperationalError

from async_db import AsyncConnectionHandler, PoolTimeout
from async_db._storage import wait_released
from tests.fix_db import handler_databases, settled_pool_stats


def one_slot(dsn: str, **pool: Any) -> dict[str, dict[str, Any]]:
    databases = handler_databases(dsn)
    databases["pooled"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": 1,
        "timeout": 5,
        **pool,
    }
    return databases


@pytest.fixture
async def tiny(dsn: str) -> Any:
    """A handler whose 'pooled' alias has a single connection."""
    h = AsyncConnectionHandler(one_slot(dsn))
    try:
        yield h
    finally:
        await wait_released()
        await h.close_pools()


# ##### Item 2: server-side cursors #####


async def test_leaked_held_cursors_never_break_later_tasks(
    tiny: Any, observer: Any
) -> None:
    async def leaky() -> None:
        cursor = tiny["pooled"].chunked_cursor()
        await cursor.execute("SELECT generate_series(1, 5)")
        await cursor.fetchone()  # never closed: a WITH HOLD cursor in autocommit

    async def correct() -> int:
        async with tiny["pooled"].chunked_cursor() as cursor:
            await cursor.execute("SELECT generate_series(1, 5)")
            return len(await cursor.fetchall())

    results = []
    for i in range(200):
        if i % 2:
            results.append(await asyncio.create_task(correct()))
        else:
            await asyncio.create_task(leaky())
    assert results == [5] * 100
    await wait_released()

    async def held() -> int:
        async with tiny["pooled"].cursor() as cursor:
            await cursor.execute("SELECT count(*) FROM pg_cursors")
            (count,) = await cursor.fetchone()
            return int(count)

    assert await asyncio.create_task(held()) == 0


async def test_raw_declared_hold_cursors_are_closed_by_the_reset(tiny: Any) -> None:
    async def declare() -> None:
        async with tiny["pooled"].cursor() as cursor:
            await cursor.execute("DECLARE raw_held CURSOR WITH HOLD FOR SELECT 1")

    async def count() -> int:
        async with tiny["pooled"].cursor() as cursor:
            await cursor.execute("SELECT count(*) FROM pg_cursors")
            (n,) = await cursor.fetchone()
            return int(n)

    await asyncio.create_task(declare())
    await wait_released()
    assert await asyncio.create_task(count()) == 0


def test_cursor_names_are_unique_in_the_process(make_connection: Any) -> None:
    a, b = make_connection(), make_connection()
    names = [c._name for c in (a.chunked_cursor(), b.chunked_cursor())]
    names += [a.chunked_cursor()._name for _ in range(3)]
    assert len(set(names)) == 5


async def test_async_for_fetches_a_batch_per_round_trip(
    connection: Any, sql_log: Any
) -> None:
    await sql_log.start(connection)
    async with async_atomic_on(connection), connection.chunked_cursor() as cursor:
        cursor.itersize = 100
        await cursor.execute("SELECT generate_series(1, 1000)")
        rows = [row[0] async for row in cursor]
    assert rows == list(range(1, 1001))
    fetches = [s for s in sql_log.statements if s.startswith("FETCH")]
    # 10 full batches and the empty one that ends the iteration.
    assert fetches == ['FETCH FORWARD 100 FROM "' + cursor._name + '"'] * 11


class async_atomic_on:
    """BEGIN/COMMIT on a bare wrapper (no handler) for the fetch-count test."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def __aenter__(self) -> None:
        await self.connection.set_autocommit(False)

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.commit()
        await self.connection.set_autocommit(True)


async def test_fetch_after_iteration_continues_in_order(connection: Any) -> None:
    async with connection.cursor() as cursor:
        cursor.itersize = 4
        await cursor.execute("SELECT generate_series(1, 10)")
        first = []
        async for (value,) in cursor:
            first.append(value)
            if value == 2:
                break
        assert first == [1, 2]
        assert await cursor.fetchone() == (3,)
        assert await cursor.fetchmany(2) == [(4,), (5,)]
        assert [v for (v,) in await cursor.fetchall()] == [6, 7, 8, 9, 10]


async def test_disable_server_side_cursors_gives_a_plain_cursor(
    make_connection: Any, sql_log: Any
) -> None:
    conn = make_connection(DISABLE_SERVER_SIDE_CURSORS=True)
    try:
        await sql_log.start(conn)
        async with conn.chunked_cursor() as cursor:
            await cursor.execute("SELECT generate_series(1, 3)")
            assert [v for (v,) in await cursor.fetchall()] == [1, 2, 3]
        assert cursor._name is None
        assert not any("DECLARE" in s for s in sql_log.statements)
    finally:
        await conn.close()


# ##### Item 3: a task collected while it holds a connection #####


@pytest.mark.parametrize("alias", ["pooled", "default"])
async def test_collected_task_releases_its_connection(
    dsn: str, observer: Any, table: str, alias: str
) -> None:
    h = AsyncConnectionHandler(one_slot(dsn))

    async def locker() -> None:
        conn = h[alias]
        await conn.set_autocommit(False)
        async with conn.cursor() as cursor:
            await cursor.execute(f"INSERT INTO {table} (name) VALUES ('locked')")
        # Wait on a future nobody else references: the task is collectable.
        await asyncio.get_running_loop().create_future()

    task = asyncio.ensure_future(locker())
    for _ in range(50):
        await asyncio.sleep(0.01)
        states = observer.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
            " AND query LIKE %s",
            [f"INSERT INTO {table}%"],
        ).fetchone()
        if states[0]:
            break
    assert states[0] == 1
    ref = weakref.ref(task)
    del task
    with pytest.warns(
        ResourceWarning, match=rf"held connections to database '{alias}'"
    ):
        gc.collect()
        await asyncio.sleep(0)  # the pooled release runs on the loop
    assert ref() is None
    try:
        await wait_released()

        async def use() -> int:
            async with h[alias].cursor() as cursor:
                await cursor.execute(f"SELECT count(*) FROM {table}")
                (n,) = await cursor.fetchone()
                return int(n)

        # The slot is back and the rolled-back row is gone.
        assert await asyncio.create_task(use()) == 0
        if alias == "pooled":
            stats = await settled_pool_stats(h, "pooled")
            assert stats["pool_available"] == stats["pool_size"] == 1
    finally:
        await wait_released()
        await h.close_pools()


# ##### Item 4: errors that point the right way #####


async def test_pool_that_cannot_connect_says_why(dsn: str) -> None:
    databases = one_slot(dsn, timeout=1, min_size=0)
    databases["pooled"]["PORT"] = "1"  # nothing listens there
    databases["pooled"]["HOST"] = "127.0.0.1"
    databases["pooled"]["OPTIONS"]["connect_timeout"] = 2
    h = AsyncConnectionHandler(databases)
    try:
        with pytest.raises(PoolTimeout) as caught:
            await h["pooled"].ensure_connection()
        message = str(caught.value)
        assert "could not connect" in message and "'pooled'" in message
        assert "Connection refused" in message or "refused" in str(
            caught.value.__cause__
        )
        assert isinstance(caught.value, OperationalError)
        assert caught.value.__cause__ is not None
    finally:
        await h.close_pools()


async def test_pool_timeout_counts_nothing_false(tiny: Any) -> None:
    held = asyncio.Event()
    done = asyncio.Event()

    async def hold() -> None:
        await tiny["pooled"].ensure_connection()
        held.set()
        await done.wait()

    holder = asyncio.create_task(hold())
    await held.wait()
    # 30 waiters that give up: they must not be counted as "waiting".
    waiters = [
        asyncio.create_task(tiny["pooled"].ensure_connection()) for _ in range(30)
    ]
    await asyncio.sleep(0.05)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)

    async def one() -> None:
        conn = tiny["pooled"]
        pool = tiny.pools.peek("pooled")
        pool.timeout = 0.2
        await conn.ensure_connection()

    with pytest.raises(PoolTimeout) as caught:
        await asyncio.create_task(one())
    message = str(caught.value)
    assert "max_size=1" in message and "stayed in use" in message
    assert "waiting" not in message
    done.set()
    await holder


PUBLIC_STATE_METHODS = [
    ("savepoint", ()),
    ("savepoint_commit", ("s1",)),
    ("savepoint_rollback", ("s1",)),
    ("commit", ()),
    ("rollback", ()),
    ("set_autocommit", (False,)),
    ("get_autocommit", ()),
    ("ensure_connection", ()),
    ("is_usable", ()),
    ("close_if_unusable_or_obsolete", ()),
    ("on_commit", (lambda: None,)),
]


@pytest.mark.parametrize(("method", "args"), PUBLIC_STATE_METHODS, ids=lambda v: v)
async def test_foreign_task_is_refused_by_every_state_method(
    handler: Any, method: str, args: tuple[Any, ...]
) -> None:
    conn = handler["default"]
    await conn.ensure_connection()

    async def misuse() -> Any:
        return await getattr(conn, method)(*args)

    with pytest.raises(DatabaseError, match="belongs to another task"):
        await asyncio.create_task(misuse())
    await conn.close()


@pytest.mark.parametrize("method", ["get_rollback", "set_rollback"])
async def test_foreign_task_is_refused_the_rollback_flag(
    handler: Any, method: str
) -> None:
    conn = handler["default"]
    await conn.ensure_connection()
    await conn.set_autocommit(False)
    conn.in_atomic_block = True
    args = (True,) if method == "set_rollback" else ()

    async def misuse() -> Any:
        return getattr(conn, method)(*args)

    try:
        with pytest.raises(DatabaseError, match="belongs to another task"):
            await asyncio.create_task(misuse())
    finally:
        conn.in_atomic_block = False
        await conn.rollback()
        await conn.set_autocommit(True)
        await conn.close()


# ##### Item 7: a pool size that fits #####


@pytest.mark.parametrize(
    ("pool", "sizes"),
    [
        ({"max_size": 1}, (1, 1)),
        ({"max_size": 2, "timeout": 5}, (2, 2)),
        ({"max_size": 10}, (4, 10)),
        ({"min_size": 0, "max_size": 1}, (0, 1)),
        (True, (4, 4)),
    ],
    ids=str,
)
async def test_pool_min_size_fits_max_size(
    dsn: str, pool: Any, sizes: tuple[int, int]
) -> None:
    databases = handler_databases(dsn)
    databases["pooled"]["OPTIONS"]["pool"] = pool
    h = AsyncConnectionHandler(databases)

    async def use() -> int:
        async with h["pooled"].cursor() as cursor:
            await cursor.execute("SELECT 1")
            (one,) = await cursor.fetchone()
            return int(one)

    try:
        assert await asyncio.create_task(use()) == 1
        opened = h.pools.peek("pooled")
        assert (opened.min_size, opened.max_size) == sizes
    finally:
        await wait_released()
        await h.close_pools()
