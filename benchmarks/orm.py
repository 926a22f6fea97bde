"""The ORM: a point lookup by pk returning one model instance, three ways.

Contenders, side by side in one run, in alternating order (reversed every
other round), each result checked (the row found, the right pk):

* ``native aget()``: ``await NativeItem.objects.using("pooled").aget(pk=...)``,
  an ``AsyncModel`` of async-db's native ORM on the task's pooled connection;
* ``Django aget()``: ``await Item.objects.aget(pk=...)``, Django's own async
  path (``sync_to_async(get)``, ``thread_sensitive=True``: one thread and its
  one connection for the whole program);
* ``raw cursor``: the very SQL Django compiles for that ``aget()`` (taken from
  the compiler once, ``LIMIT 21`` included), run on an async-db cursor of the
  same pooled alias, returning the row's tuple (no model built).

Measured:

* **K=1**: one task, sequential lookups, each timed on its own with
  ``time.perf_counter_ns``: median and p99 per query. async-db's contenders
  hold the task's pooled connection for the whole pass (taken once), Django's
  its thread's connection;
* **K=100**: 100 concurrent tasks, each doing its lookups on the connection
  its task gets (pool of :data:`~benchmarks._env.POOL_SIZE`), as in the
  ``concurrency`` scenario: lookups/s, peak server backends, failed tasks;
* **CPU split** of the native path, in a separate sequential pass: the steps
  native ``aget()`` runs, driven one by one with Django's compiler and timed
  around each: build (``filter()``, ``order_by()``, the ``LIMIT``,
  ``get_compiler()``), compile (``as_sql()``), execute (``await
  cursor.execute()``, ``fetchall()``), convert (``results_iter(results=...)``:
  converters, then ``Model.from_db``); with two controls after every lookup,
  the raw cursor's execute after as much busy CPU as build + compile took,
  and right after another query (the same round trip, with and without CPU
  work before it);
* **2 ms on the server**: the same lookups with
  ``.annotate(s=RawSQL("(SELECT 1 FROM pg_sleep(0.002))", []))``, at K=1 and
  K=100: where Django's ``sync_to_async`` path runs every query of a plain
  asyncio program on one thread, one after the other.

The reference ratios of issue 11 (native at least 2x Django's ``aget()``
throughput at K=100; native latency at most 0.75x Django's at K=1; native
within 1.6x of the raw cursor) are printed next to the measured ratios, as
figures: the output states results only.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from async_db import _storage
from benchmarks._env import APP_NAMES, OURS, POOL_SIZE, POOLED_ALIAS, ROWS, SYNC, Bench
from benchmarks._harness import (
    RunConfig,
    ScenarioResult,
    Table,
    alternating,
    collect_garbage,
    fmt_number,
    fmt_ratio,
    progress,
    rows_with_gaps,
    spread_json,
)
from benchmarks.concurrency import Level, Sample, run_sample, task_ids

NAME = "orm"
TITLE = "ORM point lookup by pk: native aget() vs Django's aget() vs a raw cursor"

NATIVE = "native aget()"
DJANGO = "Django aget()"
RAW = "raw cursor"
CONTENDERS = (NATIVE, DJANGO, RAW)
#: Whose sessions the observer counts (async-db's pooled alias, Django's own).
CONTENDER_APPS = {
    NATIVE: APP_NAMES[OURS],
    DJANGO: APP_NAMES[SYNC],
    RAW: APP_NAMES[OURS],
}

#: The server-side cost of the slow variant (seconds, in ``pg_sleep``).
SLEEP_SECONDS = 0.002
SLEEP_SQL = f"(SELECT 1 FROM pg_sleep({SLEEP_SECONDS}))"
#: Concurrent tasks of the throughput passes.
TASKS = 100
PLAIN = "point lookup"
SLOW = "2 ms lookup"

#: Issue 11's reference ratios (printed as figures next to the measured ones).
REF_THROUGHPUT = 2.0
REF_LATENCY_DJANGO = 0.75
REF_LATENCY_RAW = 1.6


@dataclass(frozen=True)
class Size:
    """Rounds and lookups of one run size."""

    #: K=1: rounds x sequential lookups per contender.
    latency_rounds: int
    latency_batch: int
    #: K=100: rounds, lookups per task.
    k_rounds: int
    k_lookups: int
    #: The CPU split pass: lookups.
    split_lookups: int
    #: The 2 ms variant: K=1 rounds x lookups, K=100 rounds and lookups per task.
    slow_rounds: int
    slow_batch: int
    slow_k_rounds: int
    slow_k_lookups: int
    tasks: int = TASKS


SIZES = {
    "quick": Size(3, 50, 2, 5, 300, 2, 10, 1, 1),
    "default": Size(12, 200, 7, 20, 3000, 4, 40, 3, 4),
    "full": Size(40, 500, 15, 20, 10000, 10, 100, 7, 10),
}

#: One lookup: the pk asked for -> the pk of the row read (None: no row).
Lookup = Callable[[int], Awaitable[int | None]]


# ##### The contenders #####


def _querysets(slow: bool) -> tuple[Any, Any]:
    """(native, Django) querysets of one variant, built once."""
    from django.db.models.expressions import RawSQL

    from benchmarks.benchapp.models import Item, NativeItem

    native_qs: Any = NativeItem.objects.using(POOLED_ALIAS)
    django_qs: Any = Item.objects.all()
    if slow:
        native_qs = native_qs.annotate(s=RawSQL(SLEEP_SQL, []))
        django_qs = django_qs.annotate(s=RawSQL(SLEEP_SQL, []))
    return native_qs, django_qs


async def compiled_sql(slow: bool) -> str:
    """The SQL native ``aget(pk=...)`` runs (Django's compiler, ``LIMIT 21``
    included), with one ``%s`` for the pk: the raw cursor's query."""
    from django.db.models.query import MAX_GET_RESULTS

    from async_db import async_connections
    from async_db.models.sql.compile_connection import acompile
    from async_db.models.sql.compiler import native_compiler

    native_qs, _ = _querysets(slow)
    qs = native_qs.filter(pk=1).order_by()
    qs.query.set_limits(high=MAX_GET_RESULTS)
    conn = async_connections[POOLED_ALIAS]
    compiler = await native_compiler(qs.query, conn)
    sql, params = await acompile(conn, compiler.as_sql)
    if len(params) != 1 or sql.count("%s") != 1:
        raise AssertionError(f"unexpected compiled lookup: {sql!r} {params!r}")
    return str(sql)


