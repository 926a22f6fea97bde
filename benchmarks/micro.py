"""Micro-benchmark: the per-query cost of our wrapper over bare psycopg 3.

What is measured: sequential round trips in ONE task over ONE connection per
contender, each query as ``async with cursor: execute; fetchone``, for

* ``SELECT 1`` (no parameters: the smallest possible round trip), and
* a parameterized point lookup ``SELECT id, name FROM bench_items_<run> WHERE
  id = %s`` on a 1000-row table created for the run (and dropped after it),
  the id varying within every batch.

Contenders:

* ``psycopg``: a bare ``psycopg.AsyncConnection`` configured as our backend
  configures its own: ``psycopg.AsyncClientCursor`` (client-side binding),
  ``prepare_threshold=None`` (no prepared statements) and autocommit;
* ``async-db``: our ``DatabaseWrapper`` from ``create_connection()``, owned by
  the benchmark task (as the connection handler binds it), ``DEBUG=False``
  (no query logging), doing the same through ``async with conn.cursor()``.

Why it is fair: same process, same event loop, same server, same SQL, and in
each round both contenders run the very same list of ids back to back, in an
order that swaps every round. Both connections are opened and warmed up before
anything is timed. The only difference left is the code between the caller and
psycopg, which is what this benchmark exists to measure: the ratio
async-db/psycopg is that overhead per query, round trip included.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from async_db._embedded import settings_dict_from_dsn
from async_db._engine import create_connection
from benchmarks._harness import (
    BASELINE,
    OURS,
    BatchRunner,
    Comparison,
    RunConfig,
    ScenarioResult,
    configure_django,
    run_rounds,
)

if TYPE_CHECKING:
    from async_db.backends.base.base import BaseAsyncDatabaseWrapper

NAME = "micro"
TITLE = "sequential round trips, one task, one connection per contender"

#: Tags the benchmark's sessions in pg_stat_activity (both contenders).
APP_NAME = "async-db-bench"
#: Unique per run: concurrent runs against one shared database (a developer
#: and CI, say) must not drop each other's table.
TABLE = f"bench_items_{secrets.token_hex(4)}"
ROWS = 1000


# ##### Queries #####


@dataclass(frozen=True)
class Query:
    """A query and the parameters of each of its batches."""

    name: str
    sql: str
    #: ``(round, batch size) -> one parameter set (or None) per query``.
    params: Callable[[int, int], Sequence[Any]]


def no_params(round_: int, size: int) -> list[None]:
    """``SELECT 1`` takes no parameters: ``execute(sql)`` for both contenders."""
    return [None] * size


def random_ids(round_: int, size: int) -> list[list[int]]:
    """Ids spread over the whole table, reproducible per round."""
    rng = random.Random(round_)
    return [[rng.randint(1, ROWS)] for _ in range(size)]


QUERIES = (
    Query("SELECT 1", "SELECT 1", no_params),
    Query("point lookup", f"SELECT id, name FROM {TABLE} WHERE id = %s", random_ids),
)


# ##### Contenders #####


def batch_runner(conn: Any, sql: str) -> BatchRunner:
    """The loop both contenders run, given either connection: identical code,
    so the only difference is what ``conn.cursor()`` returns."""

    async def run(params: Sequence[Any]) -> None:
        for p in params:
            async with conn.cursor() as cur:
                await cur.execute(sql, p)
                await cur.fetchone()

    return run


@asynccontextmanager
async def psycopg_connection(dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A bare psycopg connection with the settings our backend uses."""
    conn = await psycopg.AsyncConnection.connect(
        dsn,
        autocommit=True,
        prepare_threshold=None,
        cursor_factory=psycopg.AsyncClientCursor,
        application_name=APP_NAME,
    )
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def ours_connection(dsn: str) -> AsyncIterator[BaseAsyncDatabaseWrapper]:
    """Our wrapper for ``dsn``, connected, owned by the current task."""
    entry = configure_django(settings_dict_from_dsn(dsn, application_name=APP_NAME))
    conn = create_connection("default", entry, owner=asyncio.current_task())
    await conn.ensure_connection()
    try:
        yield conn
    finally:
        await conn.close()


# ##### Setup and checks #####


async def create_table(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the lookup table with ``ROWS`` rows and fresh statistics."""
    await conn.execute(
        f"CREATE TABLE {TABLE} (id integer PRIMARY KEY, name text NOT NULL)"
    )
    await conn.execute(
        f"INSERT INTO {TABLE} (id, name) "
        f"SELECT i, 'item ' || i FROM generate_series(1, %s) AS i",
        [ROWS],
    )
    await conn.execute(f"ANALYZE {TABLE}")


async def drop_table(conn: psycopg.AsyncConnection[Any]) -> None:
    """Drop the lookup table (also after a failed or partial setup)."""
    await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


def contenders_for(
    base_conn: psycopg.AsyncConnection[Any],
    our_conn: BaseAsyncDatabaseWrapper,
    sql: str,
) -> dict[str, BatchRunner]:
    """Psycopg first: round 0 runs it first, round 1 second, and so on."""
    return {BASELINE: batch_runner(base_conn, sql), OURS: batch_runner(our_conn, sql)}


async def assert_same_results(
    base_conn: psycopg.AsyncConnection[Any], our_conn: BaseAsyncDatabaseWrapper
) -> None:
    """Both contenders must read the same row for the same id (untimed)."""
    sql = QUERIES[1].sql
    async with base_conn.cursor() as cur:
        await cur.execute(sql, [ROWS // 2])
        expected = await cur.fetchone()
    async with our_conn.cursor() as cur:
        await cur.execute(sql, [ROWS // 2])
        got = await cur.fetchone()
    if expected != got or expected is None:
        raise AssertionError(f"contenders disagree: psycopg {expected!r}, ours {got!r}")


# ##### Entry point #####


async def run(dsn: str, config: RunConfig) -> ScenarioResult:
    """Run every query of :data:`QUERIES` on both contenders."""
    async with psycopg_connection(dsn) as base_conn:
        try:
            await create_table(base_conn)
            async with ours_connection(dsn) as our_conn:
                await assert_same_results(base_conn, our_conn)
                comparisons = [
                    await measure(
                        query, contenders_for(base_conn, our_conn, query.sql), config
                    )
                    for query in QUERIES
                ]
        finally:
            await drop_table(base_conn)
        version = base_conn.info.server_version
        server_version = f"{version // 10000}.{version % 10000}"
    return ScenarioResult(NAME, TITLE, comparisons, server_version)


async def measure(
    query: Query, contenders: dict[str, BatchRunner], config: RunConfig
) -> Comparison:
    """Alternating timed rounds of one query; round ``-1`` is the warm-up."""
    samples = await run_rounds(
        contenders, lambda r: query.params(r, config.batch), config
    )
    return Comparison(query.name, query.sql, samples)
