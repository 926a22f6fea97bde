"""Reliability under cancellation storms and timeouts (issue 5, first part)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from async_db import AsyncConnectionHandler, PoolTimeout
from async_db._storage import wait_released
from tests.fix_db import POOLED_APP_NAME, handler_databases, our_backends


def small_pool(dsn: str, **pool: Any) -> AsyncConnectionHandler:
    databases = handler_databases(dsn)
    databases["pooled"]["OPTIONS"]["pool"] = {
        "min_size": 1,
        "max_size": 2,
        "timeout": 30,
        **pool,
    }
    return AsyncConnectionHandler(databases)


async def settled_stats(h: AsyncConnectionHandler) -> dict[str, int]:
    """Pool stats once returned connections are back (the pool's reset runs in
    a worker after the release); bounded wait."""
    await wait_released()
    pool = h.pools.peek("pooled")
    async with asyncio.timeout(5):
        while True:
            stats = dict(pool.get_stats())
            if stats["pool_size"] == stats["pool_available"]:
                return stats
            await asyncio.sleep(0.005)


async def ensure(h: AsyncConnectionHandler) -> None:
    """Connect the *calling* task's wrapper (spawn it as its own task)."""
    await h["pooled"].ensure_connection()


async def pid_of(h: AsyncConnectionHandler) -> int:
    async with h["pooled"].cursor() as cursor:
        await cursor.execute("SELECT pg_backend_pid()")
        return int((await cursor.fetchone())[0])


@pytest.mark.slow
async def test_cancellation_storm_leaves_no_stale_waiters(dsn: str) -> None:
    h = small_pool(dsn)
    release = asyncio.Event()
    holding = asyncio.Barrier(3)

    async def holder() -> None:
        await h["pooled"].ensure_connection()
        await holding.wait()
        await release.wait()

    async def waiter() -> None:
        await h["pooled"].ensure_connection()

    holders = [asyncio.create_task(holder()) for _ in range(2)]
    try:
        await holding.wait()
        waiters = [asyncio.create_task(waiter()) for _ in range(1000)]
        pool = h.pools.peek("pooled")
        async with asyncio.timeout(30):
            # Polling the pool's own counter: there is no event to wait on.
            while True:
                if pool.get_stats().get("requests_waiting", 0) >= 1000:
                    break
                await asyncio.sleep(0.01)
        for task in waiters:
            task.cancel()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        release.set()
        await asyncio.gather(*holders)
        await wait_released()
        # The next task gets a connection at once (bounded: a hang fails).
        async with asyncio.timeout(5):
            await asyncio.create_task(pid_of(h))
        stats = await settled_stats(h)
        assert stats.get("requests_waiting", 0) == 0
        assert stats["pool_size"] <= 2
    finally:
        release.set()
        await asyncio.gather(*holders, return_exceptions=True)
        await wait_released()
        await h.close_pools()


async def test_timeout_during_getconn(dsn: str) -> None:
    h = small_pool(dsn, max_size=1)
    release = asyncio.Event()
    held = asyncio.Event()

    async def holder() -> None:
        await h["pooled"].ensure_connection()
        held.set()
        await release.wait()

    task = asyncio.create_task(holder())
    try:
        await held.wait()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await asyncio.create_task(ensure(h))
        release.set()
        await task
        # The timed-out waiter left no trace once the connection came back.
        assert (await settled_stats(h)).get("requests_waiting", 0) == 0
        async with asyncio.timeout(5):
            await asyncio.create_task(pid_of(h))
    finally:
        release.set()
        await asyncio.gather(task, return_exceptions=True)
        await wait_released()
        await h.close_pools()


async def test_pool_timeout_is_distinct_from_cancellation(dsn: str) -> None:
    h = small_pool(dsn, max_size=1, timeout=0.2)
    release = asyncio.Event()
    held = asyncio.Event()

    async def holder() -> None:
        await h["pooled"].ensure_connection()
        held.set()
        await release.wait()

    task = asyncio.create_task(holder())
    try:
        await held.wait()
        with pytest.raises(PoolTimeout, match="max_size=1"):
            await asyncio.create_task(ensure(h))
    finally:
        release.set()
        await asyncio.gather(task, return_exceptions=True)
        await wait_released()
        await h.close_pools()


