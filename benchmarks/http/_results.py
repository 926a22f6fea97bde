"""What the HTTP scenario measured, its statistics, table, summary and JSON.

One :class:`Sample` per timed load run; an :class:`EndpointResult` per view
(its samples over the rounds, summarised by medians); a :class:`PairResult`
per workload (async-db's view against the ORM's); an :class:`HttpResult` for
the whole run.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from benchmarks._harness import Spread
from benchmarks.http._loadgen import LoadResult

#: Contender names: ours, and the baseline every ratio is taken against.
OURS = "async-db"
BASELINE = "orm"


@dataclass(frozen=True)
class Sample:
    """One timed load run of one view; the server backends the observer saw
    meanwhile (sampled, see ``_runner.POLL_SECONDS``): all of the server's,
    and those not idle (running a query or inside a transaction); and the
    server process's CPU time per completed request (None where
    ``/proc/<pid>/stat`` does not exist)."""

    round: int
    load: LoadResult
    peak_backends: int
    peak_busy: int
    cpu_ms_per_request: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            **self.load.to_json(),
            "peak_backends": self.peak_backends,
            "peak_busy": self.peak_busy,
            "server_cpu_ms_per_request": self.cpu_ms_per_request,
        }


@dataclass(frozen=True)
class EndpointResult:
    """One view over all rounds: medians of the per-run figures, the total
    of errors, the highest backend counts."""

    workload: str
    contender: str
    method: str
    path: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def rps(self) -> Spread:
        return Spread.of([s.load.rps for s in self.samples])

    @property
    def p50_ms(self) -> float:
        return statistics.median(s.load.p50_ms for s in self.samples)

    @property
    def p99_ms(self) -> float:
        return statistics.median(s.load.p99_ms for s in self.samples)

    @property
    def errors(self) -> int:
        return sum(s.load.errors for s in self.samples)

    @property
    def requests(self) -> int:
        return sum(s.load.requests for s in self.samples)

    @property
    def peak_backends(self) -> int:
        return max(s.peak_backends for s in self.samples)

    @property
    def peak_busy(self) -> int:
        return max(s.peak_busy for s in self.samples)

    @property
    def cpu_ms(self) -> float | None:
        """Median server CPU milliseconds per request."""
        values = [s.cpu_ms_per_request for s in self.samples]
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "contender": self.contender,
            "method": self.method,
            "path": self.path,
            "rps": asdict(self.rps),
            "p50_ms_median": self.p50_ms,
            "p99_ms_median": self.p99_ms,
            "requests": self.requests,
            "errors": self.errors,
            "peak_backends": self.peak_backends,
            "peak_busy": self.peak_busy,
            "server_cpu_ms_per_request_median": self.cpu_ms,
            "samples": [s.to_json() for s in self.samples],
        }


@dataclass(frozen=True)
class PairResult:
    """One workload: async-db's view against the ORM's."""

    workload: str
    ours: EndpointResult
    baseline: EndpointResult

    @property
    def speedup(self) -> float:
        """median(ours req/s) / median(ORM req/s)."""
        return self.ours.rps.median / self.baseline.rps.median

    @property
    def paired_speedups(self) -> list[float]:
        """Per round: ours / ORM req/s (the two runs were back to back)."""
        pairs = zip(self.ours.samples, self.baseline.samples, strict=True)
        return [o.load.rps / b.load.rps for o, b in pairs if b.load.rps]

    @property
    def p99_ratio(self) -> float:
        return self.ours.p99_ms / self.baseline.p99_ms

    def to_json(self) -> dict[str, Any]:
        paired = self.paired_speedups
        return {
            "workload": self.workload,
            "speedup_of_medians": self.speedup,
            "paired_speedup": asdict(Spread.of(paired)) if paired else None,
            "p99_ratio": self.p99_ratio,
            OURS: self.ours.to_json(),
            BASELINE: self.baseline.to_json(),
        }


@dataclass(frozen=True)
class HttpResult:
    """The whole run. ``scenario``, ``title``, ``server_version``,
    ``comparisons`` and ``to_json(config)`` follow ``_harness.ScenarioResult``
    so that ``python -m benchmarks`` can print and save it like any scenario;
    :meth:`header`, :meth:`table` and :meth:`health_line` are the full
    report."""

    scenario: str
    title: str
    server_version: str
    server_kind: str
    settings: dict[str, Any]
    pairs: list[PairResult]
    #: A view without database access on the same server: Django's and
    #: uvicorn's own ceiling, which no database layer can exceed.
    reference: EndpointResult | None
    #: Server backends still there after both servers stopped.
    leaked_backends: int
    #: Exit status of each server process (0: clean shutdown).
    server_exits: dict[str, int | None]
    #: Lines with ERROR or a traceback in the servers' logs.
    server_log_errors: dict[str, list[str]]
    seconds: float

    @property
    def clean(self) -> bool:
        """No request failed, nothing leaked, both servers shut down cleanly."""
        endpoints = [ep for p in self.pairs for ep in (p.ours, p.baseline)]
        if self.reference is not None:
            endpoints.append(self.reference)
        return (
            all(ep.errors == 0 for ep in endpoints)
            and self.leaked_backends == 0
            and all(code == 0 for code in self.server_exits.values())
            and not any(self.server_log_errors.values())
        )

    def header(self) -> str:
        s = self.settings
        return (
            f"{self.scenario}: {self.title}\n"
            f"uvicorn {s['uvicorn']} (1 worker, {s['loop']} loop, {s['http']}), "
            f"{s['load_tool']}, {s['connections']} connections; "
            f"{s['rounds']} round{'s' if s['rounds'] != 1 else ''} x "
            f"{s['duration']:g}s per view, alternating; "
            f"pool {s['pool_size']} per server; PostgreSQL {self.server_version} "
            f"({self.server_kind}); Django {s['django']}, psycopg {s['psycopg']}, "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs; "
            f"{self.seconds:.0f}s"
        )

    def table(self) -> str:
        header = [
            "workload",
            "view",
            "req/s",
            "min - max",
            "p50 ms",
            "p99 ms",
            "errors",
            "backends",
            "busy",
            "CPU ms/req",
        ]
        rows: list[list[str]] = []
        notes: list[tuple[int, str]] = []

        def row(workload: str, ep: EndpointResult) -> list[str]:
            rps, cpu = ep.rps, ep.cpu_ms
            return [
                workload,
                ep.contender,
                f"{rps.median:,.0f}",
                f"{rps.min:,.0f} - {rps.max:,.0f}",
                f"{ep.p50_ms:.1f}",
                f"{ep.p99_ms:.1f}",
                str(ep.errors),
                str(ep.peak_backends),
                str(ep.peak_busy),
                "-" if cpu is None else f"{cpu:.2f}",
            ]

        for pair in self.pairs:
            rows.append(row(pair.workload, pair.ours))
            rows.append(row("", pair.baseline))
            paired = pair.paired_speedups
            spread = (
                f" (per round {min(paired):.2f}x - {max(paired):.2f}x)"
                if paired
                else ""
            )
            notes.append(
                (
                    len(rows),
                    f"{OURS}/{BASELINE}: {pair.speedup:.2f}x req/s{spread}, "
                    f"p99 x{pair.p99_ratio:.2f}",
                )
            )
        if self.reference is not None:
            rows.append(row(self.reference.workload, self.reference))
            lookup = self.pairs[0].baseline.rps.median if self.pairs else 0.0
            if lookup:
                ceiling = self.reference.rps.median / lookup
                notes.append(
                    (
                        len(rows),
                        f"the ceiling of any database layer here: "
                        f"{ceiling:.2f}x the ORM lookup's req/s",
                    )
                )
        widths = [
            max(len(row[i]) for row in [header, *rows]) for i in range(len(header))
        ]

        def line(cells: Sequence[str]) -> str:
            left = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
            right = [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)]
            return "  ".join(left + right).rstrip()

        out = [line(header), "-" * len(line(header))]
        for i, cells in enumerate(rows):
            out.append(line(cells))
            for after, note in notes:
                if after == i + 1:
                    out.append(" " * (widths[0] + 2) + note)
        return "\n".join(out)

    def health_line(self) -> str:
        exits = ", ".join(f"{name} {code}" for name, code in self.server_exits.items())
        log_errors = sum(len(lines) for lines in self.server_log_errors.values())
        return (
            f"after shutdown: {self.leaked_backends} server backends left; "
            f"server exit status: {exits}; error lines in server logs: {log_errors}"
        )

    def report(self) -> str:
        parts = [self.header(), "", self.table(), "", self.health_line()]
        for name, lines in self.server_log_errors.items():
            parts.extend(f"  {name} log: {text}" for text in lines[:10])
        return "\n".join(parts) + "\n"

    def to_json(self, config: Any = None) -> dict[str, Any]:
        import django
        import psycopg

        return {
            "scenario": self.scenario,
            "title": self.title,
            "config": asdict(config) if is_dataclass(config) else None,  # type: ignore[arg-type]
            "settings": self.settings,
            "environment": {
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "psycopg": psycopg.__version__,
                "psycopg_impl": psycopg.pq.__impl__,
                "django": django.get_version(),
                "server": self.server_kind,
                "server_version": self.server_version,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
            },
            "results": [pair.to_json() for pair in self.pairs],
            "reference": None if self.reference is None else self.reference.to_json(),
            "leaked_backends": self.leaked_backends,
            "server_exits": self.server_exits,
            "server_log_errors": self.server_log_errors,
            "seconds": self.seconds,
        }