def lookups(slow: bool, raw_sql: str) -> dict[str, Lookup]:
    """Every contender's lookup of one variant, in round 0's order."""
    from async_db import async_connections

    native_qs, django_qs = _querysets(slow)

    async def native(pk: int) -> int | None:
        obj = await native_qs.aget(pk=pk)
        return int(obj.pk)

    async def django(pk: int) -> int | None:
        obj = await django_qs.aget(pk=pk)
        return int(obj.pk)

    async def raw(pk: int) -> int | None:
        async with async_connections[POOLED_ALIAS].cursor() as cur:
            await cur.execute(raw_sql, [pk])
            row = await cur.fetchone()
        return None if row is None else int(row[0])

    return {NATIVE: native, DJANGO: django, RAW: raw}


async def check_same_rows(slow: bool, raw_sql: str) -> None:
    """Every contender reads the same row for the same pk (untimed): native
    and Django build an instance with the right pk and name, the raw cursor
    reads the same tuple."""
    from async_db import async_connections

    native_qs, django_qs = _querysets(slow)
    pk = ROWS // 3
    got: dict[str, tuple[Any, ...]] = {}
    for name, qs in ((NATIVE, native_qs), (DJANGO, django_qs)):
        obj = await qs.aget(pk=pk)
        got[name] = (obj.pk, obj.name, getattr(obj, "s", None))
    async with async_connections[POOLED_ALIAS].cursor() as cur:
        await cur.execute(raw_sql, [pk])
        row = await cur.fetchone()
    assert row is not None, f"the raw cursor found no row {pk}"
    got[RAW] = (row[0], row[1], row[2] if slow else None)
    expected = (pk, f"item {pk}", 1 if slow else None)
    if any(value != expected for value in got.values()):
        raise AssertionError(f"contenders disagree on row {pk}: {got!r}")