@pytest.mark.parametrize("alias", ["default", "pooled"])
async def test_slow_query_cancelled_on_client_is_cancelled_on_server(
    dsn: str, alias: str, observer: Any
) -> None:
    h = small_pool(dsn)
    started = asyncio.Event()

    async def slow() -> None:
        async with h[alias].cursor() as cursor:
            started.set()
            await cursor.execute("SELECT pg_sleep(30)")

    try:
        task = asyncio.create_task(slow())
        await started.wait()
        async with asyncio.timeout(10):
            # Polling the server: the query is running there.
            while True:
                if any(state == "active" for _, state in our_backends(observer)):
                    break
                await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await task
        # The server is not still sleeping for a client that gave up.
        async with asyncio.timeout(10):
            while True:
                rows = observer.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'async-db-tests' "
                    "AND query = 'SELECT pg_sleep(30)' AND state = 'active'"
                ).fetchone()
                if rows == (0,):
                    break
                await asyncio.sleep(0.02)
    finally:
        await wait_released()
        await h.close_pools()


@pytest.fixture
def pooled_with_health_checks() -> Any:
    from async_db import async_connections

    settings_dict = async_connections.settings["pooled"]
    settings_dict["CONN_HEALTH_CHECKS"] = True
    try:
        yield
    finally:
        settings_dict["CONN_HEALTH_CHECKS"] = False


@pytest.mark.slow
async def test_backends_terminated_during_load(
    table: str, observer: Any, global_pools: None, pooled_with_health_checks: None
) -> None:
    from django.db import InterfaceError, OperationalError

    from async_db import async_atomic, async_connections

    outcomes: dict[str, str] = {}
    terminate = asyncio.Event()

    async def block(name: str) -> None:
        try:
            async with (
                async_atomic(using="pooled"),
                async_connections["pooled"].cursor() as cursor,
            ):
                await cursor.execute(
                    f"INSERT INTO {table} (name, value) VALUES (%s, 1)", [name]
                )
                await cursor.execute("SELECT pg_sleep(0.002)")
                await cursor.execute(
                    f"INSERT INTO {table} (name, value) VALUES (%s, 2)",
                    [name + "'"],
                )
            outcomes[name] = "committed"
        except (OperationalError, InterfaceError):
            outcomes[name] = "failed"

    async def worker(w: int) -> None:
        for i in range(40):
            await asyncio.create_task(block(f"w{w}-{i}"))
            if w == 0 and i == 10:
                terminate.set()

    killed: list[Any] = []

    async def terminator() -> None:
        await terminate.wait()
        # Kill, in one statement, backends caught inside a transaction (a block
        # in flight: its next query or COMMIT must fail); retry until one is.
        while True:
            hit = observer.execute(
                "SELECT pid, state, pg_terminate_backend(pid) "
                "FROM pg_stat_activity WHERE application_name LIKE 'async-db-tests%' "
                "AND state = 'idle in transaction'"
            ).fetchall()
            killed.extend(hit)
            if hit:
                break
            await asyncio.sleep(0.001)
        # Then every other backend of ours, idle in the pool or not.
        killed.extend(
            observer.execute(
                "SELECT pid, state, pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'async-db-tests%'"
            ).fetchall()
        )

    async with asyncio.timeout(120):
        await asyncio.gather(terminator(), *(worker(w) for w in range(20)))
    rows = observer.execute(f"SELECT name FROM {table}").fetchall()
    names = {name for (name,) in rows}
    failed = [n for n, o in outcomes.items() if o == "failed"]
    assert failed, f"the termination hit no in-flight block: {killed}"
    for name, outcome in outcomes.items():
        pair = {name, name + "'"} & names
        # All or nothing, for every block; committed blocks are all there.
        assert len(pair) in (0, 2), name
        if outcome == "committed":
            assert len(pair) == 2, name
    # Later work succeeds, nothing restarted.
    await asyncio.create_task(block("after"))
    assert outcomes["after"] == "committed"


@pytest.mark.slow
@pytest.mark.embedded
async def test_server_restart_during_load(
    table: str,
    observer: Any,
    embedded_server: Any,
    global_pools: None,
    pooled_with_health_checks: None,
) -> None:
    from django.db import DatabaseError

    from async_db import async_atomic, async_connections

    outcomes: dict[str, str] = {}
    stop = asyncio.Event()

    async def block(alias: str, name: str) -> None:
        try:
            async with (
                async_atomic(using=alias),
                async_connections[alias].cursor() as cursor,
            ):
                await cursor.execute(f"INSERT INTO {table} (name) VALUES (%s)", [name])
                await cursor.execute("SELECT pg_sleep(0.005)")
                await cursor.execute(
                    f"INSERT INTO {table} (name) VALUES (%s)", [name + "'"]
                )
            outcomes[name] = "committed"
        except DatabaseError:  # OperationalError, InterfaceError, PoolTimeout
            outcomes[name] = "failed"

    async def worker(alias: str, w: int) -> None:
        i = 0
        while not stop.is_set():
            await asyncio.create_task(block(alias, f"{alias}-{w}-{i}"))
            i += 1
            await asyncio.sleep(0)

    workers = [
        asyncio.create_task(worker(alias, w))
        for alias in ("default", "pooled")
        for w in range(5)
    ]
    try:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(embedded_server.restart)
        # Work resumes by itself: wait (bounded) for new commits on both aliases.
        async with asyncio.timeout(60):
            while True:
                done = {
                    n.split("-")[0]
                    for n, o in list(outcomes.items())[-20:]
                    if o == "committed"
                }
                if done >= {"default", "pooled"}:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
    assert any(o == "failed" for o in outcomes.values()), "the restart hit nothing"
    rows = observer.execute(f"SELECT name FROM {table}").fetchall()
    names = {name for (name,) in rows}
    for name, outcome in outcomes.items():
        pair = {name, name + "'"} & names
        assert len(pair) in (0, 2), name
        if outcome == "committed":
            assert len(pair) == 2, name


