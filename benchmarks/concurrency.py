"""Concurrency: K tasks at once, each doing point lookups on its own connection.

For K in 1, 10, 100, 1000, each contender runs K tasks at once (one *wave*),
each task doing ``lookups`` point lookups (20, the issue's figure; the default
run gives K=1000 two per task to stay within its time budget, ``--full`` 20);
small K repeat waves until a sample holds enough lookups to time. Every pool
has :data:`~benchmarks._env.POOL_SIZE` connections, so from K=20 on tasks
queue for a connection: what an ASGI server under load does.

One sample = the wall time from creating the first task to the end of the last
one, *and* until async-db's end-of-task releases have run (``wait_released``;
the psycopg and asyncpg pools return connections inside the task, so this
keeps the work equal). Reported per K and contender: the median throughput
(rows read per second) over the rounds, its IQR, speed relative to the psycopg
pool and to ``sync_to_async``, the peak number of server backends with the
contender's ``application_name`` (polled from a separate observer connection
during every sample; idle pool members count) and how many of them were busy,
and the tasks that failed.

``async-db unpooled`` opens one connection per task: it runs only at the K the
server has free connections for (the other contenders' pools stay open), and
is reported as not run above that.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from async_db import _storage
from benchmarks._contenders import TaskBody, lookup_bodies
from benchmarks._env import (
    APP_NAMES,
    DJANGO_BASELINE,
    ORM,
    OURS,
    OURS_UNPOOLED,
    POOL_SIZE,
    REFERENCE,
    ROWS,
    SYNC,
    Bench,
    Observer,
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
    rows_with_gaps,
    spread_json,
)

NAME = "concurrency"
TITLE = "K concurrent tasks doing point lookups, pool size 20"


@dataclass(frozen=True)
class Level:
    """One concurrency level: ``tasks`` at once, ``lookups`` each, repeated in
    waves until a sample holds ``min_lookups``; ``rounds`` samples each;
    the contenders in ``skip`` are not run (time budget)."""

    tasks: int
    lookups: int
    rounds: int
    min_lookups: int
    skip: frozenset[str] = frozenset()

    @property
    def waves(self) -> int:
        return max(1, math.ceil(self.min_lookups / (self.tasks * self.lookups)))


#: Django's contenders run every task through one thread: at K=1000 they
#: take 15 s a sample and read the same as at K=100. The default run leaves
#: them out there; --full runs them.
DJANGO = frozenset({SYNC, ORM})
LEVELS = {
    "quick": [Level(1, 20, 2, 100), Level(10, 20, 2, 200), Level(100, 20, 2, 2000)],
    "default": [
        Level(1, 20, 9, 400),
        Level(10, 20, 7, 400),
        Level(100, 20, 9, 2000),
        Level(1000, 20, 2, 20000, skip=DJANGO),
    ],
    "full": [
        Level(1, 20, 15, 1000),
        Level(10, 20, 15, 1000),
        Level(100, 20, 10, 2000),
        Level(1000, 20, 5, 20000),
    ],
}
#: Connections left free for everybody else when deciding whether the
#: unpooled contender may run (it would take K of them).
HEADROOM = 10


@dataclass
class Sample:
    seconds: float
    rows: int
    failed: int
    backends: int
    busy: int
    error: str | None = None

    @property
    def throughput(self) -> float:
        return self.rows / self.seconds


@dataclass
class Record:
    """One contender's samples at one level."""

    samples: list[Sample] = field(default_factory=list)
    skipped: str | None = None

    @property
    def throughputs(self) -> list[float]:
        return [s.throughput for s in self.samples]

    def to_json(self) -> dict[str, Any]:
        if self.skipped:
            return {"skipped": self.skipped}
        errors = sorted({s.error for s in self.samples if s.error})
        return {
            "throughput": spread_json(self.throughputs),
            "seconds": [s.seconds for s in self.samples],
            "peak_backends": max(s.backends for s in self.samples),
            "peak_busy": max(s.busy for s in self.samples),
            "failed_tasks": sum(s.failed for s in self.samples),
            "errors": errors,
        }


