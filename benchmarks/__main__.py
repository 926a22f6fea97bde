"""``python -m benchmarks``: run the benchmark scenarios, print their tables
and a short plain summary of what they showed, and write a JSON report and a
plot.

The database is ``$ASYNC_DB_DSN`` when set, otherwise an embedded throwaway
server (``async_db._embedded.database_dsn``). Three sizes: ``--quick`` (a CI
smoke test, seconds), the default (about a minute), ``--full`` (several
minutes, the figures to quote). To add a scenario, write a module with
``NAME``, ``TITLE`` and ``async def run(dsn, config) -> ScenarioResult`` and
list it in :data:`SCENARIOS`; scenarios that need the benchmark's Django
settings get them from :func:`benchmarks._env.setup_django`, already called
here before any scenario runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from async_db._embedded import database_dsn
from benchmarks import (
    _summary,
    concurrency,
    deploy,
    fanout,
    latency,
    micro,
    orm,
    orm_delete,
    transactions,
)
from benchmarks import http as http_bench
from benchmarks._env import setup_django
from benchmarks._harness import (
    Result,
    RunConfig,
    ScenarioResult,
    environment,
    format_table,
    progress,
    server_kind,
    write_json,
)
from benchmarks._plot import plot_concurrency

#: ``run(dsn, config)``: usually returns a :class:`ScenarioResult`; any
#: :class:`Result` with a ``report() -> str`` method works too.
Scenario = Callable[[str, RunConfig], Awaitable[Result]]

#: name -> ``run(dsn, config)``, in the order they run.
SCENARIOS: dict[str, Scenario] = {
    micro.NAME: micro.run,
    latency.NAME: latency.run,
    concurrency.NAME: concurrency.run,
    orm.NAME: orm.run,
    orm_delete.NAME: orm_delete.run,
    transactions.NAME: transactions.run,
    fanout.NAME: fanout.run,
    http_bench.NAME: http_bench.run,
    deploy.NAME: deploy.run,
}

#: micro's rounds and batch per mode (the other scenarios size themselves).
MICRO_ROUNDS = {"quick": 6, "default": 20, "full": 80}
MICRO_BATCH = {"quick": 200, "default": 500, "full": 500}

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_JSON = RESULTS / "latest.json"
DEFAULT_PLOT = RESULTS / "concurrency.png"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare async-db with psycopg, Django's sync_to_async and "
        "ORM, and asyncpg (same process, alternating rounds). Database: "
        "$ASYNC_DB_DSN, else an embedded server.",
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"scenarios to run (default: all of {', '.join(SCENARIOS)})",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="few, small rounds: a smoke test finishing in seconds (CI)",
    )
    size.add_argument(
        "--full",
        action="store_true",
        help="more rounds and longer samples, Django's contenders at K=1000 too: "
        "several minutes",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        help="recorded rounds of every scenario (default: per scenario and size)",
    )
    parser.add_argument(
        "--batch",
        type=_positive_int,
        help="queries per contender per round of the sequential scenarios "
        f"(micro: {MICRO_BATCH['default']}, --quick {MICRO_BATCH['quick']})",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        default=DEFAULT_JSON,
        help=f"where to write the results (default {_shown(DEFAULT_JSON)})",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PATH",
        default=DEFAULT_PLOT,
        help="where to draw throughput vs concurrency (default "
        f"{_shown(DEFAULT_PLOT)}; needs the concurrency scenario)",
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; "
            f"choose from {', '.join(SCENARIOS)}"
        )
    return args


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def mode(args: argparse.Namespace) -> str:
    return "quick" if args.quick else "full" if args.full else "default"


def run_config(args: argparse.Namespace) -> RunConfig:
    """Explicit ``--rounds``/``--batch`` win over the size's presets."""
    size = mode(args)
    return RunConfig(
        rounds=args.rounds or MICRO_ROUNDS[size],
        batch=args.batch or MICRO_BATCH[size],
        mode=size,
        rounds_override=args.rounds,
        batch_override=args.batch,
    )


