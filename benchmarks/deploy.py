"""Deploy scenario: the example site with 1 and 2 uvicorn workers, directly on
the server and through PgBouncer in transaction mode (issue 14, item 3).

``python -m benchmarks deploy``. One view, the example site's native ORM
point lookup (``/items/<id>/native/``: ``Item.objects.aget(pk=...)`` on the
request task's async-db connection), under the HTTP scenario's closed-loop
load (wrk if installed, else :mod:`benchmarks.http.load`, in a process of its
own), in four configurations:

* ``1 worker, direct`` and ``2 workers, direct``: each worker has its own
  async-db pool of ``pool_size`` connections (``min_size = max_size``), so the
  server sees ``workers x pool_size`` backends;
* ``1 worker, PgBouncer`` and ``2 workers, PgBouncer``: the same site with its
  DSN on a real PgBouncer (:mod:`async_db._pgbouncer`) in transaction mode with
  ``bouncer_pool`` server connections, and ``OPTIONS["transaction_pooling"]``
  (``$ASYNC_DB_SITE_TRANSACTION_POOLING=1``). These rows are skipped, with the
  reason printed, when pgbouncer is not installed or cannot start.

Reported per configuration: requests/s (median over rounds), p50 and p99
latency, errors, and the peak number of server backends sampled during the
runs (direct: the site's ``application_name``; through PgBouncer: PgBouncer's
own role, the only way the server sees those clients). All four servers are
started together before the first round and only one is under load at a
time; the order of the configurations is reversed every other round. Before
each run the observer waits until every worker answered and no backend is
busy. At the end every master gets SIGINT (uvicorn's graceful stop: each
worker's lifespan shutdown closes its pools) and the observer checks that no
backend of the site is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from async_db._embedded import DSN_ENV
from async_db._pgbouncer import (
    BOUNCER_ROLE,
    PgBouncer,
    bouncer_role,
    pgbouncer_missing,
    server_system_user,
)
from benchmarks.http._loadgen import (
    LoadResult,
    LoadSpec,
    resolve_tool,
    run_load,
    tool_version,
)
from benchmarks.http._runner import (
    ASGI_APP,
    HOST,
    ROOT,
    Server,
    free_port,
    http_get,
    log_tail,
    stop_server,
    wait_ready,
)
from benchmarks.http.site.schema import create_statements, drop_statement

NAME = "deploy"
TITLE = "Many workers and PgBouncer: the example site's native ORM lookup over HTTP"
APP_NAME = "async-db-bench-deploy"
#: The view under load (``{id}``: a random item).
PATH = "/items/{id}/native/"
DIRECT, BOUNCER = "direct", "PgBouncer"
POLL_SECONDS = 0.02
SETTLE_TIMEOUT = 15.0


@dataclasses.dataclass(frozen=True)
class DeployConfig:
    """``rounds`` timed runs of ``duration`` seconds per configuration, after
    one ``warmup``-second run each, at ``connections`` keep-alive HTTP
    connections; ``pool_size`` per worker, ``bouncer_pool`` server
    connections in PgBouncer."""

    duration: float = 10.0
    rounds: int = 3
    warmup: float = 2.0
    connections: int = 64
    pool_size: int = 10
    bouncer_pool: int = 10
    rows: int = 10_000
    load: str = "auto"
    workers: tuple[int, ...] = (1, 2)


#: ``--quick``: a smoke run of a few seconds.
QUICK = DeployConfig(duration=1.0, rounds=1, warmup=0.3, rows=1000)
#: The default size: about half a minute.
DEFAULT = DeployConfig(duration=3.0, rounds=2, warmup=1.0)
#: ``--full``: about two and a half minutes.
FULL = DeployConfig()
PRESETS = {"quick": QUICK, "default": DEFAULT, "full": FULL}


def deploy_config(config: Any) -> DeployConfig:
    """A :class:`DeployConfig` from itself, None (the default size) or
    ``python -m benchmarks``'s ``RunConfig`` (its ``mode`` picks the preset,
    ``rounds_override`` replaces the rounds)."""
    if isinstance(config, DeployConfig):
        return config
    preset = PRESETS.get(getattr(config, "mode", None) or "default", DEFAULT)
    rounds = getattr(config, "rounds_override", None)
    if isinstance(rounds, int) and rounds > 0:
        preset = dataclasses.replace(preset, rounds=rounds)
    return preset


# ##### Results #####


@dataclasses.dataclass
class Row:
    """One configuration over all rounds."""

    workers: int
    via: str
    app_name: str
    runs: list[LoadResult] = dataclasses.field(default_factory=list)
    peak_backends: int = 0
    #: Distinct worker processes that answered before the first round.
    workers_seen: int = 0

    @property
    def label(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''}, {self.via}"

    def median(self, value: Callable[[LoadResult], float]) -> float:
        return statistics.median(value(r) for r in self.runs) if self.runs else 0.0

    @property
    def rps(self) -> float:
        return self.median(lambda r: r.rps)

    @property
    def p50_ms(self) -> float:
        return self.median(lambda r: r.p50_ms)

    @property
    def p99_ms(self) -> float:
        return self.median(lambda r: r.p99_ms)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "via": self.via,
            "rps_median": self.rps,
            "p50_ms_median": self.p50_ms,
            "p99_ms_median": self.p99_ms,
            "errors": self.errors,
            "peak_backends": self.peak_backends,
            "workers_seen": self.workers_seen,
            "runs": [r.to_json() for r in self.runs],
        }


@dataclasses.dataclass
class DeployResult:
    """What ``python -m benchmarks`` needs of a result: ``scenario``,
    ``title``, ``server_version``, ``to_json(config)``, ``report()``."""

    server_version: str
    settings: dict[str, Any]
    rows: list[Row]
    skipped: str | None
    leaked_backends: int
    server_exits: dict[str, int | None]
    seconds: float
    scenario: str = NAME
    title: str = TITLE

    def row(self, workers: int, via: str) -> Row | None:
        return next(
            (r for r in self.rows if (r.workers, r.via) == (workers, via)), None
        )

    def report(self) -> str:
        s = self.settings
        head = (
            f"{NAME}: {TITLE}\n"
            f"{s['rounds']} rounds x {s['duration']:g}s per configuration (after a "
            f"{s['warmup']:g}s warm-up), {s['connections']} connections "
            f"({s['load_tool']}), pool {s['pool_size']} per worker, PgBouncer "
            f"pool {s['bouncer_pool']} (transaction mode); {self.seconds:.1f}s; "
            f"PostgreSQL {self.server_version}, uvicorn {s['uvicorn']}, "
            f"{os.cpu_count()} CPUs"
        )
        cells = [["configuration", "req/s", "p50 ms", "p99 ms", "errors", "backends"]]
        for r in self.rows:
            bound = r.workers * s["pool_size"] if r.via == DIRECT else s["bouncer_pool"]
            cells.append(
                [
                    r.label,
                    f"{r.rps:,.0f}",
                    f"{r.p50_ms:.1f}",
                    f"{r.p99_ms:.1f}",
                    str(r.errors),
                    f"{r.peak_backends} (bound {bound})",
                ]
            )
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        table = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in cells
        ]
        lines = [head, "", *table, ""]
        if self.skipped:
            lines.append(f"PgBouncer rows skipped: {self.skipped}")
        exits = ", ".join(f"{k}: {v}" for k, v in self.server_exits.items())
        lines.append(
            f"server exits after SIGINT: {exits}; site backends left after: "
            f"{self.leaked_backends}"
        )
        return "\n".join(lines) + "\n"

    def to_json(self, config: Any = None) -> dict[str, Any]:
        return {
            "scenario": NAME,
            "title": TITLE,
            "server_version": self.server_version,
            "settings": self.settings,
            "rows": [r.to_json() for r in self.rows],
            "skipped": self.skipped,
            "leaked_backends": self.leaked_backends,
            "server_exits": self.server_exits,
            "seconds": self.seconds,
        }


# ##### Servers #####


def progress(text: str) -> None:
    print(f"[deploy] {text}", file=sys.stderr, flush=True)


def site_env(
    dsn: str, app_name: str, table: str, config: DeployConfig, bounced: bool
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNC_DB_SITE_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        DJANGO_SETTINGS_MODULE="benchmarks.http.site.settings",
        ASYNC_DB_SITE_DSN=dsn,
        ASYNC_DB_SITE_APP_NAME=app_name,
        ASYNC_DB_SITE_POOL_SIZE=str(config.pool_size),
        ASYNC_DB_SITE_ITEM_TABLE=table,
        ASYNC_DB_SITE_TRANSACTION_POOLING="1" if bounced else "0",
    )
    return env


async def start_site(
    dsn: str, row: Row, table: str, config: DeployConfig, log_dir: Path
) -> Server:
    """``uvicorn --workers N`` for one configuration, answering ``/health/``."""
    env = site_env(dsn, row.app_name, table, config, row.via == BOUNCER)
    port = free_port()
    log_path = log_dir / f"{row.app_name}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "uvicorn", ASGI_APP, "--host", HOST),
            *("--port", str(port), "--workers", str(row.workers)),
            *("--lifespan", "on", "--no-access-log", "--log-level", "warning"),
            *("--timeout-graceful-shutdown", "10"),
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    server = Server(row.label, row.app_name, port, process, log_path)
    try:
        await wait_ready(server)
        row.workers_seen = await reach_workers(server, row.workers)
    except BaseException:
        await stop_server(server)
        raise
    return server


async def reach_workers(server: Server, workers: int) -> int:
    """Concurrent ``/whoami/`` requests until ``workers`` distinct processes
    answered (every worker has started and opened its pool); bounded."""
    pids: set[int] = set()
    for _ in range(100):
        answers = await asyncio.gather(
            *(http_get(server.port, "/whoami/") for _ in range(8))
        )
        pids.update(
            json.loads(body)["pid"] for status, body in answers if status == 200
        )
        if len(pids) >= workers:
            break
        await asyncio.sleep(0.05)
    if len(pids) < workers:
        progress(
            f"warning: {len(pids)} of {workers} workers of {server.contender} answered"
        )
    return len(pids)


# ##### Observer #####


class Observer:
    """A sync autocommit connection to the server (its calls run in a
    thread): creates PgBouncer's role and counts backends."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(
            dsn, autocommit=True, application_name=f"{APP_NAME}-observer"
        )

    def _count(self, row: Row) -> tuple[int, int]:
        column, value = (
            ("application_name", row.app_name)
            if row.via == DIRECT
            else ("usename", BOUNCER_ROLE)
        )
        result = self.conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state <> 'idle') "
            f"FROM pg_stat_activity WHERE {column} = %s",
            [value],
        ).fetchone()
        assert result is not None
        return int(result[0]), int(result[1])

    async def count(self, row: Row) -> tuple[int, int]:
        """(all, not idle) server backends of a configuration."""
        return await asyncio.to_thread(self._count, row)

    async def settle(self, row: Row) -> None:
        """Until no backend of the configuration is busy (bounded)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            if (await self.count(row))[1] == 0:
                return
            await asyncio.sleep(POLL_SECONDS)
        progress(f"warning: {row.label} did not settle")

    async def site_backends_left(self, rows: Sequence[Row], within: float) -> int:
        """Direct site backends left once the servers stopped (bounded wait)."""
        deadline = time.monotonic() + within
        while True:
            left = 0
            for row in rows:
                if row.via == DIRECT:
                    left += (await self.count(row))[0]
            if left == 0 or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.05)


async def measured(
    observer: Observer, row: Row, spec: LoadSpec, tool: str
) -> tuple[LoadResult, int]:
    """One load run, the configuration's backends sampled throughout."""
    peak = 0
    done = asyncio.Event()

    async def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, (await observer.count(row))[0])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), POLL_SECONDS)

    poller = asyncio.create_task(poll())
    try:
        load = await run_load(spec, tool)
    finally:
        done.set()
        await poller
    return load, peak


