"""The ORM's cascade delete: an author with 20 books (``CASCADE``), deleted
natively against Django's own ``adelete()``.

Contenders, on the same plain Django models (``benchapp.Author`` and
``benchapp.Book``, ``Book.author`` with ``on_delete=CASCADE``), in
alternating order (reversed every other round):

* ``native adelete()``: ``await native(author).adelete(using="pooled")``:
  async-db's ``Collector`` collects the books and deletes them and the author
  in one transaction, its queries awaited on the task's pooled connection;
* ``Django adelete()``: ``await author.adelete()``, Django's own async path
  (``sync_to_async(delete)``, ``thread_sensitive=True``: one thread and its
  one connection for the whole program).

Every round builds fresh data for each contender before it is timed (an
``INSERT ... SELECT`` of the authors and their 20 books each, on an admin
connection) and the author instances (``Model.from_db``, no query), so the
timed part is the delete alone. Every delete's return value is checked
against Django's ``(21, {"benchapp.Book": 20, "benchapp.Author": 1})``, and
after every sample the contender's rows are checked gone.

Measured:

* **K=1**: one task, sequential deletes, each timed on its own with
  ``time.perf_counter_ns``: median and p99 per delete;
* **K=10**: 10 concurrent tasks, each deleting its share of the authors:
  deletes per second (native: each task on a pooled connection of its own;
  Django: every delete on its one thread, one after the other).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from async_db import _storage
from benchmarks._env import (
    AUTHORS_TABLE,
    BOOKS_TABLE,
    DJANGO_ALIAS,
    POOLED_ALIAS,
    Bench,
)
from benchmarks._harness import (
    RunConfig,
    ScenarioResult,
    Table,
    alternating,
    collect_garbage,
    fmt_number,
    fmt_ratio,
    progress,
    spread_json,
)

NAME = "orm_delete"
TITLE = (
    "ORM cascade delete of an author with 20 books: native adelete() vs "
    "Django's adelete()"
)

NATIVE = "native adelete()"
DJANGO = "Django adelete()"
CONTENDERS = (NATIVE, DJANGO)
ALIASES = {NATIVE: POOLED_ALIAS, DJANGO: DJANGO_ALIAS}

BOOKS_PER_AUTHOR = 20
#: Django's return value for one author and its books.
EXPECTED = (
    BOOKS_PER_AUTHOR + 1,
    {"benchapp.Book": BOOKS_PER_AUTHOR, "benchapp.Author": 1},
)
#: Concurrent tasks of the throughput pass.
TASKS = 10


@dataclass(frozen=True)
class Size:
    """Rounds and deletes of one run size."""

    #: K=1: rounds x sequential deletes per contender.
    latency_rounds: int
    latency_batch: int
    #: K=10: rounds x deletes per task.
    k_rounds: int
    k_deletes: int
    tasks: int = TASKS


SIZES = {
    "quick": Size(2, 10, 1, 3),
    "default": Size(8, 40, 5, 10),
    "full": Size(20, 100, 12, 20),
}

#: One delete: the author instance -> Django's return value.
Delete = Callable[[Any], Awaitable[tuple[int, dict[str, int]]]]

#: Author ids are never reused within a run (every round's rows are new).
_ids = itertools.count(1)


# ##### Data #####


async def create_tables(bench: Bench) -> None:
    await bench.admin.execute(
        f"CREATE TABLE {AUTHORS_TABLE} (id integer PRIMARY KEY, name text NOT NULL)"
    )
    await bench.admin.execute(
        f"CREATE TABLE {BOOKS_TABLE} (id integer PRIMARY KEY, "
        f"author_id integer NOT NULL REFERENCES {AUTHORS_TABLE} (id) "
        "DEFERRABLE INITIALLY DEFERRED, title text NOT NULL)"
    )
    await bench.admin.execute(
        f"CREATE INDEX ON {BOOKS_TABLE} (author_id)"  # as Django's ForeignKey
    )


async def drop_tables(bench: Bench) -> None:
    await bench.admin.execute(f"DROP TABLE IF EXISTS {BOOKS_TABLE}, {AUTHORS_TABLE}")


async def make_authors(bench: Bench, count: int, alias: str) -> list[Any]:
    """``count`` new authors with 20 books each (untimed), as instances read
    from ``alias`` (``Model.from_db``: no query)."""
    from benchmarks.benchapp.models import Author

    ids = [next(_ids) for _ in range(count)]
    first, last = ids[0], ids[-1]
    await bench.admin.execute(
        f"INSERT INTO {AUTHORS_TABLE} (id, name) "
        "SELECT i, 'author ' || i FROM generate_series(%s::int, %s::int) AS i",
        [first, last],
    )
    await bench.admin.execute(
        f"INSERT INTO {BOOKS_TABLE} (id, author_id, title) "
        f"SELECT a * {BOOKS_PER_AUTHOR} + b, a, 'book ' || b "
        "FROM generate_series(%s::int, %s::int) AS a, "
        f"generate_series(0, {BOOKS_PER_AUTHOR - 1}) AS b",
        [first, last],
    )
    return [Author.from_db(alias, ["id", "name"], (i, f"author {i}")) for i in ids]


async def check_gone(bench: Bench, authors: Sequence[Any]) -> None:
    """No row of ``authors`` or of their books is left."""
    ids = [a.id for a in authors]
    cur = await bench.admin.execute(
        f"SELECT (SELECT count(*) FROM {AUTHORS_TABLE} WHERE id = ANY(%s)), "
        f"(SELECT count(*) FROM {BOOKS_TABLE} WHERE author_id = ANY(%s))",
        [ids, ids],
    )
    row = await cur.fetchone()
    if row != (0, 0):
        raise AssertionError(f"rows left after the deletes (authors, books): {row}")


# ##### The contenders #####


def deletes() -> dict[str, Delete]:
    from async_db.models import native

    async def native_delete(author: Any) -> tuple[int, dict[str, int]]:
        result: tuple[int, dict[str, int]] = await native(author).adelete(
            using=POOLED_ALIAS
        )
        return result

    async def django_delete(author: Any) -> tuple[int, dict[str, int]]:
        result: tuple[int, dict[str, int]] = await author.adelete()
        return result

    return {NATIVE: native_delete, DJANGO: django_delete}


def checked(name: str, result: tuple[int, dict[str, int]]) -> None:
    if result != EXPECTED:
        raise AssertionError(f"{name} returned {result!r}, Django's is {EXPECTED!r}")


# ##### K=1 #####


async def sequential(name: str, fn: Delete, authors: Sequence[Any]) -> list[float]:
    """Microseconds of every delete, one after the other (in a task of its
    own: the pooled connection it takes is released at its end)."""
    times = []
    for author in authors:
        start = time.perf_counter_ns()
        result = await fn(author)
        times.append((time.perf_counter_ns() - start) / 1000)
        checked(name, result)
    return times


async def measure_latency(
    bench: Bench, fns: dict[str, Delete], rounds: int, batch: int
) -> dict[str, list[list[float]]]:
    samples: dict[str, list[list[float]]] = {name: [] for name in fns}
    for r in range(-1, rounds):  # round -1: warm-up, unrecorded
        progress.detail(f"round {r + 1}/{rounds}")
        for name in alternating(list(fns), r):
            authors = await make_authors(bench, batch, ALIASES[name])
            collect_garbage()
            times = await asyncio.create_task(sequential(name, fns[name], authors))
            await _storage.wait_released()
            await check_gone(bench, authors)
            if r >= 0:
                samples[name].append(times)
    return samples


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.99 * len(ordered)) - 1)]


def latency_stats(samples: dict[str, list[list[float]]]) -> dict[str, Any]:
    medians = {
        name: [statistics.median(r) for r in rounds] for name, rounds in samples.items()
    }
    out: dict[str, Any] = {"contenders": {}, "native_time_vs_django": None}
    for name, rounds in samples.items():
        flat = [v for r in rounds for v in r]
        out["contenders"][name] = {
            "median_us": statistics.median(flat),
            "p99_us": p99(flat),
            "round_medians_us": spread_json(medians[name]),
            "deletes": len(flat),
        }
    out["native_time_vs_django"] = statistics.median(
        n / d for n, d in zip(medians[NATIVE], medians[DJANGO], strict=True)
    )
    return out


# ##### K=10 #####


async def concurrent(
    name: str, fn: Delete, authors: Sequence[Any], tasks: int
) -> tuple[float, int, str | None]:
    """Seconds for ``tasks`` tasks to delete ``authors`` (task i: every
    ``tasks``-th author from i), the failed tasks and the first error."""

    async def body(mine: Sequence[Any]) -> None:
        for author in mine:
            checked(name, await fn(author))

    collect_garbage()
    start = time.perf_counter()
    results = await asyncio.gather(
        *(asyncio.create_task(body(authors[i::tasks])) for i in range(tasks)),
        return_exceptions=True,
    )
    await _storage.wait_released()
    seconds = time.perf_counter() - start
    errors = [r for r in results if isinstance(r, BaseException)]
    first = f"{type(errors[0]).__name__}: {errors[0]}"[:100] if errors else None
    return seconds, len(errors), first


async def measure_throughput(
    bench: Bench, fns: dict[str, Delete], rounds: int, per_task: int, tasks: int
) -> dict[str, Any]:
    rates: dict[str, list[float]] = {name: [] for name in fns}
    failed = dict.fromkeys(fns, 0)
    errors: set[str] = set()
    count = per_task * tasks
    for r in range(rounds):
        progress.detail(f"round {r + 1}/{rounds}")
        for name in alternating(list(fns), r):
            authors = await make_authors(bench, count, ALIASES[name])
            seconds, bad, error = await concurrent(name, fns[name], authors, tasks)
            failed[name] += bad
            if error:
                errors.add(error)
            else:
                await check_gone(bench, authors)
            rates[name].append(count / seconds)
    return {
        "tasks": tasks,
        "deletes_per_task": per_task,
        "contenders": {
            name: {
                "deletes_per_second": spread_json(rates[name]),
                "failed": failed[name],
            }
            for name in fns
        },
        "errors": sorted(errors),
        "native_speed_vs_django": statistics.median(
            n / d for n, d in zip(rates[NATIVE], rates[DJANGO], strict=True) if d
        ),
    }


# ##### Tables and the scenario #####


def tables(data: dict[str, Any]) -> list[Table]:
    lat, thr = data["latency"], data["throughput"]
    lat_rows = []
    for name, c in lat["contenders"].items():
        spread = c["round_medians_us"]
        lat_rows.append(
            [
                name,
                f"{c['median_us']:.0f}",
                f"{c['p99_us']:.0f}",
                f"{spread['q1']:.0f} - {spread['q3']:.0f}",
                f"{lat['native_time_vs_django']:.2f}" if name == NATIVE else "1.00",
            ]
        )
    thr_rows = []
    for name, c in thr["contenders"].items():
        rate = c["deletes_per_second"]
        thr_rows.append(
            [
                name,
                fmt_number(rate["median"]),
                f"{fmt_number(rate['q1'])} - {fmt_number(rate['q3'])}",
                fmt_ratio(thr["native_speed_vs_django"] if name == NATIVE else 1.0),
                str(c["failed"]),
            ]
        )
    return [
        Table(
            "K=1: sequential deletes (author + 20 books), µs per delete",
            ["contender", "median", "p99", "IQR of rounds", "time / Django's"],
            lat_rows,
            left=1,
        ),
        Table(
            f"K={thr['tasks']}: concurrent tasks x {thr['deletes_per_task']} "
            "deletes, deletes per second",
            ["contender", "deletes/s", "IQR", "speed / Django's", "failed tasks"],
            thr_rows,
            left=1,
        ),
    ]


async def measure(bench: Bench, size: Size, config: RunConfig) -> dict[str, Any]:
    fns = deletes()
    rounds = config.rounds_override or size.latency_rounds
    batch = config.batch_override or size.latency_batch
    progress.step(f"{NAME}: K=1")
    latency = await measure_latency(bench, fns, rounds, batch)
    progress.step(f"{NAME}: K={size.tasks}")
    await bench.ours_pool_full()
    throughput = await measure_throughput(
        bench, fns, config.rounds_override or size.k_rounds, size.k_deletes, size.tasks
    )
    return {"latency": latency_stats(latency), "throughput": throughput}


async def run(dsn: str, config: RunConfig) -> ScenarioResult:
    progress.step(f"{NAME}: setup")
    size = config.pick(SIZES)
    async with Bench(dsn) as bench:
        await create_tables(bench)
        try:
            data = await asyncio.create_task(measure(bench, size, config))
        finally:
            await _storage.wait_released()
            await drop_tables(bench)
        version = bench.server_version
    thr = data["throughput"]
    failed = sum(c["failed"] for c in thr["contenders"].values())
    notes = [
        f"each delete returned Django's {EXPECTED!r} (checked); fresh authors and "
        "books for every round and contender, built before the timed part",
        "time / Django's: median over rounds of native's round median over "
        "Django's (0.50: half the time); speed / Django's: median over rounds of "
        "the ratio of deletes per second (2.00x: twice)",
        f"failed tasks over all rounds: {failed}"
        + (f" ({'; '.join(thr['errors'])})" if thr["errors"] else ""),
    ]
    return ScenarioResult(
        NAME,
        TITLE,
        [],
        version,
        tables=tables(data),
        method=(
            f"K=1: {config.rounds_override or size.latency_rounds} rounds x "
            f"{config.batch_override or size.latency_batch} deletes per contender; "
            f"K={size.tasks}: {config.rounds_override or size.k_rounds} rounds x "
            f"{size.tasks * size.k_deletes} deletes; contenders alternating"
        ),
        notes=notes,
        data=data,
    )
