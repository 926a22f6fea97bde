"""What every scenario shares: Django setup, alternating timed rounds, statistics,
the printed table and the JSON report.

A scenario supplies *contenders*: coroutine functions that run one batch of
queries given the batch's parameters. :func:`run_rounds` times them in
alternating order and returns per-batch microseconds per query; the rest of
this module turns those samples into a :class:`Comparison` and prints it.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from async_db._embedded import DSN_ENV

#: Runs one batch: one query per item of the given parameter list.
BatchRunner = Callable[[Sequence[Any]], Awaitable[None]]
#: Builds the parameter list of round ``r`` (``-1`` for the warm-up batch).
ParamsForRound = Callable[[int], Sequence[Any]]

#: The contender every ratio is taken against.
BASELINE = "psycopg"
#: Our contender.
OURS = "async-db"


# ##### Configuration #####


@dataclass(frozen=True)
class RunConfig:
    """How long to measure: ``rounds`` recorded rounds of ``batch`` queries per
    contender and query, after ``warmup`` unrecorded batches each."""

    rounds: int
    batch: int
    warmup: int = 1


def configure_django(entry: dict[str, Any]) -> dict[str, Any]:
    """Configure Django once (``DEBUG=False``: no query logging, as in production)
    and return ``entry`` with Django's defaults filled in."""
    import django
    from django.conf import settings
    from django.db.utils import ConnectionHandler

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            USE_TZ=True,
            TIME_ZONE="UTC",
            INSTALLED_APPS=[],
            DATABASES={"default": entry},
        )
        django.setup()
    filled: dict[str, Any] = ConnectionHandler().configure_settings({"default": entry})[
        "default"
    ]
    return filled


def server_kind() -> str:
    """Where the database runs, for the report (never the DSN: it may hold a
    password)."""
    return f"external (${DSN_ENV})" if os.environ.get(DSN_ENV) else "embedded pgserver"


# ##### Timing #####


async def time_batch(runner: BatchRunner, params: Sequence[Any]) -> float:
    """Microseconds per query of one batch.

    Garbage from the previous batch is collected first, so one contender never
    pays for the other's cyclic garbage; the garbage collector stays enabled
    during the batch, so each contender pays for its own.
    """
    gc.collect()
    start = time.perf_counter_ns()
    await runner(params)
    elapsed = time.perf_counter_ns() - start
    return elapsed / 1000 / len(params)


async def run_rounds(
    contenders: dict[str, BatchRunner],
    params_for_round: ParamsForRound,
    config: RunConfig,
) -> dict[str, list[float]]:
    """Time every contender on the same parameters in every round.

    Order alternates: round ``r`` runs the contenders in insertion order when
    ``r`` is even and in reverse order when odd. Returns, per contender, one
    sample (µs per query) per round.
    """
    names = list(contenders)
    warmup_params = params_for_round(-1)
    for _ in range(config.warmup):
        for name in names:
            await contenders[name](warmup_params)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(config.rounds):
        params = params_for_round(r)
        for name in names if r % 2 == 0 else reversed(names):
            samples[name].append(await time_batch(contenders[name], params))
    return samples


# ##### Statistics #####


@dataclass(frozen=True)
class Spread:
    """Median, quartiles and extremes of a list of samples."""

    median: float
    q1: float
    q3: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if len(values) >= 2:
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        else:
            q1 = q3 = values[0]
        return cls(
            median=statistics.median(values),
            q1=q1,
            q3=q3,
            min=min(values),
            max=max(values),
        )


@dataclass(frozen=True)
class Comparison:
    """One query's result: each contender's µs/query, and ours against the
    baseline.

    ``ratio`` is median(ours) / median(baseline). ``paired`` is the spread of the
    per-round ratios ours_r / baseline_r: the two batches of a round ran back
    to back, so these ratios are the least affected by drift between rounds
    (their median is the headline overhead).
    """

    query: str
    sql: str
    samples: dict[str, list[float]] = field(repr=False)

    @property
    def spreads(self) -> dict[str, Spread]:
        return {name: Spread.of(values) for name, values in self.samples.items()}

    @property
    def ratio(self) -> float:
        spreads = self.spreads
        return spreads[OURS].median / spreads[BASELINE].median

    @property
    def paired(self) -> Spread:
        pairs = zip(self.samples[OURS], self.samples[BASELINE], strict=True)
        return Spread.of([ours / base for ours, base in pairs])

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "sql": self.sql,
            "unit": "us_per_query",
            "contenders": {
                name: {**asdict(spread), "samples": self.samples[name]}
                for name, spread in self.spreads.items()
            },
            "ratio_of_medians": self.ratio,
            "paired_ratio": asdict(self.paired),
        }


# ##### Output #####


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def _contender_row(query: str, name: str, spread: Spread) -> list[str]:
    return [
        query,
        name,
        f"{spread.median:.1f}",
        f"{spread.q1:.1f} - {spread.q3:.1f}",
        f"{spread.min:.1f} - {spread.max:.1f}",
    ]


def _ratio_rows(comparison: Comparison) -> list[list[str]]:
    """Ours against the baseline: the ratio of the medians, then the per-round
    (paired) ratios with their spread."""
    ratio, paired = comparison.ratio, comparison.paired
    return [
        ["", "ratio of medians", f"{ratio:.3f} ({_pct(ratio)})", "", ""],
        [
            "",
            "per-round ratio",
            f"{paired.median:.3f} ({_pct(paired.median)})",
            f"{_pct(paired.q1)} - {_pct(paired.q3)}",
            f"{_pct(paired.min)} - {_pct(paired.max)}",
        ],
    ]


def format_table(comparisons: Sequence[Comparison]) -> str:
    """A plain-text table: per query, each contender's median, IQR and range
    in µs/query, then ours/psycopg as the ratio of the medians and as the
    median and spread of the per-round ratios."""
    header = ["query", "contender", "median us/q", "IQR", "min - max"]
    blocks: list[list[list[str]]] = []
    for comparison in comparisons:
        block = [
            _contender_row(comparison.query if i == 0 else "", name, spread)
            for i, (name, spread) in enumerate(comparison.spreads.items())
        ]
        blocks.append(block + _ratio_rows(comparison))
    rows = [row for block in blocks for row in block]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        left = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
        right = [
            cell.rjust(width) for cell, width in zip(cells[2:], widths[2:], strict=True)
        ]
        return "  ".join(left + right).rstrip()

    out = [line(header), "-" * len(line(header))]
    for i, block in enumerate(blocks):
        if i:
            out.append("")
        out.extend(line(row) for row in block)
    return "\n".join(out)


def environment(server_version: str) -> dict[str, Any]:
    """Versions and machine facts for the JSON report."""
    import django
    import psycopg

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "psycopg": psycopg.__version__,
        "psycopg_impl": psycopg.pq.__impl__,
        "django": django.get_version(),
        "server": server_kind(),
        "server_version": server_version,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path``, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


@dataclass(frozen=True)
class ScenarioResult:
    """What a scenario's ``run(dsn, config)`` returns."""

    scenario: str
    title: str
    comparisons: list[Comparison]
    server_version: str

    def to_json(self, config: RunConfig) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "config": asdict(config),
            "environment": environment(self.server_version),
            "results": [comparison.to_json() for comparison in self.comparisons],
        }