# ##### K=1: per-query latency #####


async def sequential(lookup: Lookup, pks: Sequence[int]) -> list[float]:
    """Microseconds of every lookup, one after the other."""
    times = []
    for pk in pks:
        start = time.perf_counter_ns()
        found = await lookup(pk)
        times.append((time.perf_counter_ns() - start) / 1000)
        if found != pk:
            raise AssertionError(f"looked up pk {pk}, read {found!r}")
    return times


def round_pks(seed: str, round_: int, count: int) -> list[int]:
    rng = random.Random(f"{seed}-{round_}")
    return [rng.randint(1, ROWS) for _ in range(count)]


async def measure_latency(
    fns: dict[str, Lookup], rounds: int, batch: int, seed: str
) -> dict[str, list[list[float]]]:
    """Per contender, per round, the µs of each lookup. Run in a task of its
    own: the pooled connection it takes is the task's, released at its end."""
    from async_db import async_connections

    await async_connections[POOLED_ALIAS].ensure_connection()
    names = list(fns)
    warm = round_pks(seed, -1, min(batch, 50))
    for name in names:
        await sequential(fns[name], warm)
    samples: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(rounds):
        progress.detail(f"round {r + 1}/{rounds}")
        pks = round_pks(seed, r, batch)
        for name in alternating(names, r):
            collect_garbage()
            samples[name].append(await sequential(fns[name], pks))
    return samples


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.99 * len(ordered)) - 1)]


def latency_stats(samples: dict[str, list[list[float]]]) -> dict[str, Any]:
    """Median and p99 over every lookup, per-round medians, and the per-round
    ratios of native's round median to each other contender's."""
    out: dict[str, Any] = {"contenders": {}, "native_time_vs": {}}
    medians = {
        name: [statistics.median(r) for r in rounds] for name, rounds in samples.items()
    }
    for name, rounds in samples.items():
        flat = [v for r in rounds for v in r]
        out["contenders"][name] = {
            "median_us": statistics.median(flat),
            "p99_us": p99(flat),
            "round_medians_us": spread_json(medians[name]),
            "lookups": len(flat),
        }
    for name in samples:
        pairs = zip(medians[NATIVE], medians[name], strict=True)
        out["native_time_vs"][name] = statistics.median(n / o for n, o in pairs)
    return out


# ##### K=100: throughput #####


def body_of(lookup: Lookup) -> Callable[[Sequence[int]], Any]:
    async def body(ids: Sequence[int]) -> int:
        rows = 0
        for pk in ids:
            rows += await lookup(pk) == pk
        return rows

    return body


async def warm_up(bench: Bench, fns: dict[str, Lookup]) -> None:
    """One wave of POOL_SIZE tasks per contender (fills async-db's pool,
    opens Django's connection), then wait until the pool is full."""
    rng = random.Random("orm-warm-up")
    for fn in fns.values():
        body = body_of(fn)
        ids = [[rng.randint(1, ROWS) for _ in range(5)] for _ in range(POOL_SIZE)]
        await asyncio.gather(*(asyncio.create_task(body(i)) for i in ids))
    await _storage.wait_released()
    await bench.ours_pool_full()


async def measure_throughput(
    bench: Bench, fns: dict[str, Lookup], level: Level
) -> dict[str, list[Sample]]:
    names = list(fns)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for r in range(level.rounds):
        waves = task_ids(level, r)
        for name in alternating(names, r):
            progress.detail(f"round {r + 1}/{level.rounds}, {name}")
            samples[name].append(
                await run_sample(
                    body_of(fns[name]), waves, bench.observer, CONTENDER_APPS[name]
                )
            )
    return samples


