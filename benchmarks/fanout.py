"""Fan-out inside a request: three independent 10 ms queries, in a row or at once.

A *request* is one task (as an ASGI server runs each request) that needs three
independent results, each from ``SELECT pg_sleep(0.01)``. It runs them either
``sequential``ly on the request's connection, or through ``asyncio.gather``
of three child tasks. With async-db every child gets a connection of its own
(from the pool, or opened for it when unpooled), so the three sleeps overlap;
the pools of the references do the same with ``pool.connection()`` /
``pool.acquire()`` per child; ``sync_to_async`` children queue for Django's one
thread and cannot overlap.

Timed: from creating the request task to its end (what a client waits for).
Untimed between requests: async-db's end-of-task releases are awaited, so one
request never pays for another's. Reported: median latency in milliseconds
and the speed-up of ``gather`` over ``sequential`` for each contender.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from asgiref.sync import sync_to_async

from async_db import _storage
from benchmarks._env import (
    ASYNCPG,
    DJANGO_ALIAS,
    OURS,
    OURS_UNPOOLED,
    POOLED_ALIAS,
    PSYCOPG,
    SYNC,
    UNPOOLED_ALIAS,
    Bench,
)
from benchmarks._harness import (
    RunConfig,
    ScenarioResult,
    Spread,
    Table,
    alternating,
    collect_garbage,
    fmt_ratio,
    progress,
    rows_with_gaps,
    spread_json,
)

NAME = "fanout"
TITLE = "three independent 10 ms queries in one request: sequential vs gather"

ROUNDS = {"quick": 4, "default": 15, "full": 40}
QUERIES = 3
SLEEP_SQL = "SELECT pg_sleep(0.01)"
MODES = ("sequential", "gather")

#: One query on a given connection source; a request runs three.
Query = Callable[[], Awaitable[Any]]
Request = Callable[[], Coroutine[Any, Any, None]]


def _django_sleep() -> Any:
    from django.db import connections

    with connections[DJANGO_ALIAS].cursor() as cursor:
        cursor.execute(SLEEP_SQL)
        return cursor.fetchone()


django_sleep = sync_to_async(_django_sleep)


def requests(bench: Bench) -> dict[tuple[str, str], Request]:
    """(contender, mode) -> one request."""
    pool, apg_pool = bench.pool, bench.asyncpg_pool

    async def on_psycopg(conn: Any) -> None:
        async with conn.cursor() as cur:
            await cur.execute(SLEEP_SQL)
            await cur.fetchone()

    def ours(alias: str) -> Query:
        async def query() -> None:
            from async_db import async_connections

            await on_psycopg(async_connections[alias])

        return query

    async def psycopg_child() -> None:
        async with pool.connection() as conn:
            await on_psycopg(conn)

    async def asyncpg_child() -> None:
        async with apg_pool.acquire() as conn:
            await conn.fetchrow(SLEEP_SQL)

    async def psycopg_sequential() -> None:
        async with pool.connection() as conn:
            for _ in range(QUERIES):
                await on_psycopg(conn)

    async def asyncpg_sequential() -> None:
        async with apg_pool.acquire() as conn:
            for _ in range(QUERIES):
                await conn.fetchrow(SLEEP_SQL)

    def sequential(query: Query) -> Request:
        async def request() -> None:
            for _ in range(QUERIES):
                await query()

        return request

    def gather(query: Query) -> Request:
        async def request() -> None:
            await asyncio.gather(*(query() for _ in range(QUERIES)))

        return request

    return {
        (PSYCOPG, "sequential"): psycopg_sequential,
        (PSYCOPG, "gather"): gather(psycopg_child),
        (OURS, "sequential"): sequential(ours(POOLED_ALIAS)),
        (OURS, "gather"): gather(ours(POOLED_ALIAS)),
        (OURS_UNPOOLED, "sequential"): sequential(ours(UNPOOLED_ALIAS)),
        (OURS_UNPOOLED, "gather"): gather(ours(UNPOOLED_ALIAS)),
        (SYNC, "sequential"): sequential(django_sleep),
        (SYNC, "gather"): gather(django_sleep),
        (ASYNCPG, "sequential"): asyncpg_sequential,
        (ASYNCPG, "gather"): gather(asyncpg_child),
    }


async def time_request(request: Request) -> float:
    """Milliseconds from creating the request's task to its end."""
    await _storage.wait_released()
    collect_garbage()
    start = time.perf_counter()
    await asyncio.create_task(request())
    return (time.perf_counter() - start) * 1000


async def measure(
    bench: Bench, config: RunConfig
) -> dict[tuple[str, str], list[float]]:
    variants = requests(bench)
    rounds = config.rounds_for(ROUNDS)
    progress.step(f"{NAME}: warm-up")
    for request in variants.values():
        await time_request(request)
    await bench.ours_pool_full()
    progress.step(f"{NAME}: {len(variants)} variants, {rounds} rounds")
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in variants}
    for r in range(rounds):
        progress.detail(f"round {r + 1}/{rounds}")
        for key in alternating(list(variants), r):
            samples[key].append(await time_request(variants[key]))
    await _storage.wait_released()
    return samples


def table(samples: dict[tuple[str, str], list[float]]) -> Table:
    contenders = list(dict.fromkeys(name for name, _ in samples))
    blocks = []
    for name in contenders:
        seq = Spread.of(samples[(name, "sequential")]).median
        block = []
        for i, mode in enumerate(MODES):
            spread = Spread.of(samples[(name, mode)])
            block.append(
                [
                    name if i == 0 else "",
                    mode,
                    f"{spread.median:.1f}",
                    f"{spread.q1:.1f} - {spread.q3:.1f}",
                    f"{spread.min:.1f} - {spread.max:.1f}",
                    fmt_ratio(seq / spread.median),
                ]
            )
        blocks.append(block)
    return Table(
        "",
        ["contender", "mode", "median ms", "IQR", "min - max", "vs sequential"],
        rows_with_gaps(blocks),
    )


async def run(dsn: str, config: RunConfig) -> ScenarioResult:
    progress.step(f"{NAME}: setup")
    async with Bench(dsn) as bench:
        samples = await asyncio.create_task(measure(bench, config))
        version = bench.server_version
    rounds = config.rounds_for(ROUNDS)
    data: dict[str, Any] = {
        "unit": "ms_per_request",
        "queries": QUERIES,
        "sql": SLEEP_SQL,
        "rounds": rounds,
        "contenders": {
            name: {mode: spread_json(samples[(name, mode)]) for mode in MODES}
            for name in dict.fromkeys(name for name, _ in samples)
        },
    }
    return ScenarioResult(
        NAME,
        TITLE,
        [],
        version,
        tables=[table(samples)],
        method=f"{rounds} rounds, one request per variant per round, alternating",
        data=data,
    )