# ##### The scenario #####


def open_bouncer(
    dsn: str, observer: Observer, pool_size: int, stack: contextlib.ExitStack
) -> tuple[PgBouncer | None, str | None]:
    """(PgBouncer in transaction mode, None), or (None, why it cannot run);
    ``stack`` stops it and drops its role."""
    missing = pgbouncer_missing()
    if missing is not None:
        return None, missing
    try:
        stack.enter_context(bouncer_role(observer.conn))
        run_as = server_system_user(observer.conn)
        bouncer = PgBouncer(dsn, run_as, "transaction", pool_size)
        stack.callback(bouncer.close)
        bouncer.start()
    except psycopg.Error as exc:
        # An external server where we are no superuser (role, data_directory).
        return None, f"cannot set PgBouncer up on this server: {exc}"
    except (RuntimeError, OSError, KeyError) as exc:
        return None, f"PgBouncer did not start: {exc}"
    return bouncer, None


async def run(dsn: str, config: Any = None) -> DeployResult:
    """Run the scenario (see the module docstring); progress goes to stderr."""
    import uvicorn

    started = time.perf_counter()
    cfg = deploy_config(config)
    tool = resolve_tool(cfg.load)
    table = f"async_db_deploy_item_{secrets.token_hex(4)}"
    observer = await asyncio.to_thread(Observer, dsn)
    try:
        version = observer.conn.info.server_version
        for statement in create_statements(table, cfg.rows):
            await asyncio.to_thread(observer.conn.execute, statement.encode())
        try:
            with contextlib.ExitStack() as stack:
                bouncer, why = await asyncio.to_thread(
                    open_bouncer, dsn, observer, cfg.bouncer_pool, stack
                )
                if why:
                    progress(f"PgBouncer rows skipped: {why}")
                rows = [
                    Row(n, via, f"{APP_NAME}-{n}w-{via.lower()}")
                    for via in (DIRECT, BOUNCER)
                    for n in cfg.workers
                    if via == DIRECT or bouncer is not None
                ]
                dsns = {DIRECT: dsn, BOUNCER: bouncer.dsn if bouncer else ""}
                with tempfile.TemporaryDirectory(prefix="async-db-deploy-") as tmp:
                    exits = await serve_and_measure(
                        observer, rows, dsns, table, cfg, tool, Path(tmp)
                    )
                leaked = await observer.site_backends_left(rows, within=10.0)
        finally:
            await asyncio.to_thread(
                observer.conn.execute, drop_statement(table).encode()
            )
    finally:
        await asyncio.to_thread(observer.conn.close)
    settings = {
        "load_tool": await tool_version(tool),
        "connections": cfg.connections,
        "duration": cfg.duration,
        "rounds": cfg.rounds,
        "warmup": cfg.warmup,
        "pool_size": cfg.pool_size,
        "bouncer_pool": cfg.bouncer_pool,
        "rows": cfg.rows,
        "uvicorn": uvicorn.__version__,
        "server": f"external (${DSN_ENV})" if os.environ.get(DSN_ENV) else "embedded",
    }
    return DeployResult(
        server_version=f"{version // 10000}.{version % 10000}",
        settings=settings,
        rows=rows,
        skipped=why,
        leaked_backends=leaked,
        server_exits=exits,
        seconds=time.perf_counter() - started,
    )