def throughput_stats(samples: dict[str, list[Sample]], level: Level) -> dict[str, Any]:
    rates = {name: [s.throughput for s in values] for name, values in samples.items()}
    errors = sorted({s.error for v in samples.values() for s in v if s.error})
    return {
        "tasks": level.tasks,
        "lookups_per_task": level.lookups,
        "contenders": {
            name: {
                "throughput": spread_json(rates[name]),
                "peak_backends": max(s.backends for s in values),
                "peak_busy": max(s.busy for s in values),
                "failed_tasks": sum(s.failed for s in values),
            }
            for name, values in samples.items()
        },
        "errors": errors,
        # Per round, native's lookups/s over the other's (speed: 2.00x is twice).
        "native_speed_vs": {
            name: statistics.median(
                n / o for n, o in zip(rates[NATIVE], rates[name], strict=True) if o
            )
            for name in rates
        },
    }


# ##### The CPU split of the native path #####

STEPS = ("build", "compile", "execute", "convert")
STEP_LABELS = {
    "build": "build: filter(), order_by(), LIMIT, get_compiler()",
    "compile": "compile: as_sql()",
    "execute": "execute: await execute(), fetchall()",
    "convert": "convert: results_iter() converters, Model.from_db",
}


async def split_one(conn: Any, pk: int) -> tuple[int, int, int, int]:
    """Native ``aget(pk=pk)``'s steps, driven one by one: nanoseconds of
    each (build, compile, execute, convert)."""
    from django.db.models.query import MAX_GET_RESULTS

    from async_db.models.sql.compile_connection import acompile
    from async_db.models.sql.compiler import native_compiler
    from benchmarks.benchapp.models import NativeItem

    t0 = time.perf_counter_ns()
    qs: Any = NativeItem.objects.using(POOLED_ALIAS).filter(pk=pk).order_by()
    qs.query.set_limits(high=MAX_GET_RESULTS)
    compiler = await native_compiler(qs.query, conn)
    t1 = time.perf_counter_ns()
    sql, params = await acompile(conn, compiler.as_sql)
    t2 = time.perf_counter_ns()
    cursor = conn.cursor()
    try:
        await cursor.execute(sql, params)
        rows = await cursor.fetchall()
    finally:
        await cursor.close()
    t3 = time.perf_counter_ns()
    # As async-db's ModelIterable (Django's): the model's columns, from_db.
    klass_info, select = compiler.klass_info, compiler.select
    model_cls = klass_info["model"]
    fields = klass_info["select_fields"]
    start, end = fields[0], fields[-1] + 1
    init_list = [f[0].target.attname for f in select[start:end]]
    objs = [
        model_cls.from_db(POOLED_ALIAS, init_list, row[start:end])
        for row in compiler.results_iter([rows])
    ]
    t4 = time.perf_counter_ns()
    if len(objs) != 1 or objs[0].pk != pk:
        raise AssertionError(f"the split pass read {objs!r} for pk {pk}")
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3


async def raw_execute(conn: Any, sql: str, pk: int, busy_ns: int = 0) -> float:
    """µs of the raw cursor's execute + fetchall, after ``busy_ns`` of CPU
    spent busy-waiting (none: right after the previous query)."""
    if busy_ns:
        end = time.perf_counter_ns() + busy_ns
        while time.perf_counter_ns() < end:
            pass
    start = time.perf_counter_ns()
    cursor = conn.cursor()
    try:
        await cursor.execute(sql, [pk])
        rows = await cursor.fetchall()
    finally:
        await cursor.close()
    elapsed = (time.perf_counter_ns() - start) / 1000
    if len(rows) != 1 or rows[0][0] != pk:
        raise AssertionError(f"the raw control read {rows!r} for pk {pk}")
    return elapsed


