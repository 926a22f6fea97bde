"""``python -m benchmarks.http``: run the HTTP scenario on its own.

The database is ``$ASYNC_DB_DSN`` when set, otherwise an embedded throwaway
server (``async_db._embedded.database_dsn``); the servers get the DSN through
their environment, so a Unix-socket DSN works too. Prints the table, a
one-sentence summary and the wall time; exits 1 if the run was not clean
(failed requests, leaked backends, a server that did not shut down cleanly or
logged an error).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from async_db._embedded import database_dsn
from benchmarks._summary import http as summary_lines
from benchmarks.http._loadgen import TOOLS
from benchmarks.http._runner import DEFAULT, FULL, QUICK, HttpConfig, run


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http",
        description="Django views over HTTP (uvicorn, separate processes): "
        "async-db against the ORM's async path. Database: $ASYNC_DB_DSN, else "
        "an embedded server.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.rounds} rounds x {QUICK.duration:g}s per view (default "
        f"{DEFAULT.rounds} x {DEFAULT.duration:g}s)",
    )
    size.add_argument(
        "--full",
        action="store_true",
        help=f"{FULL.rounds} rounds x {FULL.duration:g}s per view",
    )
    parser.add_argument("--duration", type=float, help="seconds per timed run")
    parser.add_argument("--rounds", type=int, help="timed runs per view")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per view")
    parser.add_argument("--connections", type=int, help="concurrent connections")
    parser.add_argument("--pool-size", type=int, help="pool size of each server")
    parser.add_argument(
        "--load", choices=TOOLS, help="load generator (default: auto, wrk if found)"
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results as JSON"
    )
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> HttpConfig:
    config = QUICK if args.quick else FULL if args.full else DEFAULT
    overrides = {
        name: getattr(args, name)
        for name in ("duration", "rounds", "warmup", "connections", "pool_size", "load")
        if getattr(args, name) is not None
    }
    return dataclasses.replace(config, **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from(args)
    start = time.perf_counter()
    with database_dsn() as dsn:
        result = asyncio.run(run(dsn, config))
    wall = time.perf_counter() - start
    print(result.report())
    for line in summary_lines(result):
        print(f"summary: {line}")
    print(f"wall time: {wall:.1f}s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_json(config), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
