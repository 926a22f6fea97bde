"""Cancellation at every yield of a task: connect, pool wait, query, fetch,
server-side cursor, new_connections() exit, task-end release.

A sibling task cancels the scenario after k turns of the event loop, for
k = 1, 2, ... until the scenario completes before the cancel: every suspension
point is hit, whatever code (ours, psycopg, psycopg_pool) it is in. After each
cancellation: the CancelledError propagated, nothing leaked on the server, no
backend idle in transaction, the pool back to idle with no waiter, and the
next task on each alias works.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from async_db import async_atomic, async_connections, new_connections
from async_db._storage import wait_released
from tests.cancellation import (
    PAIRS,
    CancelInjector,
    count_waits,
    run_cancelled_after_yields,
    run_cancelled_at,
)
from tests.fix_db import POOLED_APP_NAME, await_backends, our_backends

YIELDS = [*range(1, 40), *range(40, 3000, 20)]


async def select_one(alias: str) -> None:
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute("SELECT 1")
        assert await cursor.fetchone() == (1,)


async def first_connect(_: Any) -> None:
    await async_connections["default"].ensure_connection()
    await select_one("default")


async def pool_getconn(_: Any) -> None:
    await select_one("pooled")


async def execute_and_fetch(_: Any) -> None:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute(
            "SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g"
        )
        assert len(await cursor.fetchmany(10)) == 10
        assert len(await cursor.fetchall()) == 1990


async def server_side_cursor(_: Any) -> None:
    async with async_atomic(), async_connections["default"].chunked_cursor() as cursor:
        await cursor.execute("SELECT g FROM generate_series(1, 500) g")
        total = 0
        while rows := await cursor.fetchmany(100):
            total += len(rows)
        assert total == 500


async def new_connections_exit(_: Any) -> None:
    await select_one("pooled")
    async with new_connections():
        await select_one("default")
        await select_one("pooled")
    await select_one("pooled")


async def task_end_release(_: Any) -> None:
    async def child() -> None:
        await select_one("default")
        async with async_atomic(using="pooled"):
            await select_one("pooled")

    await asyncio.gather(child(), child())


SCENARIOS = {
    "first connect": first_connect,
    "pool getconn": pool_getconn,
    "execute and fetch": execute_and_fetch,
    "server-side cursor": server_side_cursor,
    "new_connections() exit": new_connections_exit,
    "task-end release": task_end_release,
}


async def settled_pool() -> dict[str, int] | None:
    await wait_released()
    pool = async_connections.pools.peek("pooled")
    if pool is None:
        return None
    async with asyncio.timeout(5):
        while True:
            stats = dict(pool.get_stats())
            if stats["pool_size"] == stats["pool_available"]:
                return stats
            await asyncio.sleep(0.002)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_cancel_at_every_yield(
    name: str, observer: Any, global_pools: None
) -> None:
    scenario = SCENARIOS[name]
    delivered_any = False
    for yields in YIELDS:
        delivered, raised = await run_cancelled_after_yields(scenario, yields)
        where = f"{name}, cancelled after {yields} loop turns"
        if not delivered:
            assert raised is None, f"{where}: {raised!r}"
            break
        delivered_any = True
        PAIRS.append((name, yields))
        assert isinstance(raised, asyncio.CancelledError), f"{where}: {raised!r}"
        stats = await settled_pool()
        if stats is not None:
            assert stats.get("requests_waiting", 0) == 0, where
            assert stats["pool_size"] <= 4, where
        # Unpooled connections are gone; pooled ones are idle (or a pool
        # worker's new connection still starting up: state '').
        assert await await_backends(observer, 0) == [], where
        states = [state for _, state in our_backends(observer, POOLED_APP_NAME)]
        assert set(states) <= {"idle", ""}, f"{where}: {states}"

        async def next_task() -> None:
            await select_one("default")
            await select_one("pooled")

        await asyncio.create_task(next_task())
    else:
        pytest.fail(f"{name} never completed within {YIELDS[-1]} loop turns")
    assert delivered_any, f"{name}: no cancel point was reached"


def chunked_scenario(alias: str, in_atomic: bool, opened: list[Any]) -> Any:
    """A chunked read on ``alias`` that keeps each driver cursor in
    ``opened``, so the test can check it was closed whatever the cancel hit."""

    async def read() -> None:
        async with async_connections[alias].chunked_cursor() as cursor:
            await cursor.execute("SELECT g FROM generate_series(1, 300) g")
            opened.append(cursor.cursor)
            total = 0
            while rows := await cursor.fetchmany(100):
                total += len(rows)
            assert total == 300

    async def scenario(injector: CancelInjector) -> None:
        await async_connections[alias].ensure_connection()
        injector.arm()
        if in_atomic:
            async with async_atomic(using=alias):
                await read()
        else:
            await read()

    return scenario


@pytest.mark.parametrize("alias", ["default", "pooled"])
@pytest.mark.parametrize("in_atomic", [False, True], ids=["autocommit", "atomic"])
async def test_server_side_cursor_cancelled_at_every_wait(
    alias: str,
    in_atomic: bool,
    observer: Any,
    monkeypatch: pytest.MonkeyPatch,
    global_pools: None,
) -> None:
    """Cancelled at any network wait, its CLOSE included, the driver cursor
    ends closed (a cursor left open would raise ResourceWarning when
    collected, long after: this asserts it where it happens), nothing stays
    idle in transaction and the server holds no cursor of ours."""
    opened: list[Any] = []
    scenario = chunked_scenario(alias, in_atomic, opened)
    injector = CancelInjector(monkeypatch)
    points = await count_waits(injector, scenario)
    assert points >= 4, f"only {points} waits counted"  # DECLARE, 3+ FETCH, CLOSE
    for point in range(1, points + 1):
        opened.clear()
        raised = await run_cancelled_at(injector, scenario, point)
        where = f"{alias!r} {'atomic' if in_atomic else 'autocommit'}, wait {point}"
        PAIRS.append((f"chunked cursor ({alias})", point))
        assert isinstance(raised, asyncio.CancelledError), f"{where}: {raised!r}"
        assert all(cursor.closed for cursor in opened), where
        await settled_pool()
        states = [state for _, state in our_backends(observer)]
        states += [state for _, state in our_backends(observer, POOLED_APP_NAME)]
        assert not any("in transaction" in s for s in states), f"{where}: {states}"

        async def server_cursors() -> int:
            async with async_connections[alias].cursor() as cursor:
                await cursor.execute("SELECT count(*) FROM pg_cursors")
                row = await cursor.fetchone()
                assert row is not None
                return int(row[0])

        # The next task on the alias works and finds no cursor left over.
        assert await asyncio.create_task(server_cursors()) == 0, where