async def measure_split(count: int, raw_sql: str) -> dict[str, list[float]]:
    """µs per step of ``count`` lookups (run in a task of its own). After
    each lookup, two controls on the raw cursor: its execute after as much
    busy CPU as that lookup's build + compile took (``raw_after_cpu``), then
    right after that query (``raw_back_to_back``): how long the same round
    trip takes with and without CPU work before it."""
    from async_db import async_connections

    conn = async_connections[POOLED_ALIAS]
    await conn.ensure_connection()
    for pk in round_pks("split", -1, 50):
        await split_one(conn, pk)
    out: dict[str, list[float]] = {step: [] for step in STEPS}
    out["total"] = []
    out["raw_after_cpu"] = []
    out["raw_back_to_back"] = []
    collect_garbage()
    for pk in round_pks("split", 0, count):
        steps = await split_one(conn, pk)
        for step, ns in zip(STEPS, steps, strict=True):
            out[step].append(ns / 1000)
        out["total"].append(sum(steps) / 1000)
        out["raw_after_cpu"].append(
            await raw_execute(conn, raw_sql, pk, busy_ns=steps[0] + steps[1])
        )
        out["raw_back_to_back"].append(await raw_execute(conn, raw_sql, pk))
    return out


def split_stats(
    split: dict[str, list[float]], latency: dict[str, Any]
) -> dict[str, Any]:
    """Median µs per step and their shares of the median total; and how much
    of native's K=1 gap to the raw cursor Django's own work (build, compile,
    convert) accounts for."""
    medians = {name: statistics.median(values) for name, values in split.items()}
    total = medians["total"]
    contenders = latency["contenders"]
    raw = contenders[RAW]["median_us"]
    gap = contenders[NATIVE]["median_us"] - raw
    django_work = medians["build"] + medians["compile"] + medians["convert"]
    # The same round trip, slower right after Django's CPU work than in the
    # raw cursor's tight loop (see the docs: the server's CPU has gone idle).
    execute_excess = medians["execute"] - raw
    rest = gap - django_work - execute_excess

    def share(value: float) -> float | None:
        return value / gap if gap > 0 else None

    return {
        "median_us": medians,
        "share_of_total": {step: medians[step] / total for step in STEPS},
        "lookups": len(split["total"]),
        "native_minus_raw_us": gap,
        "build_compile_convert_us": django_work,
        "build_compile_convert_share_of_gap": share(django_work),
        "execute_excess_us": execute_excess,
        "execute_excess_share_of_gap": share(execute_excess),
        "rest_us": rest,
        "rest_share_of_gap": share(rest),
    }


# ##### Tables #####


def latency_table(variants: dict[str, dict[str, Any]]) -> Table:
    blocks = []
    for variant, stats in variants.items():
        block = []
        for i, (name, c) in enumerate(stats["contenders"].items()):
            spread = c["round_medians_us"]
            block.append(
                [
                    variant if i == 0 else "",
                    name,
                    f"{c['median_us']:.1f}",
                    f"{c['p99_us']:.1f}",
                    f"{spread['q1']:.1f} - {spread['q3']:.1f}",
                    f"{stats['native_time_vs'][name]:.2f}",
                ]
            )
        blocks.append(block)
    return Table(
        "K=1: sequential lookups, µs per query",
        ["query", "contender", "median", "p99", "IQR of rounds", "native time / this"],
        rows_with_gaps(blocks),
    )


def throughput_table(variants: dict[str, dict[str, Any]]) -> Table:
    blocks = []
    for variant, stats in variants.items():
        block = []
        for i, (name, c) in enumerate(stats["contenders"].items()):
            t = c["throughput"]
            block.append(
                [
                    f"{variant}, {stats['tasks']} x {stats['lookups_per_task']}"
                    if i == 0
                    else "",
                    name,
                    fmt_number(t["median"]),
                    f"{fmt_number(t['q1'])} - {fmt_number(t['q3'])}",
                    fmt_ratio(stats["native_speed_vs"][name]),
                    str(c["peak_backends"]),
                    str(c["peak_busy"]),
                    str(c["failed_tasks"]),
                ]
            )
        blocks.append(block)
    return Table(
        f"K={TASKS}: concurrent tasks, pool size {POOL_SIZE}, lookups per second",
        [
            "query, K x lookups",
            "contender",
            "lookups/s",
            "IQR",
            "native speed / this",
            "backends",
            "busy",
            "failed",
        ],
        rows_with_gaps(blocks),
    )