def task_ids(level: Level, round_: int) -> list[list[list[int]]]:
    """Per wave, per task, the ids to look up: the same for every contender
    of a round."""
    rng = random.Random(f"{level.tasks}-{round_}")
    return [
        [
            [rng.randint(1, ROWS) for _ in range(level.lookups)]
            for _ in range(level.tasks)
        ]
        for _ in range(level.waves)
    ]


def _short_error(exc: BaseException) -> str:
    """The exception's type and first line, at most 100 characters; of a
    server error, the server's message (``FATAL: ...``)."""
    text = str(exc).split("\n")[0]
    if "FATAL:" in text:
        text = "FATAL:" + text.rsplit("FATAL:", 1)[1]
    text = f"{type(exc).__name__}: {' '.join(text.split())}"
    return text if len(text) <= 100 else text[:97] + "..."


async def run_sample(
    body: TaskBody, waves: list[list[list[int]]], observer: Observer, app: str
) -> Sample:
    collect_garbage()
    rows = failed = 0
    error: str | None = None
    async with observer.watch(app) as peak:
        start = time.perf_counter()
        for wave in waves:
            tasks = [asyncio.create_task(body(ids)) for ids in wave]
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, BaseException):
                    failed += 1
                    error = error or _short_error(result)
                else:
                    rows += result
        await _storage.wait_released()
        seconds = time.perf_counter() - start
    expected = sum(len(ids) for wave in waves for ids in wave)
    if not failed and rows != expected:
        # Every id exists: a contender that found fewer rows is wrong, not fast.
        raise AssertionError(
            f"contender {app!r} read {rows} rows for {expected} lookups"
        )
    return Sample(seconds, rows, failed, peak.backends, peak.busy, error)