@dataclass(frozen=True)
class Failed:
    """A scenario that raised: reported, and the run goes on with the next."""

    scenario: str
    title: str
    error: str
    server_version: str = ""

    def to_json(self, config: RunConfig) -> dict[str, Any]:
        return {"scenario": self.scenario, "title": self.title, "error": self.error}

    def report(self) -> str:
        return f"{self.scenario}: FAILED\n{self.error}"


async def run_all(
    dsn: str, names: Sequence[str], config: RunConfig
) -> list[tuple[Result, float]]:
    """Run the scenarios one after the other on one event loop; return each
    result with its wall-clock seconds. A scenario that raises is reported
    as :class:`Failed` (traceback on stderr) and the others still run."""
    results: list[tuple[Result, float]] = []
    for name in names:
        start = time.perf_counter()
        progress.step(name)
        try:
            result: Result = await SCENARIOS[name](dsn, config)
        except Exception as exc:
            progress.done()
            traceback.print_exc()
            result = Failed(name, "", f"{type(exc).__name__}: {exc}")
        results.append((result, time.perf_counter() - start))
    return results


def report(result: Result, config: RunConfig, seconds: float) -> str:
    """The scenario's header lines and tables (a result of another kind
    prints its own ``report()``)."""
    if not isinstance(result, ScenarioResult):
        own = getattr(result, "report", None)
        text = own() if callable(own) else f"{result.scenario}: {result.title}"
        return f"{text}\n"
    env = environment(result.server_version)
    method = (
        result.method
        or f"{config.rounds} rounds x {config.batch} queries per contender, alternating"
    )
    header = (
        f"{result.scenario}: {result.title}\n"
        f"{method}, {seconds:.1f}s; PostgreSQL {result.server_version} "
        f"({server_kind()}); psycopg {env['psycopg']} ({env['psycopg_impl']}), "
        f"Django {env['django']}, Python {env['python']}, {env['cpus']} CPUs"
    )
    parts = [header]
    if result.comparisons:
        parts.append(format_table(result.comparisons))
    parts.extend(table.render() for table in result.tables)
    if result.notes:
        parts.append("\n".join(result.notes))
    return "\n\n".join(parts) + "\n"


def load_line(before: float) -> str:
    """The machine's load before the run: other work on the same cores skews
    every figure (contenders alternate, so ratios suffer less than rates)."""
    cpus = os.cpu_count() or 1
    line = f"load average (1 min) before the run: {before:.2f} on {cpus} CPUs"
    if before > 0.25 * cpus:
        line += ": the machine was busy before the run, expect noisy figures"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = run_config(args)
    names = args.scenarios or list(SCENARIOS)
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()[0]
    progress.restart()
    progress.step(f"starting the database ({server_kind()})")
    with database_dsn() as dsn:
        setup_django(dsn)
        results = asyncio.run(run_all(dsn, names, config))
    wall = sum(seconds for _, seconds in results)
    progress.done()
    print(load_line(load_before) + "\n")
    for result, seconds in results:
        print(report(result, config, seconds))
    summary = _summary.render([result for result, _ in results])
    payload: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "mode": config.mode,
        "load_average_before": load_before,
        "scenario_seconds": wall,
        "environment": environment(
            next((r.server_version for r, _ in results if r.server_version), "")
        ),
        "scenarios": [result.to_json(config) for result, _ in results],
        "summary": _summary.lines([result for result, _ in results]),
    }
    write_json(args.json, payload)
    print(f"wrote {args.json}")
    for result, _ in results:
        if isinstance(result, ScenarioResult) and result.scenario == concurrency.NAME:
            env = environment(result.server_version)
            plot_concurrency(
                result.data,
                args.plot,
                f"PostgreSQL {result.server_version} ({server_kind()}), "
                f"{config.mode} run, {env['cpus']} CPUs, Python {env['python']}",
            )
            print(f"wrote {args.plot}")
    if summary:
        print(f"\n{summary}", end="")
    failed = [result.scenario for result, _ in results if isinstance(result, Failed)]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