def split_table(split: dict[str, Any]) -> Table:
    medians, shares = split["median_us"], split["share_of_total"]
    rows = [
        [STEP_LABELS[step], f"{medians[step]:.1f}", f"{shares[step] * 100:.0f}%"]
        for step in STEPS
    ]
    rows.append(["total (median of per-lookup sums)", f"{medians['total']:.1f}", ""])
    rows.append([])
    rows.append(
        [
            "control: raw execute after as much CPU as build + compile",
            f"{medians['raw_after_cpu']:.1f}",
            "",
        ]
    )
    rows.append(
        [
            "control: raw execute right after another query",
            f"{medians['raw_back_to_back']:.1f}",
            "",
        ]
    )
    return Table(
        f"CPU split of native aget(), {split['lookups']} sequential lookups, "
        "median µs per step",
        ["step", "median us", "share"],
        rows,
        left=1,
    )


def reference_table(data: dict[str, Any]) -> Table:
    plain_k = data["throughput"][PLAIN]["native_speed_vs"]
    plain_1 = data["latency"][PLAIN]["native_time_vs"]
    slow_k = data["throughput"][SLOW]["native_speed_vs"]
    slow_1 = data["latency"][SLOW]["native_time_vs"]
    split = data["split"]
    tasks = data["throughput"][PLAIN]["tasks"]

    def part(key: str) -> str:
        share = split[f"{key}_share_of_gap"]
        text = f"{split[f'{key}_us']:.1f}"
        return text if share is None else f"{text} ({share * 100:.0f}%)"

    rows = [
        [
            f"throughput native / Django aget(), K={tasks}",
            fmt_ratio(plain_k[DJANGO]),
            f">= {REF_THROUGHPUT:.2f}x",
        ],
        [
            "latency native / Django aget(), K=1 (median)",
            f"{plain_1[DJANGO]:.2f}",
            f"<= {REF_LATENCY_DJANGO:.2f}",
        ],
        [
            "latency native / raw cursor, K=1 (median)",
            f"{plain_1[RAW]:.2f}",
            f"<= {REF_LATENCY_RAW:.2f}",
        ],
        [
            f"throughput native / raw cursor, K={tasks}",
            fmt_ratio(plain_k[RAW]),
            "",
        ],
        [
            "native - raw cursor, K=1 (median µs)",
            f"{split['native_minus_raw_us']:.1f}",
            "",
        ],
        [
            "  build + compile + convert (CPU split)",
            part("build_compile_convert"),
            "",
        ],
        [
            "  execute (CPU split) minus the raw cursor's lookup",
            part("execute_excess"),
            "",
        ],
        ["  the rest (async-db's iterables, generators, contexts)", part("rest"), ""],
        [
            f"2 ms lookup: throughput native / Django aget(), K={tasks}",
            fmt_ratio(slow_k[DJANGO]),
            "",
        ],
        [
            "2 ms lookup: latency native / Django aget(), K=1",
            f"{slow_1[DJANGO]:.2f}",
            "",
        ],
    ]
    return Table(
        "Measured ratios, next to issue 11's reference ratios",
        ["figure", "measured", "reference"],
        rows,
        left=1,
    )


# ##### The scenario #####