async def warm_up(bench: Bench, bodies: dict[str, TaskBody]) -> dict[str, str]:
    """One unrecorded wave of POOL_SIZE tasks per contender (two for the
    unpooled one: it opens a connection per task), opening async-db's pool
    and Django's connection; then wait until every pool is full. Returns the
    contenders whose warm-up failed (a shared server out of connections, say),
    with the error: they are reported as not run."""
    rng = random.Random("warm-up")
    ids = [[rng.randint(1, ROWS) for _ in range(20)] for _ in range(POOL_SIZE)]
    failed = {}
    for name, body in bodies.items():
        wave = ids[:2] if name == OURS_UNPOOLED else ids
        results = await asyncio.gather(
            *(asyncio.create_task(body(i)) for i in wave), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            failed[name] = _short_error(errors[0])
    await _storage.wait_released()
    await bench.ours_pool_full()
    return failed


async def measure(bench: Bench, config: RunConfig) -> dict[int, dict[str, Record]]:
    bodies = lookup_bodies(bench)
    progress.step(f"{NAME}: warm-up")
    broken = await warm_up(bench, bodies)
    results: dict[int, dict[str, Record]] = {}
    for level in config.pick(LEVELS):
        rounds = config.rounds_override or level.rounds
        progress.step(
            f"{NAME}: K={level.tasks} ({level.lookups} lookups/task, "
            f"{level.waves} wave(s), {rounds} rounds)"
        )
        records = {name: Record() for name in bodies}
        names = list(bodies)
        for name in level.skip:
            records[name].skipped = "not run at this K in this size (--full runs it)"
            names.remove(name)
        for name, error in broken.items():
            records[name].skipped = f"not run: warm-up failed ({error})"
            names.remove(name)
        # Checked per level: on a shared server other clients come and go.
        free = await bench.observer.free_connections()
        if OURS_UNPOOLED in names and level.tasks > free - HEADROOM:
            records[
                OURS_UNPOOLED
            ].skipped = (
                f"not run: needs {level.tasks} connections, the server has {free} free"
            )
            names.remove(OURS_UNPOOLED)
        for r in range(rounds):
            waves = task_ids(level, r)
            for name in alternating(names, r):
                progress.detail(f"round {r + 1}/{rounds}, {name}")
                sample = await run_sample(
                    bodies[name], waves, bench.observer, APP_NAMES[name]
                )
                records[name].samples.append(sample)
        results[level.tasks] = records
    return results


# ##### Report #####


def _ran(records: dict[str, Record]) -> dict[str, list[float]]:
    return {name: rec.throughputs for name, rec in records.items() if not rec.skipped}


def _ratios(records: dict[str, Record], reference: str) -> dict[str, float]:
    """Speed relative to ``reference``: median of the per-round ratios."""
    ran = _ran(records)
    return round_ratios(ran, reference) if reference in ran else {}


def _of_medians(records: dict[str, Record], reference: str) -> dict[str, float]:
    ran = _ran(records)
    return median_ratios(ran, reference) if reference in ran else {}


def table(results: dict[int, dict[str, Record]], levels: Sequence[Level]) -> Table:
    by_k = {level.tasks: level for level in levels}
    blocks = []
    for k, records in results.items():
        vs_ref, vs_sync = _ratios(records, REFERENCE), _ratios(records, DJANGO_BASELINE)
        block = []
        for i, (name, rec) in enumerate(records.items()):
            first = [f"{k} x {by_k[k].lookups}" if i == 0 else "", name]
            if rec.skipped:
                block.append([*first, rec.skipped])
                continue
            spread = Spread.of(rec.throughputs)
            block.append(
                [
                    *first,
                    fmt_number(spread.median),
                    f"{fmt_number(spread.q1)} - {fmt_number(spread.q3)}",
                    fmt_ratio(vs_ref[name]),
                    fmt_ratio(vs_sync[name]) if name in vs_sync else "-",
                    str(max(s.backends for s in rec.samples)),
                    str(max(s.busy for s in rec.samples)),
                    str(sum(s.failed for s in rec.samples)),
                ]
            )
        blocks.append(block)
    return Table(
        "",
        [
            "K x lookups",
            "contender",
            "lookups/s",
            "IQR",
            f"vs {REFERENCE}",
            f"vs {DJANGO_BASELINE}",
            "backends",
            "busy",
            "failed",
        ],
        rows_with_gaps(blocks),
    )


def to_data(results: dict[int, dict[str, Record]], levels: Sequence[Level]) -> Any:
    by_k = {level.tasks: level for level in levels}
    out = []
    for k, records in results.items():
        level = by_k[k]
        entry: dict[str, Any] = {
            "tasks": k,
            "lookups_per_task": level.lookups,
            "waves": level.waves,
            "rounds": len(next(r for r in records.values() if not r.skipped).samples),
            "contenders": {name: rec.to_json() for name, rec in records.items()},
            # Per-round ratios (the tables' and the summary's figure), then the
            # ratios of the medians.
            "speed_vs_reference": _ratios(records, REFERENCE),
            "speed_vs_django": _ratios(records, DJANGO_BASELINE),
            "ours_vs": {
                name: round_ratios(_ran(records), name)[OURS] for name in _ran(records)
            },
            "speed_vs_reference_of_medians": _of_medians(records, REFERENCE),
            "ours_vs_of_medians": {
                name: 1 / ratio for name, ratio in _of_medians(records, OURS).items()
            },
        }
        out.append(entry)
    return {"unit": "lookups_per_second", "pool_size": POOL_SIZE, "levels": out}


async def run(dsn: str, config: RunConfig) -> ScenarioResult:
    progress.step(f"{NAME}: setup")
    async with Bench(dsn) as bench:
        results = await asyncio.create_task(measure(bench, config))
        version = bench.server_version
    levels = config.pick(LEVELS)
    rounds = [config.rounds_override or level.rounds for level in levels]
    ks = "/".join(str(level.tasks) for level in levels)
    return ScenarioResult(
        NAME,
        TITLE,
        [],
        version,
        tables=[table(results, levels)],
        method=(
            f"{'/'.join(map(str, rounds))} rounds at K={ks}, contenders alternating; "
            f"throughput = rows read / wall time; ratios: median of per-round "
            f"ratios"
        ),
        notes=[
            "backends: peak server sessions of the contender during a sample "
            "(idle pool members included); busy: of those, not idle; failed: "
            "tasks that raised, over all rounds",
        ],
        data=to_data(results, levels),
    )
