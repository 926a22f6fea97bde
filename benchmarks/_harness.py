"""What every scenario shares: the run's size, alternating timed rounds,
statistics, the progress display, tables and the JSON report.

A batched scenario (``micro``, ``latency``) supplies *contenders*: coroutine
functions that run one batch of queries given the batch's parameters.
:func:`run_rounds` times them in alternating order and returns per-batch
microseconds per query; :class:`Comparison` turns ours-vs-psycopg samples into
``micro``'s table. Other scenarios time their own samples with the same rules
(:func:`alternating` order, :func:`collect_garbage` before each sample) and
print :class:`Table` objects; ratios between contenders are taken per round
(:func:`round_ratios`). The environment the comparison scenarios share
(settings, pools, observer) is :mod:`benchmarks._env`.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

from async_db._embedded import DSN_ENV

#: Runs one batch: one query per item of the given parameter list.
BatchRunner = Callable[[Sequence[Any]], Awaitable[None]]
#: Builds the parameter list of round ``r`` (``-1`` for the warm-up batch).
ParamsForRound = Callable[[int], Sequence[Any]]

#: The contender every ratio is taken against.
BASELINE = "psycopg"
#: Our contender.
OURS = "async-db"

T = TypeVar("T")


# ##### Configuration #####


@dataclass(frozen=True)
class RunConfig:
    """How long to measure: ``rounds`` recorded rounds of ``batch`` queries per
    contender and query, after ``warmup`` unrecorded batches each.

    ``rounds`` and ``batch`` are the sizes of the batched scenarios (``micro``);
    the others size themselves from ``mode`` (``quick``, ``default`` or
    ``full``) with :meth:`pick` and :meth:`rounds_for`, and honour an explicit
    ``--rounds``/``--batch`` (``rounds_override``/``batch_override``).
    """

    rounds: int
    batch: int
    warmup: int = 1
    mode: str = "default"
    rounds_override: int | None = None
    batch_override: int | None = None

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    @property
    def full(self) -> bool:
        return self.mode == "full"

    def pick(self, presets: Mapping[str, T]) -> T:
        """The preset of this run's mode."""
        return presets[self.mode]

    def rounds_for(self, presets: Mapping[str, int]) -> int:
        """Recorded rounds: ``--rounds`` if given, else the mode's preset."""
        return self.rounds_override or presets[self.mode]

    def batch_for(self, presets: Mapping[str, int]) -> int:
        """Queries per batch: ``--batch`` if given, else the mode's preset."""
        return self.batch_override or presets[self.mode]


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


# ##### Progress #####


class Progress:
    """A progress display on stderr.

    On a terminal one line is rewritten in place (carriage return); otherwise
    (CI logs, redirected output) every :meth:`step` prints one line and
    :meth:`detail` prints nothing. Times are seconds since the run started.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._start = time.perf_counter()
        self._step = ""
        self._dirty = False

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def restart(self) -> None:
        self._start = time.perf_counter()

    def step(self, text: str) -> None:
        """A new step (one line per step when not on a terminal)."""
        self._step = text
        if self._tty():
            self._rewrite(text)
        else:
            self.stream.write(f"[{self._elapsed():6.1f}s] {text}\n")
            self.stream.flush()

    def detail(self, text: str) -> None:
        """Where the current step is (shown on a terminal only)."""
        if self._tty():
            self._rewrite(f"{self._step}: {text}" if self._step else text)

    def done(self) -> None:
        """Clear the progress line (before printing results)."""
        if self._dirty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._dirty = False

    def _rewrite(self, text: str) -> None:
        self.stream.write(f"\r\x1b[K[{self._elapsed():6.1f}s] {text}")
        self.stream.flush()
        self._dirty = True

    def _tty(self) -> bool:
        return self.stream.isatty()

    def _elapsed(self) -> float:
        return time.perf_counter() - self._start


#: The run's progress display, shared by every scenario.
progress = Progress()


def alternating(names: Sequence[T], round_: int) -> list[T]:
    """Round ``round_``'s order: as given when even, reversed when odd."""
    return list(names) if round_ % 2 == 0 else list(reversed(names))


# ##### Timing #####


def collect_garbage() -> None:
    """Collect cyclic garbage before a timed sample, so no contender pays for
    another's, then freeze the survivors (``gc.freeze``): later collections,
    automatic ones inside a sample included, scan only objects created since,
    not Django's tens of thousands of long-lived ones (a full collection takes
    about 45 ms with Django loaded, more than many samples)."""
    gc.collect()
    gc.freeze()