async def measure(bench: Bench, size: Size, config: RunConfig) -> dict[str, Any]:
    """Every pass; the K=1 and split passes each in a task of their own, so
    their held connection is back in the pool before the K=100 passes."""
    data: dict[str, Any] = {"latency": {}, "throughput": {}}
    latency_rounds = config.rounds_override or size.latency_rounds
    batch = config.batch_override or size.latency_batch
    k_rounds = config.rounds_override or size.k_rounds
    for slow, variant in ((False, PLAIN), (True, SLOW)):
        raw_sql = await asyncio.create_task(compiled_sql(slow))
        fns = lookups(slow, raw_sql)
        await asyncio.create_task(check_same_rows(slow, raw_sql))
        await _storage.wait_released()
        progress.step(f"{NAME}: {variant}, warm-up")
        await warm_up(bench, fns)
        progress.step(f"{NAME}: {variant}, K=1")
        if slow:
            rounds, count = config.rounds_override or size.slow_rounds, size.slow_batch
        else:
            rounds, count = latency_rounds, batch
        latency = await asyncio.create_task(
            measure_latency(fns, rounds, count, seed=variant)
        )
        data["latency"][variant] = latency_stats(latency)
        await _storage.wait_released()
        level = (
            Level(
                size.tasks,
                size.slow_k_lookups,
                config.rounds_override or size.slow_k_rounds,
                0,
            )
            if slow
            else Level(size.tasks, size.k_lookups, k_rounds, 0)
        )
        progress.step(f"{NAME}: {variant}, K={level.tasks}")
        samples = await measure_throughput(bench, fns, level)
        data["throughput"][variant] = throughput_stats(samples, level)
        if not slow:
            progress.step(f"{NAME}: CPU split")
            split = await asyncio.create_task(
                measure_split(size.split_lookups, raw_sql)
            )
            await _storage.wait_released()
            data["split"] = split_stats(split, data["latency"][PLAIN])
    return data


async def run(dsn: str, config: RunConfig) -> ScenarioResult:
    progress.step(f"{NAME}: setup")
    size = config.pick(SIZES)
    async with Bench(dsn) as bench:
        data = await asyncio.create_task(measure(bench, size, config))
        version = bench.server_version
    failed = sum(
        c["failed_tasks"]
        for variant in data["throughput"].values()
        for c in variant["contenders"].values()
    )
    errors = sorted({e for v in data["throughput"].values() for e in v["errors"]})
    notes = [
        "native time / this: median over rounds of native's round median over "
        "this contender's (0.50: native takes half the time); native speed / "
        "this: median over rounds of native's lookups/s over this contender's "
        "(2.00x: twice the throughput)",
        "backends: peak server sessions of the contender's alias during a "
        "sample (native and raw cursor share the pooled alias); failed: tasks "
        f"that raised, over all rounds ({failed})"
        + (f": {'; '.join(errors)}" if errors else ""),
        "the native - raw cursor gap comes from the K=1 pass, its parts from "
        "the CPU split pass, run later: on a busy machine (or a --quick run) "
        "they need not add up",
        f"2 ms lookup: .annotate(s=RawSQL({SLEEP_SQL!r}, [])) on the same "
        "lookup; Django's aget() runs every query of the program on its one "
        "sync_to_async thread",
    ]
    data["reference_ratios"] = {
        "throughput_native_vs_django_min": REF_THROUGHPUT,
        "latency_native_vs_django_max": REF_LATENCY_DJANGO,
        "latency_native_vs_raw_max": REF_LATENCY_RAW,
    }
    data["pool_size"] = POOL_SIZE
    return ScenarioResult(
        NAME,
        TITLE,
        [],
        version,
        tables=[
            latency_table(data["latency"]),
            throughput_table(data["throughput"]),
            split_table(data["split"]),
            reference_table(data),
        ],
        method=(
            f"K=1: {config.rounds_override or size.latency_rounds} rounds x "
            f"{config.batch_override or size.latency_batch} lookups per contender "
            f"(2 ms: {config.rounds_override or size.slow_rounds} x "
            f"{size.slow_batch}); K={size.tasks}: "
            f"{config.rounds_override or size.k_rounds} rounds "
            f"(2 ms: {config.rounds_override or size.slow_k_rounds}); contenders "
            "alternating, every result checked"
        ),
        notes=notes,
        data=data,
    )
