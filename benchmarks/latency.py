"""Sequential latency: one task, one connection per contender, every contender.

``micro`` measures our cursor against bare psycopg with high precision; this
scenario puts the same round trips next to the other ways a Django project can
query from async code. One task runs, per contender, sequential queries on a
connection held for the whole scenario (taken from its pool once, so no
acquisition is timed):

* ``SELECT 1`` (no ORM: there is no model to ask), and
* the point lookup ``SELECT id, name FROM bench_items_<run> WHERE id = %s``
  (the ORM asks ``Item.objects.aget(pk=...)``, which runs the same query plus
  Django's ``LIMIT 21``).

``async-db pooled`` holds a connection of its pool, so the unpooled alias
would measure the very same code: it is left out. Fairness as in ``micro``:
the same ids for every contender in a round, order reversed every other round,
a warm-up batch first, all connections opened before anything is timed.
Reported: median microseconds per query, and speed relative to the psycopg
pool and to ``sync_to_async`` (``2.00x``: twice as fast).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from asgiref.sync import sync_to_async

from benchmarks._env import (
    ASYNCPG,
    DJANGO_ALIAS,
    DJANGO_BASELINE,
    ORM,
    OURS,
    POINT_SQL,
    POINT_SQL_ASYNCPG,
    POOLED_ALIAS,
    PSYCOPG,
    REFERENCE,
    ROWS,
    SYNC,
    Bench,
)
from benchmarks._harness import (
    BatchRunner,
    RunConfig,
    ScenarioResult,
    Spread,
    Table,
    fmt_ratio,
    median_ratios,
    progress,
    round_ratios,
    rows_with_gaps,
    run_rounds,
    spread_json,
)
from benchmarks.micro import random_ids

NAME = "latency"
TITLE = "sequential round trips, one task, every contender"

ROUNDS = {"quick": 4, "default": 12, "full": 40}
BATCH = {"quick": 100, "default": 200, "full": 500}

#: (query name, psycopg/Django SQL, asyncpg SQL, whether the ORM takes part).
QUERIES = (
    ("SELECT 1", "SELECT 1", "SELECT 1", False),
    ("point lookup", POINT_SQL, POINT_SQL_ASYNCPG, True),
)


def _django_query(sql: str, params: Any) -> Any:
    from django.db import connections

    with connections[DJANGO_ALIAS].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


django_query = sync_to_async(_django_query)


def runners(
    bench_conns: dict[str, Any], sql: str, apg_sql: str, with_orm: bool
) -> dict[str, BatchRunner]:
    """One batch runner per contender, psycopg first."""
    from benchmarks.benchapp.models import Item

    def cursor_loop(conn: Any) -> BatchRunner:
        # Identical code for psycopg and async-db, as in micro.
        async def run(params: Sequence[Any]) -> None:
            for p in params:
                async with conn.cursor() as cur:
                    await cur.execute(sql, p)
                    await cur.fetchone()

        return run

    async def sync(params: Sequence[Any]) -> None:
        for p in params:
            await django_query(sql, p)

    async def orm(params: Sequence[Any]) -> None:
        for p in params:
            await Item.objects.aget(pk=p[0])

    apg = bench_conns[ASYNCPG]

    async def asyncpg_run(params: Sequence[Any]) -> None:
        for p in params:
            await apg.fetchrow(apg_sql, *(p or ()))

    out: dict[str, BatchRunner] = {
        PSYCOPG: cursor_loop(bench_conns[PSYCOPG]),
        OURS: cursor_loop(bench_conns[OURS]),
        SYNC: sync,
    }
    if with_orm:
        out[ORM] = orm
    out[ASYNCPG] = asyncpg_run
    return out


async def check_same_rows(conns: dict[str, Any]) -> None:
    """Every contender reads the same row for the same id (untimed)."""
    from benchmarks.benchapp.models import Item

    pk = ROWS // 2
    got: dict[str, Any] = {}
    for name in (PSYCOPG, OURS):
        async with conns[name].cursor() as cur:
            await cur.execute(POINT_SQL, [pk])
            got[name] = await cur.fetchone()
    got[SYNC] = await django_query(POINT_SQL, [pk])
    item = await Item.objects.aget(pk=pk)
    got[ORM] = (item.id, item.name)
    got[ASYNCPG] = tuple(await conns[ASYNCPG].fetchrow(POINT_SQL_ASYNCPG, pk))
    if len({tuple(row) for row in got.values()}) != 1:
        raise AssertionError(f"contenders disagree: {got!r}")


async def measure(bench: Bench, config: RunConfig) -> dict[str, dict[str, list[float]]]:
    """Run in a task of its own: async-db's connection belongs to it and is
    released when it ends."""
    from async_db import async_connections

    batch = config.batch_for(BATCH)
    rounds = RunConfig(rounds=config.rounds_for(ROUNDS), batch=batch)
    results: dict[str, dict[str, list[float]]] = {}
    async with bench.pool.connection() as pconn, bench.asyncpg_pool.acquire() as aconn:
        ours = async_connections[POOLED_ALIAS]
        await ours.ensure_connection()
        conns = {PSYCOPG: pconn, OURS: ours, ASYNCPG: aconn}
        await check_same_rows(conns)
        for name, sql, apg_sql, with_orm in QUERIES:
            progress.step(f"{NAME}: {name}")
            contenders = runners(conns, sql, apg_sql, with_orm)
            params = (
                (lambda r: random_ids(r, batch))
                if with_orm
                else (lambda r: [None] * batch)
            )
            results[name] = await run_rounds(contenders, params, rounds)
    return results


def table(results: dict[str, dict[str, list[float]]]) -> Table:
    blocks = []
    for query, samples in results.items():
        # Speed is the inverse of time: reference time / contender time.
        vs_ref = round_ratios(samples, REFERENCE, invert=True)
        vs_sync = round_ratios(samples, DJANGO_BASELINE, invert=True)
        block = []
        for i, (name, values) in enumerate(samples.items()):
            spread = Spread.of(values)
            block.append(
                [
                    query if i == 0 else "",
                    name,
                    f"{spread.median:.1f}",
                    f"{spread.q1:.1f} - {spread.q3:.1f}",
                    fmt_ratio(vs_ref[name]),
                    fmt_ratio(vs_sync[name]),
                ]
            )
        blocks.append(block)
    return Table(
        "",
        [
            "query",
            "contender",
            "median us/q",
            "IQR",
            f"speed vs {REFERENCE}",
            f"vs {DJANGO_BASELINE}",
        ],
        rows_with_gaps(blocks),
    )


async def run(dsn: str, config: RunConfig) -> ScenarioResult:
    progress.step(f"{NAME}: setup")
    async with Bench(dsn) as bench:
        results = await asyncio.create_task(measure(bench, config))
        version = bench.server_version
    rounds, batch = config.rounds_for(ROUNDS), config.batch_for(BATCH)
    data = {
        "unit": "us_per_query",
        "rounds": rounds,
        "batch": batch,
        "queries": {
            query: {
                "contenders": {name: spread_json(v) for name, v in samples.items()},
                "speed_vs_reference": round_ratios(samples, REFERENCE, invert=True),
                "speed_vs_reference_of_medians": {
                    name: 1 / ratio
                    for name, ratio in median_ratios(samples, REFERENCE).items()
                },
            }
            for query, samples in results.items()
        },
    }
    return ScenarioResult(
        NAME,
        TITLE,
        [],
        version,
        tables=[table(results)],
        method=(
            f"{rounds} rounds x {batch} queries per contender, alternating, "
            f"connection held"
        ),
        notes=[
            "speed: median over rounds of (reference time / contender time); "
            "2.00x is twice as fast"
        ],
        data=data,
    )
