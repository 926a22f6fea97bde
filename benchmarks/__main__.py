"""``python -m benchmarks``: run the benchmark scenarios and print their tables.

The database is ``$ASYNC_DB_DSN`` when set, otherwise an embedded throwaway
server (``async_db._embedded.database_dsn``). To add a scenario, write a module
with ``NAME``, ``TITLE`` and ``async def run(dsn, config) -> ScenarioResult``
and list it in :data:`SCENARIOS`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from async_db._embedded import database_dsn
from benchmarks import micro
from benchmarks._harness import (
    RunConfig,
    ScenarioResult,
    environment,
    format_table,
    server_kind,
    write_json,
)

Scenario = Callable[[str, RunConfig], Awaitable[ScenarioResult]]

#: name -> ``run(dsn, config)``, in the order they run.
SCENARIOS: dict[str, Scenario] = {micro.NAME: micro.run}

DEFAULT_ROUNDS = 30
DEFAULT_BATCH = 500
QUICK_ROUNDS = 6
QUICK_BATCH = 200


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare async-db with bare psycopg 3 (same process, "
        "alternating rounds). Database: $ASYNC_DB_DSN, else an embedded server.",
    )
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"scenarios to run (default: all of {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        help=f"recorded rounds per query (default {DEFAULT_ROUNDS}, "
        f"--quick {QUICK_ROUNDS})",
    )
    parser.add_argument(
        "--batch",
        type=_positive_int,
        help=f"queries per contender per round (default {DEFAULT_BATCH}, "
        f"--quick {QUICK_BATCH})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few, small rounds: a smoke test finishing in seconds",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results as JSON"
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


def run_config(args: argparse.Namespace) -> RunConfig:
    """Explicit ``--rounds``/``--batch`` win over ``--quick``'s values."""
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    batch = args.batch or (QUICK_BATCH if args.quick else DEFAULT_BATCH)
    return RunConfig(rounds=rounds, batch=batch)


async def run_all(
    dsn: str, names: Sequence[str], config: RunConfig
) -> list[tuple[ScenarioResult, float]]:
    """Run the scenarios one after the other on one event loop; return each
    result with its wall-clock seconds."""
    results = []
    for name in names:
        start = time.perf_counter()
        result = await SCENARIOS[name](dsn, config)
        results.append((result, time.perf_counter() - start))
    return results


def report(result: ScenarioResult, config: RunConfig, seconds: float) -> str:
    """The scenario's header lines and table."""
    env = environment(result.server_version)
    header = (
        f"{result.scenario}: {result.title}\n"
        f"{config.rounds} rounds x {config.batch} queries per contender, "
        f"alternating, {seconds:.1f}s; PostgreSQL {result.server_version} "
        f"({server_kind()}); psycopg {env['psycopg']} ({env['psycopg_impl']}), "
        f"Python {env['python']}, {env['cpus']} CPUs"
    )
    return f"{header}\n\n{format_table(result.comparisons)}\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = run_config(args)
    names = args.scenarios or list(SCENARIOS)
    with database_dsn() as dsn:
        results = asyncio.run(run_all(dsn, names, config))
    for result, seconds in results:
        print(report(result, config, seconds))
    if args.json is not None:
        payload: dict[str, Any] = {
            "scenarios": [result.to_json(config) for result, _ in results]
        }
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
