"""What the HTTP scenario measured, its statistics, table, summary and JSON.

One :class:`Sample` per timed load run; an :class:`EndpointResult` per view
(its samples over the rounds, summarised by medians); a :class:`PairResult`
per workload (async-db's raw SQL view and its native ORM view, each against
Django's ORM view); an :class:`HttpResult` for the whole run.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import TYPE_CHECKING, Any

from benchmarks._harness import Spread
from benchmarks.http._loadgen import LoadResult

if TYPE_CHECKING:
    from benchmarks.http._auth import AuthResult

#: Contender names: ours (raw SQL on async-db's cursor), our native ORM, and
#: the baseline every ratio is taken against (Django's ORM, async path).
OURS = "async-db"
NATIVE = "native"
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
    """One workload: async-db's raw SQL view (``ours``) and its native ORM
    view (``native``, None in results without it) against the ORM's."""

    workload: str
    ours: EndpointResult
    baseline: EndpointResult
    native: EndpointResult | None = None

    @property
    def endpoints(self) -> list[EndpointResult]:
        """The views in table order: raw SQL, native ORM, Django's ORM."""
        native = [] if self.native is None else [self.native]
        return [self.ours, *native, self.baseline]

    @staticmethod
    def paired(first: EndpointResult, second: EndpointResult) -> list[float]:
        """Per round: ``first`` / ``second`` req/s (back-to-back runs)."""
        pairs = zip(first.samples, second.samples, strict=True)
        return [a.load.rps / b.load.rps for a, b in pairs if b.load.rps]

    @property
    def native_speedup(self) -> float | None:
        """median(native req/s) / median(ORM req/s)."""
        if self.native is None:
            return None
        return self.native.rps.median / self.baseline.rps.median

    @property
    def speedup(self) -> float:
        """median(ours req/s) / median(ORM req/s)."""
        return self.ours.rps.median / self.baseline.rps.median

    @property
    def paired_speedups(self) -> list[float]:
        """Per round: ours / ORM req/s (the runs were back to back)."""
        return self.paired(self.ours, self.baseline)

    @property
    def p99_ratio(self) -> float:
        return self.ours.p99_ms / self.baseline.p99_ms

    def to_json(self) -> dict[str, Any]:
        paired = self.paired_speedups
        out: dict[str, Any] = {
            "workload": self.workload,
            "speedup_of_medians": self.speedup,
            "paired_speedup": asdict(Spread.of(paired)) if paired else None,
            "p99_ratio": self.p99_ratio,
            OURS: self.ours.to_json(),
            BASELINE: self.baseline.to_json(),
        }
        if self.native is not None:
            vs_orm = self.paired(self.native, self.baseline)
            vs_ours = self.paired(self.native, self.ours)
            out[NATIVE] = self.native.to_json()
            out["native_speedup_of_medians"] = self.native_speedup
            out["native_paired_speedup"] = asdict(Spread.of(vs_orm)) if vs_orm else None
            out["native_vs_async_db_paired"] = (
                asdict(Spread.of(vs_ours)) if vs_ours else None
            )
            out["native_p99_ratio"] = self.native.p99_ms / self.baseline.p99_ms
        return out


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
    #: The session + user + list view, native against Django's async path
    #: (:mod:`benchmarks.http._auth`); None when it did not run.
    auth: AuthResult | None = None

    @property
    def clean(self) -> bool:
        """No request failed, nothing leaked, both servers shut down cleanly."""
        endpoints = [ep for p in self.pairs for ep in p.endpoints]
        if self.reference is not None:
            endpoints.append(self.reference)
        return (
            all(ep.errors == 0 for ep in endpoints)
            and self.leaked_backends == 0
            and all(code == 0 for code in self.server_exits.values())
            and not any(self.server_log_errors.values())
            and (
                self.auth is None
                or (
                    all(self.auth.errors(name) == 0 for name in self.auth.samples)
                    and self.auth.leaked_backends == 0
                    and all(code == 0 for code in self.auth.server_exits.values())
                    and not any(self.auth.server_log_errors.values())
                )
            )
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

        def ratio_note(first: EndpointResult, second: EndpointResult) -> str:
            paired = PairResult.paired(first, second)
            spread = (
                f" (per round {min(paired):.2f}x - {max(paired):.2f}x)"
                if paired
                else ""
            )
            speedup = first.rps.median / second.rps.median
            p99 = first.p99_ms / second.p99_ms
            return (
                f"{first.contender}/{second.contender}: {speedup:.2f}x "
                f"req/s{spread}, p99 x{p99:.2f}"
            )

        for pair in self.pairs:
            for i, ep in enumerate(pair.endpoints):
                rows.append(row(pair.workload if i == 0 else "", ep))
            notes.append((len(rows), ratio_note(pair.ours, pair.baseline)))
            if pair.native is not None:
                notes.append((len(rows), ratio_note(pair.native, pair.baseline)))
                notes.append((len(rows), ratio_note(pair.native, pair.ours)))
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
        if self.auth is not None:
            parts.extend(["", self.auth.table()])
            for name, lines in self.auth.server_log_errors.items():
                parts.extend(f"  auth {name} log: {text}" for text in lines[:10])
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
            "session_user_list": None if self.auth is None else self.auth.to_json(),
        }