@pytest.fixture
def pooled_ten() -> Any:
    """The global 'pooled' alias with a 10-connection pool for this test."""
    from async_db import async_connections

    options = async_connections.settings["pooled"]["OPTIONS"]
    saved = options["pool"]
    options["pool"] = {"min_size": 2, "max_size": 10, "timeout": 60}
    try:
        yield
    finally:
        options["pool"] = saved


@pytest.mark.slow
async def test_load_thousand_tasks_mixed_work(
    table: str, observer: Any, global_pools: None, pooled_ten: None
) -> None:
    import gc
    import random
    import tracemalloc

    from django.db import IntegrityError

    from async_db import async_atomic, async_connections

    peak = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, len(our_backends(observer, POOLED_APP_NAME)))
            await asyncio.sleep(0.01)

    async def one(i: int, expected: dict[str, int]) -> None:
        conn = async_connections["pooled"]
        kind = i % 4
        if kind == 0:  # read
            async with conn.cursor() as cursor:
                await cursor.execute(f"SELECT count(*) FROM {table}")
                await cursor.fetchone()
        elif kind == 1:  # autocommit write
            async with conn.cursor() as cursor:
                await cursor.execute(
                    f"INSERT INTO {table} (name, value) VALUES (%s, %s)", [f"w{i}", i]
                )
            expected[f"w{i}"] = i
        else:  # a short block: two writes; every 7th rolls back
            try:
                async with async_atomic(using="pooled"):
                    async with conn.cursor() as cursor:
                        for suffix in ("a", "b"):
                            await cursor.execute(
                                f"INSERT INTO {table} (name, value) VALUES (%s, %s)",
                                [f"t{i}{suffix}", i],
                            )
                    if i % 7 == 0:
                        raise IntegrityError("business rule says no")
                expected[f"t{i}a"] = expected[f"t{i}b"] = i
            except IntegrityError:
                pass

    async def round_(r: int) -> dict[str, int]:
        expected: dict[str, int] = {}
        order = list(range(r * 1000, (r + 1) * 1000))
        random.Random(r).shuffle(order)
        async with asyncio.timeout(120):
            await asyncio.gather(*(one(i, expected) for i in order))
        return expected

    watcher = asyncio.create_task(watch())
    tracemalloc.start()
    try:
        sizes = []
        committed: dict[str, int] = {}
        for r in range(4):
            committed.update(await round_(r))
            await wait_released()
            gc.collect()
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
        stop.set()
        await watcher
    count, total = observer.execute(
        f"SELECT count(*), coalesce(sum(value), 0) FROM {table}"
    ).fetchone()
    assert count == len(committed)
    assert total == sum(committed.values())
    assert 1 <= peak <= 10
    # No growth across rounds once warm (round 1 -> round 3): under 1 MiB.
    assert sizes[3] - sizes[1] < 1024 * 1024, sizes


async def test_unreachable_host_is_bounded_by_connect_timeout() -> None:
    import socket

    from django.db import OperationalError

    from async_db import AsyncConnectionHandler

    # A local socket that accepts TCP connections and never answers: libpq
    # waits for the server's reply until connect_timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        h = AsyncConnectionHandler(
            {
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": "test",
                    "USER": "postgres",
                    "PASSWORD": "secret-password",
                    "HOST": "127.0.0.1",
                    "PORT": str(port),
                    "OPTIONS": {"connect_timeout": 1},
                }
            }
        )
        with pytest.raises(OperationalError) as info:
            async with asyncio.timeout(15):  # a hang fails; connect_timeout is 1 s
                await h["default"].ensure_connection()
        assert "timeout" in str(info.value).lower()
        assert "secret-password" not in str(info.value)
        assert h["default"].connection is None
    finally:
        silent.close()