async def time_batch(runner: BatchRunner, params: Sequence[Any]) -> float:
    """Microseconds per query of one batch.

    Garbage from the previous batch is collected first (:func:`collect_garbage`),
    so one contender never pays for the other's cyclic garbage; the garbage
    collector stays enabled during the batch, so each contender pays for its
    own.
    """
    collect_garbage()
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
        progress.detail(f"round {r + 1}/{config.rounds}")
        params = params_for_round(r)
        for name in alternating(names, r):
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


def spread_json(values: Sequence[float]) -> dict[str, Any]:
    """A list of samples with its median, quartiles and extremes, for JSON."""
    return {**asdict(Spread.of(values)), "samples": list(values)}


def median_ratios(
    samples: Mapping[str, Sequence[float]], reference: str
) -> dict[str, float]:
    """Each contender's median divided by the reference's median."""
    base = statistics.median(samples[reference])
    return {name: statistics.median(values) / base for name, values in samples.items()}


def round_ratios(
    samples: Mapping[str, Sequence[float]], reference: str, *, invert: bool = False
) -> dict[str, float]:
    """Per contender, the median over rounds of ``sample_r / reference_r``
    (``reference_r / sample_r`` with ``invert``: speed from times). Each
    round ran every contender back to back, so drift between rounds cancels
    out of these ratios: the figure the tables and the summary use."""
    base = samples[reference]
    out = {}
    for name, values in samples.items():
        pairs = zip(values, base, strict=True)
        out[name] = statistics.median(b / v if invert else v / b for v, b in pairs)
    return out


def paired_ratio(ours: Sequence[float], base: Sequence[float]) -> Spread:
    """The spread of the per-round ratios ``ours_r / base_r`` (rounds in
    which both ran back to back)."""
    return Spread.of([o / b for o, b in zip(ours, base, strict=True)])


# ##### Output #####


def fmt_ratio(ratio: float) -> str:
    """A speed ratio: ``1.00x`` is as fast as the reference."""
    return f"{ratio:.2f}x"


def fmt_number(value: float) -> str:
    """A rate or a count, with thousands separators."""
    return f"{value:,.0f}"


@dataclass(frozen=True)
class Table:
    """A plain-text table: the first ``left`` columns are left-aligned, the
    others right-aligned; an empty row prints as a blank separator line, and
    the last cell of a short row spans the remaining columns (a remark such
    as "not run: ...")."""

    title: str
    header: list[str]
    rows: list[list[str]]
    left: int = 2

    def render(self) -> str:
        ncols = len(self.header)
        widths = [
            max(
                len(row[i])
                for row in [self.header, *self.rows]
                if i < len(row) and (len(row) == ncols or i < len(row) - 1)
            )
            for i in range(ncols)
        ]

        def line(row: Sequence[str]) -> str:
            out = []
            for i, cell in enumerate(row):
                if len(row) < ncols and i == len(row) - 1:
                    out.append(cell)  # spans the rest of the line
                elif i < self.left:
                    out.append(cell.ljust(widths[i]))
                else:
                    out.append(cell.rjust(widths[i]))
            return "  ".join(out).rstrip()

        head = line(self.header)
        body = [line(row) if row else "" for row in self.rows]
        title = [self.title] if self.title else []
        return "\n".join([*title, head, "-" * len(head), *body])

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "header": self.header, "rows": self.rows}


def rows_with_gaps(blocks: Iterable[list[list[str]]]) -> list[list[str]]:
    """Blocks of rows, separated by blank rows."""
    rows: list[list[str]] = []
    for block in blocks:
        if rows:
            rows.append([])
        rows.extend(block)
    return rows


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
        "load_average_1min": os.getloadavg()[0],
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path``, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


class Result(Protocol):
    """What ``python -m benchmarks`` needs of a scenario's result:
    :class:`ScenarioResult`, or any object with these members and, for its
    printed report, a ``report() -> str`` method."""

    @property
    def scenario(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def server_version(self) -> str: ...

    def to_json(self, config: RunConfig) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ScenarioResult:
    """What a scenario's ``run(dsn, config)`` returns.

    ``comparisons`` are ours-against-psycopg tables (``micro``); ``tables``
    are any other tables, printed after them; ``method`` is the one line that
    says how the scenario measured (default: ``micro``'s rounds x batch);
    ``notes`` are printed under the tables; ``data`` is the scenario's raw
    results for the JSON file (and for the summary).
    """

    scenario: str
    title: str
    comparisons: list[Comparison]
    server_version: str
    tables: list[Table] = field(default_factory=list)
    method: str = ""
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self, config: RunConfig) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "method": self.method,
            "config": asdict(config),
            "environment": environment(self.server_version),
            "results": [comparison.to_json() for comparison in self.comparisons],
            "tables": [table.to_json() for table in self.tables],
            "notes": self.notes,
            "data": self.data,
        }