async def serve_and_measure(
    observer: Observer,
    rows: list[Row],
    dsns: dict[str, str],
    table: str,
    cfg: DeployConfig,
    tool: str,
    log_dir: Path,
) -> dict[str, int | None]:
    """Start every configuration's server, measure, stop them all (SIGINT);
    their exit codes by label."""
    starts = [
        asyncio.create_task(start_site(dsns[r.via], r, table, cfg, log_dir))
        for r in rows
    ]
    try:
        await asyncio.gather(*starts)
    except BaseException:
        for task in starts:
            task.cancel()
        for task in starts:
            with contextlib.suppress(BaseException):
                await stop_server(await task)
        raise
    servers = [task.result() for task in starts]
    try:
        progress(
            "servers up: "
            + ", ".join(
                f"{r.label} on :{s.port}" for r, s in zip(rows, servers, strict=True)
            )
            + f"; load: {tool}"
        )
        await measure(observer, rows, servers, cfg, tool)
    finally:
        await asyncio.gather(
            *(asyncio.shield(stop_server(s)) for s in servers), return_exceptions=True
        )
    for server in servers:
        if server.exit_code != 0:
            progress(
                f"{server.contender} exited with {server.exit_code}:\n"
                + log_tail(server)
            )
    return {s.contender: s.exit_code for s in servers}


