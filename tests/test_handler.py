"""async_connections: one connection per task, checked on the server."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from django.db import DatabaseError, ProgrammingError
from django.db.transaction import TransactionManagementError
from django.utils.connection import ConnectionDoesNotExist

from async_db import AsyncConnectionHandler, async_connections, new_connections
from async_db._storage import wait_released
from tests.fix_db import await_backends, our_backends


async def backend_pid(conn: Any) -> int:
    async with conn.cursor() as cursor:
        await cursor.execute("SELECT pg_backend_pid()")
        (pid,) = await cursor.fetchone()
    return int(pid)


async def test_same_task_same_wrapper(handler: Any) -> None:
    first = handler["default"]
    pid = await backend_pid(first)
    await asyncio.sleep(0)
    assert handler["default"] is first
    assert await backend_pid(handler["default"]) == pid
    assert handler["other"] is not first
    await handler.close_all()


async def test_two_tasks_two_backends(handler: Any) -> None:
    first, second = await asyncio.gather(
        asyncio.create_task(handler_pid(handler)),
        asyncio.create_task(handler_pid(handler)),
    )
    assert first != second


async def handler_pid(handler: Any, alias: str = "default") -> int:
    return await backend_pid(handler[alias])


@pytest.mark.parametrize("parent_first", [True, False])
async def test_children_get_their_own_backend(handler: Any, parent_first: bool) -> None:
    parent_pid = await handler_pid(handler) if parent_first else None
    parent_wrapper = handler["default"] if parent_first else None

    async def child() -> tuple[int, Any]:
        return await handler_pid(handler), handler["default"]

    results = await asyncio.gather(child(), child())
    (pid1, wrapper1), (pid2, wrapper2) = results
    assert pid1 != pid2
    assert wrapper1 is not wrapper2
    if parent_first:
        assert parent_pid not in (pid1, pid2)
        assert handler["default"] is parent_wrapper
        assert wrapper1 is not parent_wrapper
    else:
        # Nothing leaks up from a child.
        assert handler.all(initialized_only=True) == []
    await handler.close_all()


async def test_taskgroup_children_are_independent(handler: Any) -> None:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(handler_pid(handler)) for _ in range(3)]
    assert len({t.result() for t in tasks}) == 3
    assert handler.all(initialized_only=True) == []


async def test_gather_of_sleeps_overlaps(handler: Any) -> None:
    async def timed_sleep() -> tuple[Any, Any]:
        async with handler["default"].cursor() as cursor:
            await cursor.execute(
                "SELECT clock_timestamp(), pg_sleep(0.3)::text, clock_timestamp()"
            )
            start, _, end = await cursor.fetchone()
        return start, end

    spans = await asyncio.gather(*(timed_sleep() for _ in range(4)))
    # Every query started (server clock) before any of them ended: 4 at once.
    assert max(start for start, _ in spans) < min(end for _, end in spans)


async def test_unpooled_connections_closed_when_tasks_end(
    handler: Any, observer: Any
) -> None:
    async def ok() -> int:
        return await handler_pid(handler)

    async def fails() -> None:
        await handler_pid(handler)
        raise ValueError("boom")

    started = asyncio.Event()

    async def cancelled() -> None:
        await handler_pid(handler)
        started.set()
        await asyncio.sleep(3600)

    await asyncio.create_task(ok())
    with pytest.raises(ValueError):
        await asyncio.create_task(fails())
    task = asyncio.create_task(cancelled())
    await started.wait()
    assert len(our_backends(observer)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await await_backends(observer, 0) == []


async def pool_stats(handler: Any, alias: str = "pooled") -> dict[str, int]:
    """Pool stats once released connections are back (reset runs in a pool
    worker after the release): bounded wait, then the last reading."""
    await wait_released()
    pool = handler.pools.peek(alias)
    async with asyncio.timeout(5):
        while True:
            stats = dict(pool.get_stats())
            if stats["pool_size"] == stats["pool_available"]:
                return stats
            await asyncio.sleep(0.005)


async def test_pooled_connections_returned_when_tasks_end(
    handler: Any, observer: Any
) -> None:
    async def use() -> int:
        return await handler_pid(handler, "pooled")

    async def fails() -> None:
        await use()
        raise ValueError("boom")

    await asyncio.create_task(use())
    opened = (await pool_stats(handler))["connections_num"]
    # Released connections are reused: no new server connection.
    await asyncio.create_task(use())
    await pool_stats(handler)
    with pytest.raises(ValueError):
        await asyncio.create_task(fails())
    await pool_stats(handler)
    holding = asyncio.Event()

    async def cancelled() -> None:
        await use()
        holding.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(cancelled())
    await holding.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = await pool_stats(handler)
    assert stats["pool_size"] == stats["pool_available"]
    assert stats.get("requests_waiting", 0) == 0
    assert stats["connections_num"] == opened


async def test_rounds_of_gather_on_small_pool(handler: Any, observer: Any) -> None:
    peak = 0

    async def child() -> None:
        async with handler["pooled"].cursor() as cursor:
            await cursor.execute("SELECT pg_sleep(0.001)")

    async with asyncio.timeout(60):
        for _ in range(100):
            await asyncio.gather(*(child() for _ in range(10)))
            peak = max(peak, len(our_backends(observer)))
    stats = await pool_stats(handler)
    assert stats["pool_size"] <= 4 and peak <= 4
    assert stats["pool_size"] == stats["pool_available"]
    assert stats.get("requests_waiting", 0) == 0


async def test_thousand_tasks_on_ten_connection_pool(dsn: str, observer: Any) -> None:
    from tests.fix_db import handler_databases

    databases = handler_databases(dsn)
    databases["pooled"]["OPTIONS"]["pool"] = {
        "min_size": 2,
        "max_size": 10,
        "timeout": 30,
    }
    h = AsyncConnectionHandler(databases)
    peak = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        import psycopg

        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name="async-db-observer"
        ) as conn:
            while not stop.is_set():
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    ["async-db-tests"],
                )
                peak = max(peak, (await cur.fetchone())[0])
                await asyncio.sleep(0.005)

    async def work(i: int) -> int:
        async with h["pooled"].cursor() as cursor:
            await cursor.execute("SELECT %s::int", [i])
            return (await cursor.fetchone())[0]

    watcher = asyncio.create_task(watch())
    try:
        async with asyncio.timeout(120):
            results = await asyncio.gather(*(work(i) for i in range(1000)))
    finally:
        stop.set()
        await watcher
        await wait_released()
        await h.close_pools()
    assert results == list(range(1000))
    assert 1 <= peak <= 10


async def test_pool_exhaustion_is_a_clear_error(dsn: str) -> None:
    from async_db import PoolTimeout
    from tests.fix_db import handler_databases

    databases = handler_databases(dsn)
    databases["pooled"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": 2,
        "timeout": 0.5,
    }
    h = AsyncConnectionHandler(databases)
    release = asyncio.Event()
    both_held = asyncio.Barrier(3)

    async def holder() -> None:
        await h["pooled"].ensure_connection()
        await both_held.wait()
        await release.wait()

    holders = [asyncio.create_task(holder()) for _ in range(2)]
    try:
        await both_held.wait()
        with pytest.raises(PoolTimeout) as info:
            async with asyncio.timeout(10):
                await asyncio.create_task(h_ensure(h))
        message = str(info.value)
        assert "'pooled'" in message and "max_size=2" in message and "0.50" in message
        from django.db import OperationalError

        assert isinstance(info.value, OperationalError)
    finally:
        release.set()
        await asyncio.gather(*holders)
        await wait_released()
        await h.close_pools()


async def h_ensure(h: Any) -> None:
    await h["pooled"].ensure_connection()


async def test_transaction_guard(handler: Any) -> None:
    async def use() -> int:
        return await handler_pid(handler)

    conn = handler["default"]
    before = asyncio.create_task(use())  # spawned before the transaction
    await conn.set_autocommit(False)
    during = asyncio.create_task(use(), name="child-in-tx")
    other_alias = asyncio.create_task(handler_pid(handler, "other"))

    @new_connections()
    async def explicit() -> int:
        return await handler_pid(handler)

    explicit_task = asyncio.create_task(explicit())
    await conn.set_autocommit(True)
    # Decided at spawn time: the transaction is over, the child still raises.
    with pytest.raises(TransactionManagementError) as info:
        await during
    message = str(info.value)
    assert "'child-in-tx'" in message and "'default'" in message
    assert "new_connections()" in message and "await the work" in message
    assert isinstance(await before, int)
    assert isinstance(await other_alias, int)
    assert isinstance(await explicit_task, int)
    after = asyncio.create_task(use())
    assert isinstance(await after, int)
    await handler.close_all()


async def test_autocommit_false_setting_guards_children(dsn: str) -> None:
    from tests.fix_db import handler_databases

    databases = handler_databases(dsn)
    databases["default"]["AUTOCOMMIT"] = False
    h = AsyncConnectionHandler(databases)
    await h["default"].ensure_connection()
    try:
        with pytest.raises(TransactionManagementError):
            await asyncio.create_task(handler_pid(h))
    finally:
        await h.close_all()


async def test_new_connections_scope(handler: Any) -> None:
    outer = handler["default"]
    outer_pid = await backend_pid(outer)
    async with new_connections():
        inner = handler["default"]
        assert inner is not outer
        inner_pid = await backend_pid(inner)
        assert inner_pid != outer_pid
        async with new_connections():
            innermost = handler["default"]
            assert await backend_pid(innermost) not in (outer_pid, inner_pid)
        assert handler["default"] is inner
        assert innermost.connection is None  # closed on exit
    assert inner.connection is None
    assert handler["default"] is outer
    assert await backend_pid(outer) == outer_pid  # still open, same backend
    await handler.close_all()


async def test_new_connections_closed_on_error(handler: Any, observer: Any) -> None:
    with pytest.raises(ValueError):
        async with new_connections():
            await backend_pid(handler["default"])
            await backend_pid(handler["pooled"])
            raise ValueError("boom")
    assert handler.all(initialized_only=True) == []
    assert await await_backends(observer, 1) != []  # the pool's idle connection
    stats = await pool_stats(handler)
    assert stats["pool_size"] == stats["pool_available"]


async def test_new_connections_does_not_see_outer_uncommitted_rows(
    handler: Any, table: str
) -> None:
    outer = handler["default"]
    await outer.set_autocommit(False)
    async with outer.cursor() as cursor:
        await cursor.execute(f"INSERT INTO {table} (name) VALUES ('uncommitted')")
    async with new_connections(), handler["default"].cursor() as cursor:
        await cursor.execute(f"SELECT count(*) FROM {table}")
        assert await cursor.fetchone() == (0,)
    await outer.rollback()
    await outer.set_autocommit(True)
    await handler.close_all()


async def test_async_with_wrapper_closes_only_what_it_opened(handler: Any) -> None:
    async with handler["default"] as conn:
        assert conn is handler["default"]
        pid = await backend_pid(conn)
    assert conn.connection is None
    await conn.ensure_connection()
    async with handler["default"] as same:
        assert await backend_pid(same) != pid
    assert conn.connection is not None  # was open before the block
    await handler.close_all()
    assert conn.connection is None


async def test_all_iter_close_all(handler: Any) -> None:
    assert list(handler) == ["default", "other", "pooled"]
    assert handler.all(initialized_only=True) == []
    everything = handler.all()
    assert [c.alias for c in everything] == ["default", "other", "pooled"]
    await handler["other"].ensure_connection()
    await handler.close_all()
    assert all(c.connection is None for c in everything)


async def test_unknown_alias(handler: Any) -> None:
    with pytest.raises(
        ConnectionDoesNotExist, match=re.escape("The connection 'nope' doesn't exist.")
    ):
        handler["nope"]


def test_no_running_loop_is_a_clear_error(handler: Any) -> None:
    with pytest.raises(ProgrammingError, match="needs a running asyncio task"):
        async_connections["default"]


async def test_foreign_task_is_a_clear_error(handler: Any) -> None:
    conn = handler["default"]
    await conn.ensure_connection()

    async def misuse() -> None:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT 1")

    async with asyncio.timeout(5):
        with pytest.raises(DatabaseError, match="belongs to another task"):
            await asyncio.create_task(misuse())
    await asyncio.create_task(conn.close())  # close() is allowed from anywhere
    assert conn.connection is None


async def test_pool_from_a_second_running_loop(handler: Any, observer: Any) -> None:
    # Threaded WSGI servers run each async view in a loop of its own, several
    # at once: each running loop gets a pool of its own, closed with its loop.
    conn = handler["pooled"]
    await conn.ensure_connection()
    first_pool = handler.pools.peek("pooled")
    import threading

    outcome: list[Any] = []

    def other_loop() -> None:
        async def use() -> tuple[Any, int]:
            other = handler["pooled"]
            async with other.cursor() as cursor:
                await cursor.execute("SELECT pg_backend_pid()")
                (pid,) = await cursor.fetchone()
            return handler.pools.peek("pooled"), pid

        try:
            outcome.append(asyncio.run(use()))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=other_loop)
    thread.start()
    await asyncio.to_thread(thread.join, 10)
    other_pool, other_pid = outcome[0]
    assert other_pool is not first_pool
    # The other loop ended: its pool closed with it, and its connection too.
    assert other_pool.closed
    pids = observer.execute(
        "SELECT pid FROM pg_stat_activity WHERE pid = %s", [other_pid]
    ).fetchall()
    deadline = asyncio.get_running_loop().time() + 5
    while pids and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
        pids = observer.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid = %s", [other_pid]
        ).fetchall()
    assert pids == []
    # This loop's pool is untouched and still serves this task.
    assert handler.pools.peek("pooled") is first_pool and not first_pool.closed
    assert await conn.is_usable()
    await handler.close_all()


async def test_pool_with_conn_max_age_is_improperly_configured(dsn: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from tests.fix_db import handler_databases

    databases = handler_databases(dsn)
    databases["pooled"]["CONN_MAX_AGE"] = 60
    h = AsyncConnectionHandler(databases)
    with pytest.raises(ImproperlyConfigured, match="persistent connections"):
        await h["pooled"].ensure_connection()
    for bad, match in (("yes", "must be True or a dict"), ({"nope": 1}, "nope")):
        databases = handler_databases(dsn)
        databases["pooled"]["OPTIONS"]["pool"] = bad
        h = AsyncConnectionHandler(databases)
        with pytest.raises(ImproperlyConfigured, match=match):
            await h["pooled"].ensure_connection()


async def test_terminated_backend_replaced_with_health_checks(
    dsn: str, observer: Any
) -> None:
    from tests.fix_db import handler_databases

    databases = handler_databases(dsn)
    for alias in ("default", "pooled"):
        databases[alias]["CONN_HEALTH_CHECKS"] = True
    databases["pooled"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": 1,
        "timeout": 5,
    }
    h = AsyncConnectionHandler(databases)
    try:
        pid = await asyncio.create_task(handler_pid(h, "pooled"))
        observer.execute("SELECT pg_terminate_backend(%s)", [pid])
        new_pid = await asyncio.create_task(handler_pid(h, "pooled"))
        assert new_pid != pid
    finally:
        await wait_released()
        await h.close_pools()


async def test_aclose_old_connections(handler: Any) -> None:
    from async_db import aclose_old_connections

    conn = handler["pooled"]
    await conn.ensure_connection()
    # CONN_MAX_AGE=0 (required with pools): the slot goes back to the pool.
    await aclose_old_connections(handler)
    assert conn.connection is None
    stats = await pool_stats(handler)
    assert stats["pool_size"] == stats["pool_available"]
    # Never a connection inside an atomic block.
    await conn.ensure_connection()
    conn.in_atomic_block = True
    try:
        await aclose_old_connections(handler)
        assert conn.connection is not None
    finally:
        conn.in_atomic_block = False
    await handler.close_all()


async def test_close_pools_then_reuse(handler: Any) -> None:
    pid = await handler_pid(handler, "pooled")
    await handler.close_pools()
    assert handler.pools.peek("pooled") is None
    assert await handler_pid(handler, "pooled") != pid
    await handler.close_all()


async def single_connection_pool(dsn: str) -> AsyncConnectionHandler:
    from tests.fix_db import handler_databases

    databases = handler_databases(dsn)
    databases["pooled"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": 1,
        "timeout": 5,
    }
    return AsyncConnectionHandler(databases)


async def test_pooled_session_is_reset_between_tasks(dsn: str) -> None:
    h = await single_connection_pool(dsn)

    async def change_session() -> int:
        async with h["pooled"].cursor() as cursor:
            await cursor.execute("SET statement_timeout = '1234s'")
            await cursor.execute("SET TIME ZONE 'Asia/Tokyo'")
        return await handler_pid(h, "pooled")

    async def read_session() -> tuple[int, str, str]:
        async with h["pooled"].cursor() as cursor:
            await cursor.execute(
                "SELECT pg_backend_pid(), current_setting('statement_timeout'), "
                "current_setting('TimeZone')"
            )
            return await cursor.fetchone()

    try:
        pid = await asyncio.create_task(change_session())
        await pool_stats(h)
        same_pid, timeout, tz = await asyncio.create_task(read_session())
        assert same_pid == pid  # the same connection, reused...
        assert timeout == "0"  # ...with the task's SETs undone
        assert tz == "UTC"  # and Django's session state re-applied
    finally:
        await wait_released()
        await h.close_pools()


async def test_task_ending_in_a_transaction_is_rolled_back(
    dsn: str, table: str, observer: Any
) -> None:
    h = await single_connection_pool(dsn)

    async def leave_transaction_open() -> None:
        conn = h["pooled"]
        await conn.set_autocommit(False)
        async with conn.cursor() as cursor:
            await cursor.execute(f"INSERT INTO {table} (name) VALUES ('lost')")

    async def count_rows() -> int:
        async with h["pooled"].cursor() as cursor:
            await cursor.execute(f"SELECT count(*) FROM {table}")
            return int((await cursor.fetchone())[0])

    try:
        await asyncio.create_task(leave_transaction_open())
        stats = await pool_stats(h)
        assert stats["pool_size"] == stats["pool_available"] == 1
        # Nothing persisted, no backend idle in transaction, next task works.
        assert observer.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        states = [state for _, state in our_backends(observer)]
        assert "idle in transaction" not in states
        assert await asyncio.create_task(count_rows()) == 0
    finally:
        await wait_released()
        await h.close_pools()


async def test_unpooled_task_ending_in_a_transaction_persists_nothing(
    handler: Any, table: str, observer: Any
) -> None:
    async def leave_transaction_open() -> None:
        conn = handler["default"]
        await conn.set_autocommit(False)
        async with conn.cursor() as cursor:
            await cursor.execute(f"INSERT INTO {table} (name) VALUES ('lost')")

    await asyncio.create_task(leave_transaction_open())
    assert await await_backends(observer, 0) == []
    assert observer.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
