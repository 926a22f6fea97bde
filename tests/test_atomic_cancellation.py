"""A task cancelled at any await inside an atomic block: nothing half
committed, nothing idle in transaction, the connection clean or discarded,
the CancelledError propagated, and the alias usable by the next task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from async_db import async_atomic, async_connections
from async_db._storage import wait_released
from async_db.transaction import on_commit
from tests.cancellation import PAIRS, CancelInjector, count_waits, run_cancelled_at
from tests.fix_db import POOLED_APP_NAME, await_backends, our_backends


async def insert(alias: str, table: str, name: str) -> None:
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute(f"INSERT INTO {table} (name) VALUES (%s)", [name])


def scenarios(alias: str, table: str) -> dict[str, tuple[Any, list[list[str]]]]:
    """name -> (scenario, the committed outcomes allowed after a cancel)."""

    async def commit(injector: CancelInjector) -> None:
        await async_connections[alias].ensure_connection()
        injector.arm()
        async with async_atomic(using=alias):
            await insert(alias, table, "a")
            await insert(alias, table, "b")

    async def nested(injector: CancelInjector) -> None:
        await async_connections[alias].ensure_connection()
        injector.arm()
        async with async_atomic(using=alias):
            await insert(alias, table, "a")
            async with async_atomic(using=alias):
                await insert(alias, table, "b")
            with pytest.raises(ValueError):
                async with async_atomic(using=alias):
                    await insert(alias, table, "x")
                    raise ValueError
            await insert(alias, table, "c")

    async def failing(injector: CancelInjector) -> None:
        await async_connections[alias].ensure_connection()
        injector.arm()
        with pytest.raises(ValueError, match="rolled back anyway"):
            async with async_atomic(using=alias):
                await insert(alias, table, "a")
                async with async_atomic(using=alias):
                    await insert(alias, table, "b")
                    raise ValueError("rolled back anyway")

    async def hook(injector: CancelInjector) -> None:
        async def write_after_commit() -> None:
            await insert(alias, table, "hook")

        await async_connections[alias].ensure_connection()
        injector.arm()
        async with async_atomic(using=alias):
            await insert(alias, table, "a")
            await on_commit(write_after_commit, using=alias)

    return {
        # A cancel that arrives once COMMIT is on the wire cannot undo it: the
        # server decides; all or nothing, never part.
        "commit": (commit, [[], ["a", "b"]]),
        "savepoints": (nested, [[], ["a", "b", "c"]]),
        "failing": (failing, [[]]),
        "on_commit hook": (hook, [[], ["a"], ["a", "hook"]]),
    }


def committed(observer: Any, table: str) -> list[str]:
    rows = observer.execute(f"SELECT name FROM {table} ORDER BY id").fetchall()
    return [name for (name,) in rows]


async def settle(alias: str) -> None:
    """Wait for task-end releases and, for a pool, for its resets."""
    await wait_released()
    pool = async_connections.pools.peek(alias)
    if pool is not None:
        async with asyncio.timeout(5):
            while True:
                stats = pool.get_stats()
                if stats["pool_size"] == stats["pool_available"]:
                    return
                await asyncio.sleep(0.005)


@pytest.mark.parametrize("alias", ["default", "pooled"])
@pytest.mark.parametrize("name", ["commit", "savepoints", "failing", "on_commit hook"])
async def test_cancel_at_every_wait(
    alias: str,
    name: str,
    table: str,
    observer: Any,
    monkeypatch: pytest.MonkeyPatch,
    global_pools: None,
) -> None:
    scenario, allowed = scenarios(alias, table)[name]
    injector = CancelInjector(monkeypatch)
    points = await count_waits(injector, scenario)
    assert points >= 3, f"{name}: only {points} waits counted"
    for point in range(1, points + 1):
        observer.execute(f"TRUNCATE {table}")
        raised = await run_cancelled_at(injector, scenario, point)
        where = f"{name} on {alias!r}, cancelled at wait {point}/{points}"
        PAIRS.append((f"atomic {name} ({alias})", point))
        assert isinstance(raised, asyncio.CancelledError), f"{where}: {raised!r}"
        await settle(alias)
        assert committed(observer, table) in allowed, where
        states = [state for _, state in our_backends(observer)]
        states += [state for _, state in our_backends(observer, POOLED_APP_NAME)]
        assert not any("in transaction" in s for s in states), f"{where}: {states}"
        if alias == "default":
            assert await await_backends(observer, 0) == [], where

        # The next task on the alias works and commits.
        async def next_task() -> None:
            async with async_atomic(using=alias):
                await insert(alias, table, "next")

        await asyncio.create_task(next_task())
        assert "next" in committed(observer, table), where
        await settle(alias)