async def measure(
    observer: Observer,
    rows: list[Row],
    servers: list[Server],
    cfg: DeployConfig,
    tool: str,
) -> None:
    pairs = list(zip(rows, servers, strict=True))

    def spec(server: Server, duration: float, seed: int) -> LoadSpec:
        return LoadSpec(
            HOST, server.port, "GET", PATH, cfg.rows, cfg.connections, duration, seed
        )

    for row, server in pairs:
        progress(f"warm-up {row.label} ({cfg.warmup:g}s)")
        await run_load(spec(server, cfg.warmup, 0), tool)
    for round_ in range(cfg.rounds):
        order = pairs if round_ % 2 == 0 else pairs[::-1]
        for row, server in order:
            await observer.settle(row)
            load, peak = await measured(
                observer, row, spec(server, cfg.duration, 1000 + round_), tool
            )
            row.runs.append(load)
            row.peak_backends = max(row.peak_backends, peak)
            progress(
                f"round {round_ + 1}/{cfg.rounds} {row.label:<20} "
                f"{load.rps:8,.0f} req/s  p50 {load.p50_ms:6.1f} ms  "
                f"p99 {load.p99_ms:6.1f} ms  errors {load.errors}  backends {peak}"
            )


__all__ = ["DEFAULT", "FULL", "NAME", "QUICK", "TITLE", "DeployConfig", "run"]
