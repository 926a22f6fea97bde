"""Short transactions: 100 tasks at once, each committing 20 small transactions.

Each transaction inserts an event row and increments its task's counter row
(``INSERT``, then ``UPDATE ... SET n = n + 1``; one counter per task, so tasks
never wait on each other's row locks). Contenders, on pools of
:data:`~benchmarks._env.POOL_SIZE`:

* ``psycopg pool``: ``async with pool.connection()`` per task, then
  ``async with conn.transaction():`` per transaction;
* ``async-db pooled``: ``async with async_atomic(using="pooled"):`` and
  ``async_connections["pooled"].cursor()`` (the connection is the task's own);
* ``sync_to_async``: one ``sync_to_async`` call per transaction, of a function
  using Django's sync ``transaction.atomic`` and cursor;
* ``asyncpg pool`` (reference): ``async with conn.transaction():``.

All run BEGIN, INSERT, UPDATE, COMMIT: four round trips per transaction.
``async-db unpooled`` is left out: 100 tasks would need 100 connections.

Untimed between samples: both tables are emptied and the counters recreated,
so every sample starts from the same state; after each sample the rows are
checked (one event per committed transaction, counters summing to it).
Reported: median committed transactions per second, speed relative to the
psycopg pool and to ``sync_to_async``, peak backends, failed tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async

from async_db import _storage
from benchmarks._env import (
    APP_NAMES,
    ASYNCPG,
    DJANGO_ALIAS,
    DJANGO_BASELINE,
    OURS,
    POOLED_ALIAS,
    PSYCOPG,
    REFERENCE,
    RUN_TAG,
    SYNC,
    Bench,
)
from benchmarks._harness import (
    RunConfig,
    ScenarioResult,
    Spread,
    Table,
    alternating,
    collect_garbage,
    fmt_number,
    fmt_ratio,
    median_ratios,
    progress,
    round_ratios,
    spread_json,
)

NAME = "transactions"
TITLE = "short transactions (insert + update), 100 concurrent tasks, pool size 20"

TASKS = 100
TRANSACTIONS = {"quick": 5, "default": 20, "full": 20}
ROUNDS = {"quick": 2, "default": 4, "full": 12}

EVENTS = f"bench_tx_events_{RUN_TAG}"
COUNTERS = f"bench_tx_counters_{RUN_TAG}"
INSERT = f"INSERT INTO {EVENTS} (task, seq) VALUES (%s, %s)"
UPDATE = f"UPDATE {COUNTERS} SET n = n + 1 WHERE task = %s"
INSERT_ASYNCPG = f"INSERT INTO {EVENTS} (task, seq) VALUES ($1, $2)"
UPDATE_ASYNCPG = f"UPDATE {COUNTERS} SET n = n + 1 WHERE task = $1"

#: The body of one task: ``(task number, transactions)``; returns commits.
TxBody = Callable[[int, int], Coroutine[Any, Any, int]]


def _django_transaction(task: int, seq: int) -> None:
    from django.db import connections, transaction

    with (
        transaction.atomic(using=DJANGO_ALIAS),
        connections[DJANGO_ALIAS].cursor() as cursor,
    ):
        cursor.execute(INSERT, [task, seq])
        cursor.execute(UPDATE, [task])


django_transaction = sync_to_async(_django_transaction)


def bodies(bench: Bench) -> dict[str, TxBody]:
    pool, apg_pool = bench.pool, bench.asyncpg_pool

    async def psycopg_pool(task: int, count: int) -> int:
        async with pool.connection() as conn:
            for seq in range(count):
                async with conn.transaction(), conn.cursor() as cur:
                    await cur.execute(INSERT, [task, seq])
                    await cur.execute(UPDATE, [task])
        return count

    async def ours(task: int, count: int) -> int:
        from async_db import async_atomic, async_connections

        for seq in range(count):
            async with (
                async_atomic(using=POOLED_ALIAS),
                async_connections[POOLED_ALIAS].cursor() as cur,
            ):
                await cur.execute(INSERT, [task, seq])
                await cur.execute(UPDATE, [task])
        return count

    async def sync(task: int, count: int) -> int:
        for seq in range(count):
            await django_transaction(task, seq)
        return count

    async def asyncpg_pool(task: int, count: int) -> int:
        async with apg_pool.acquire() as conn:
            for seq in range(count):
                async with conn.transaction():
                    await conn.execute(INSERT_ASYNCPG, task, seq)
                    await conn.execute(UPDATE_ASYNCPG, task)
        return count

    return {PSYCOPG: psycopg_pool, OURS: ours, SYNC: sync, ASYNCPG: asyncpg_pool}


# ##### Tables #####


async def create_tables(bench: Bench) -> None:
    await bench.admin.execute(
        f"CREATE TABLE {EVENTS} (id bigint GENERATED ALWAYS AS IDENTITY "
        f"PRIMARY KEY, task integer NOT NULL, seq integer NOT NULL)"
    )
    await bench.admin.execute(
        f"CREATE TABLE {COUNTERS} (task integer PRIMARY KEY, n integer NOT NULL)"
    )


async def reset_tables(bench: Bench) -> None:
    await bench.admin.execute(f"TRUNCATE {EVENTS}, {COUNTERS}")
    await bench.admin.execute(
        f"INSERT INTO {COUNTERS} (task, n) SELECT t, 0 FROM generate_series(0, %s) t",
        [TASKS - 1],
    )
    await bench.admin.execute(f"ANALYZE {COUNTERS}")


async def drop_tables(bench: Bench) -> None:
    await bench.admin.execute(f"DROP TABLE IF EXISTS {EVENTS}, {COUNTERS}")


async def check_tables(bench: Bench, committed: int) -> None:
    """One event per committed transaction, counters summing to the same."""
    cur = await bench.admin.execute(
        f"SELECT (SELECT count(*) FROM {EVENTS}), "
        f"(SELECT coalesce(sum(n), 0) FROM {COUNTERS})"
    )
    row = await cur.fetchone()
    if row != (committed, committed):
        raise AssertionError(
            f"after {committed} commits: {row[0] if row else '?'} events, "
            f"counters sum to {row[1] if row else '?'}"
        )


# ##### Measurement #####


@dataclass
class Sample:
    seconds: float
    committed: int
    failed: int
    backends: int
    error: str | None

    @property
    def rate(self) -> float:
        return self.committed / self.seconds


async def run_sample(bench: Bench, name: str, body: TxBody, count: int) -> Sample:
    await reset_tables(bench)
    collect_garbage()
    committed = failed = 0
    error: str | None = None
    async with bench.observer.watch(APP_NAMES[name]) as peak:
        start = time.perf_counter()
        tasks = [asyncio.create_task(body(t, count)) for t in range(TASKS)]
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException):
                failed += 1
                error = error or f"{type(result).__name__}: {result}".split("\n")[0]
            else:
                committed += result
        await _storage.wait_released()
        seconds = time.perf_counter() - start
    if not failed:
        await check_tables(bench, committed)
    return Sample(seconds, committed, failed, peak.backends, error)


async def measure(bench: Bench, config: RunConfig) -> dict[str, list[Sample]]:
    contenders = bodies(bench)
    count = config.pick(TRANSACTIONS)
    rounds = config.rounds_for(ROUNDS)
    progress.step(f"{NAME}: warm-up")
    for name, body in contenders.items():
        await run_sample(bench, name, body, 2)
    await bench.ours_pool_full()
    progress.step(f"{NAME}: {TASKS} tasks x {count} transactions, {rounds} rounds")
    samples: dict[str, list[Sample]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name in alternating(list(contenders), r):
            progress.detail(f"round {r + 1}/{rounds}, {name}")
            samples[name].append(await run_sample(bench, name, contenders[name], count))
    return samples


def table(samples: dict[str, list[Sample]]) -> Table:
    rates = {name: [s.rate for s in values] for name, values in samples.items()}
    vs_ref = round_ratios(rates, REFERENCE)
    vs_sync = round_ratios(rates, DJANGO_BASELINE)
    rows = []
    for name, values in rates.items():
        spread = Spread.of(values)
        rows.append(
            [
                name,
                fmt_number(spread.median),
                f"{fmt_number(spread.q1)} - {fmt_number(spread.q3)}",
                fmt_ratio(vs_ref[name]),
                fmt_ratio(vs_sync[name]),
                str(max(s.backends for s in samples[name])),
                str(sum(s.failed for s in samples[name])),
            ]
        )
    return Table(
        "",
        [
            "contender",
            "transactions/s",
            "IQR",
            f"vs {REFERENCE}",
            f"vs {DJANGO_BASELINE}",
            "backends",
            "failed",
        ],
        rows,
        left=1,
    )


async def run(dsn: str, config: RunConfig) -> ScenarioResult:
    progress.step(f"{NAME}: setup")
    async with Bench(dsn) as bench:
        await create_tables(bench)
        try:
            samples = await asyncio.create_task(measure(bench, config))
        finally:
            await drop_tables(bench)
        version = bench.server_version
    count, rounds = config.pick(TRANSACTIONS), config.rounds_for(ROUNDS)
    rates = {name: [s.rate for s in values] for name, values in samples.items()}
    data: dict[str, Any] = {
        "unit": "transactions_per_second",
        "tasks": TASKS,
        "transactions_per_task": count,
        "rounds": rounds,
        "contenders": {
            name: {
                "rate": spread_json(rates[name]),
                "peak_backends": max(s.backends for s in values),
                "failed_tasks": sum(s.failed for s in values),
                "errors": sorted({s.error for s in values if s.error}),
            }
            for name, values in samples.items()
        },
        "speed_vs_reference": round_ratios(rates, REFERENCE),
        "speed_vs_django": round_ratios(rates, DJANGO_BASELINE),
        "speed_vs_reference_of_medians": median_ratios(rates, REFERENCE),
    }
    return ScenarioResult(
        NAME,
        TITLE,
        [],
        version,
        tables=[table(samples)],
        method=(
            f"{rounds} rounds x {TASKS} tasks x {count} transactions per "
            f"contender, alternating; rows checked after every sample; ratios: "
            f"median of per-round ratios"
        ),
        data=data,
    )
