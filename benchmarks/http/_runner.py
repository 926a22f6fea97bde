"""The HTTP scenario: the example site under load, async-db views (raw SQL and
the native ORM) against Django's ORM views, over real HTTP on loopback.

Processes: this one (orchestration, and an *observer* connection polling
``pg_stat_activity``), two uvicorn servers running :mod:`benchmarks.http.site`
(1 worker each), and a load generator per timed run (wrk, else
:mod:`benchmarks.http.load`). Each contender has a server of its own, both
identical but for ``application_name``, so that the observer can tell whose
backends it sees: the async-db server only serves async-db views, raw SQL
and native ORM (its AsyncConnectionPool), the ORM server only Django's ORM
views (Django's ConnectionPool). Only one server is under load at a time.

Per round, the three views of a workload run back to back (order reversed
every other round, as in ``benchmarks.micro``), for the same duration with the same
seed (the same ids in the same order with the Python client); then a view
without database access (``/health/``) gives the ceiling that Django and
uvicorn alone allow on this machine. Before the first round every view gets
an unrecorded warm-up run; before every run the observer waits until the
server has no busy backend (pool refilled, previous run's stragglers done).
During a run the observer samples the server's backends, and the server's CPU
time is read from ``/proc`` (CPU ms per request: the figure least disturbed by
other load on the machine). At the end both servers get SIGINT (graceful
shutdown: lifespan closes the pools), and the observer checks that no backend
is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from async_db._embedded import DSN_ENV
from benchmarks.http import NAME, TITLE
from benchmarks.http._loadgen import LoadSpec, resolve_tool, run_load, tool_version
from benchmarks.http._results import (
    BASELINE,
    NATIVE,
    OURS,
    EndpointResult,
    HttpResult,
    PairResult,
    Sample,
)
from benchmarks.http.load import read_response
from benchmarks.http.site.schema import create_statements, drop_statement

#: Repository root: the servers import ``benchmarks.http.site`` from here.
ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
ASGI_APP = "benchmarks.http.site.asgi:application"
APP_NAME = "async-db-bench-http"
OBSERVER_APP_NAME = f"{APP_NAME}-observer"
#: How often the observer samples pg_stat_activity during a run.
POLL_SECONDS = 0.05
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
SETTLE_TIMEOUT = 15.0


# ##### Configuration #####


@dataclasses.dataclass(frozen=True)
class HttpConfig:
    """How much to measure: ``rounds`` timed runs of ``duration`` seconds per
    view, after one ``warmup``-second run per view, at ``connections``
    concurrent keep-alive connections."""

    duration: float = 20.0
    rounds: int = 5
    warmup: float = 3.0
    connections: int = 32
    pool_size: int = 20
    rows: int = 10_000
    #: ``auto`` (wrk if installed), ``wrk`` or ``python``.
    load: str = "auto"


#: ``--quick``: a smoke run of about twenty seconds.
QUICK = HttpConfig(duration=2.0, rounds=1, warmup=1.0)
#: The default size: about a minute and a half.
DEFAULT = HttpConfig(duration=5.0, rounds=3, warmup=2.0)
#: ``--full``: about nine minutes.
FULL = HttpConfig()
PRESETS = {"quick": QUICK, "default": DEFAULT, "full": FULL}
#: An old-style ``RunConfig`` (no ``mode``) with at most this many rounds
#: is read as quick.
HARNESS_QUICK_ROUNDS = 6


def http_config(config: Any) -> HttpConfig:
    """An :class:`HttpConfig` from whatever ``run`` was given: itself; None
    (the default size); or ``python -m benchmarks``'s ``RunConfig``, duck-typed:
    its ``mode`` (``quick``, ``default``, ``full``) picks the preset, else its
    ``quick`` flag or, failing that, its number of rounds; an explicit
    ``rounds_override`` replaces the preset's rounds. Its batch size means
    nothing here."""
    if isinstance(config, HttpConfig):
        return config
    if config is None:
        return DEFAULT
    mode = getattr(config, "mode", None)
    if mode not in PRESETS:
        quick = getattr(config, "quick", None)
        if quick is None:
            rounds = getattr(config, "rounds", None)
            quick = isinstance(rounds, int) and rounds <= HARNESS_QUICK_ROUNDS
        mode = "quick" if quick else "full"
    preset = PRESETS[mode]
    rounds = getattr(config, "rounds_override", None)
    if isinstance(rounds, int) and rounds > 0:
        preset = dataclasses.replace(preset, rounds=rounds)
    return preset


@dataclasses.dataclass(frozen=True)
class View:
    workload: str
    contender: str
    method: str
    path: str


WORKLOADS: dict[str, tuple[str, str]] = {
    "lookup": ("GET", "/items/{id}/{contender}/"),
    "transaction": ("POST", "/items/{id}/bump/{contender}/"),
}


#: Django and uvicorn without any database: the ceiling of every view above.
REFERENCE = View("no database", "health", "GET", "/health/")


def all_views() -> list[View]:
    return [v for workload in WORKLOADS for v in views_of(workload)] + [REFERENCE]


#: The views of a workload, in round 0's order; the server each runs on (the
#: native ORM runs on async-db's connections: the async-db server).
CONTENDERS = (OURS, NATIVE, BASELINE)
SERVER_OF = {OURS: OURS, NATIVE: OURS, BASELINE: BASELINE}


def views_of(workload: str) -> tuple[View, ...]:
    """(ours, native, baseline) for one workload."""
    method, template = WORKLOADS[workload]
    return tuple(
        View(workload, name, method, template.replace("{contender}", name))
        for name in CONTENDERS
    )


# ##### Servers #####


@dataclasses.dataclass
class Server:
    contender: str
    app_name: str
    port: int
    process: asyncio.subprocess.Process
    log_path: Path
    exit_code: int | None = None
    log_errors: list[str] = dataclasses.field(default_factory=list)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(
    dsn: str, contender: str, table: str, config: HttpConfig
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ASYNC_DB_SITE_")
    }
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        DJANGO_SETTINGS_MODULE="benchmarks.http.site.settings",
        ASYNC_DB_SITE_DSN=dsn,
        ASYNC_DB_SITE_APP_NAME=f"{APP_NAME}-{contender}",
        ASYNC_DB_SITE_POOL_SIZE=str(config.pool_size),
        ASYNC_DB_SITE_ITEM_TABLE=table,
        # The ORM server never uses async-db: its startup check would open an
        # async-db pool that only sits there, counted among its backends.
        ASYNC_DB_SITE_CHECK_DATABASE="1" if contender == OURS else "0",
    )
    return env


async def start_server(
    dsn: str, contender: str, table: str, config: HttpConfig, log_dir: Path
) -> Server:
    """Start uvicorn for one contender and wait until it answers; retry on
    another port if the chosen one was taken meanwhile."""
    env = server_env(dsn, contender, table, config)
    for attempt in range(3):
        port = free_port()
        log_path = log_dir / f"server-{contender}-{attempt}.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "uvicorn",
                ASGI_APP,
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                "1",
                "--lifespan",
                "on",
                "--no-access-log",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "10",
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        server = Server(
            contender, env["ASYNC_DB_SITE_APP_NAME"], port, process, log_path
        )
        try:
            await wait_ready(server)
        except BaseException:
            await stop_server(server)
            text = log_path.read_text(errors="replace")
            if "address already in use" in text.lower() and attempt < 2:
                continue
            raise
        return server
    raise AssertionError("unreachable")


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    """One request (a GET unless told) on a fresh connection: (status, body)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    length = "" if method in ("GET", "HEAD") else "Content-Length: 0\r\n"
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"{length}Connection: close\r\n\r\n".encode()
        )
        status, _, body = await read_response(reader)
        return status, body
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def wait_ready(server: Server) -> None:
    """Until ``/health/`` answers 200 (uvicorn listens only once the lifespan
    startup completed); fail if the process exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.process.returncode is not None:
            raise RuntimeError(
                f"the {server.contender} server exited with "
                f"{server.process.returncode} during startup:\n{log_tail(server)}"
            )
        with contextlib.suppress(OSError):
            status, _ = await http_get(server.port, "/health/")
            if status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the {server.contender} server did not answer within "
                f"{START_TIMEOUT:g}s:\n{log_tail(server)}"
            )
        await asyncio.sleep(0.1)


def log_tail(server: Server, lines: int = 30) -> str:
    try:
        text = server.log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def stop_server(server: Server) -> None:
    """SIGINT (uvicorn's graceful shutdown, lifespan included); SIGKILL if it
    has not exited within ``STOP_TIMEOUT``. Always reaps the process."""
    process = server.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    server.exit_code = await process.wait()
    server.log_errors = log_errors(server.log_path)


_ERROR_LINE = re.compile(r"ERROR|Traceback|Exception|WARNING", re.IGNORECASE)


def log_errors(path: Path) -> list[str]:
    """Lines of a server log that report a problem (the servers log at
    WARNING, without access log: a clean run logs nothing of the kind)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if _ERROR_LINE.search(line)]


@contextlib.asynccontextmanager
async def running_servers(
    dsn: str, table: str, config: HttpConfig, log_dir: Path
) -> AsyncIterator[dict[str, Server]]:
    """Both servers, started together, always stopped (and reaped) on exit."""
    starts = [
        asyncio.create_task(start_server(dsn, name, table, config, log_dir))
        for name in (OURS, BASELINE)
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
    servers = {task.result().contender: task.result() for task in starts}
    try:
        yield servers
    finally:
        await asyncio.gather(
            *(asyncio.shield(stop_server(s)) for s in servers.values()),
            return_exceptions=True,
        )


# ##### Observer #####


class Observer:
    """An autocommit connection of its own that reads pg_stat_activity."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def backends(self, app_name: str) -> tuple[int, int]:
        """(all, not idle) client backends tagged ``app_name``."""
        cur = await self.conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state <> 'idle') "
            "FROM pg_stat_activity WHERE application_name = %s",
            [app_name],
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    async def settle(self, app_name: str, pool_size: int) -> bool:
        """Wait until the server is quiet: no busy backend, and its pool full
        (or not opened yet). False if that did not happen in time."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            total, busy = await self.backends(app_name)
            if busy == 0 and total in (0, pool_size):
                return True
            await asyncio.sleep(POLL_SECONDS)
        return False

    async def wait_gone(self, app_names: Sequence[str], within: float) -> int:
        """Wait until no backend has one of ``app_names``; return how many are
        left after ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            left = 0
            for name in app_names:
                left += (await self.backends(name))[0]
            if left == 0 or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def observing(dsn: str) -> AsyncIterator[Observer]:
    conn = await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, application_name=OBSERVER_APP_NAME
    )
    try:
        yield Observer(conn)
    finally:
        await conn.close()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (all its threads), from
    ``/proc`` (None where there is no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured_load(
    observer: Observer, server: Server, spec: LoadSpec, tool: str, round_: int
) -> Sample:
    """One load run, with the server's backends polled throughout and its
    CPU time measured."""
    peaks = [0, 0]
    done = asyncio.Event()

    async def poll() -> None:
        while not done.is_set():
            total, busy = await observer.backends(server.app_name)
            peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], busy)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), POLL_SECONDS)

    poller = asyncio.create_task(poll())
    cpu_before = cpu_seconds(server.process.pid)
    try:
        load = await run_load(spec, tool)
    finally:
        cpu_after = cpu_seconds(server.process.pid)
        done.set()
        await poller
    cpu_ms = None
    if cpu_before is not None and cpu_after is not None and load.requests:
        cpu_ms = (cpu_after - cpu_before) * 1000 / load.requests
    return Sample(round_, load, peaks[0], peaks[1], cpu_ms)


# ##### The scenario #####


def progress(text: str) -> None:
    print(f"[http] {text}", file=sys.stderr, flush=True)


async def check_same_results(servers: dict[str, Server]) -> None:
    """Every lookup view must return the same JSON for the same item, and
    every transaction view must add 1 to its item's value."""
    bodies = {}
    for name in CONTENDERS:
        server = servers[SERVER_OF[name]]
        status, body = await http_get(server.port, f"/items/7/{name}/")
        if status != 200:
            raise AssertionError(f"{name} lookup answered {status}: {body!r}")
        bodies[name] = body
    if len(set(bodies.values())) != 1:
        raise AssertionError(f"views disagree: {bodies!r}")
    # Each transaction view increments the same item once, in turn, and
    # answers the row as it committed it.
    values = []
    for name in CONTENDERS:
        server = servers[SERVER_OF[name]]
        status, body = await http_get(server.port, f"/items/9/bump/{name}/", "POST")
        if status != 200:
            raise AssertionError(f"{name} bump answered {status}: {body!r}")
        item = json.loads(body)
        if item["id"] != 9:
            raise AssertionError(f"{name} bump answered {item!r} for item 9")
        values.append(item["value"])
    if values != list(range(values[0], values[0] + len(values))):
        raise AssertionError(f"the bump views did not add 1 each: {values!r}")


def spec_for(view: View, server: Server, config: HttpConfig, seed: int) -> LoadSpec:
    return LoadSpec(
        host=HOST,
        port=server.port,
        method=view.method,
        path=view.path,
        rows=config.rows,
        connections=config.connections,
        duration=config.duration,
        seed=seed,
    )


async def create_table(
    conn: psycopg.AsyncConnection[Any], table: str, rows: int
) -> None:
    for statement in create_statements(table, rows):
        await conn.execute(statement.encode())


async def run(dsn: str, config: Any = None) -> HttpResult:
    """Run the scenario (see the module docstring); progress goes to stderr."""
    import django
    import uvicorn

    started = time.perf_counter()
    cfg = http_config(config)
    tool = resolve_tool(cfg.load)
    table = f"async_db_site_item_{secrets.token_hex(4)}"
    results = {
        (v.workload, v.contender): EndpointResult(
            v.workload, v.contender, v.method, v.path
        )
        for v in all_views()
    }
    async with observing(dsn) as observer:
        version = observer.conn.info.server_version
        server_version = f"{version // 10000}.{version % 10000}"
        try:
            await create_table(observer.conn, table, cfg.rows)
            with tempfile.TemporaryDirectory(prefix="async-db-http-") as tmp:
                async with running_servers(dsn, table, cfg, Path(tmp)) as servers:
                    progress(
                        f"servers up: {OURS} on :{servers[OURS].port}, "
                        f"{BASELINE} on :{servers[BASELINE].port}; load: {tool}"
                    )
                    await check_same_results(servers)
                    await measure_all(observer, servers, cfg, tool, results)
                app_names = [s.app_name for s in servers.values()]
                leaked = await observer.wait_gone(app_names, within=10.0)
                # Session + user + list (issue 12): two servers of their own,
                # started once the first two have stopped.
                from benchmarks.http import _auth

                auth = await _auth.run(dsn, cfg, tool, observer, Path(tmp))
        finally:
            await observer.conn.execute(drop_statement(table).encode())
    settings = {
        "load_tool": await tool_version(tool),
        "connections": cfg.connections,
        "duration": cfg.duration,
        "rounds": cfg.rounds,
        "warmup": cfg.warmup,
        "pool_size": cfg.pool_size,
        "rows": cfg.rows,
        "uvicorn": uvicorn.__version__,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "django": django.get_version(),
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
    }
    pairs = [
        PairResult(w, results[w, OURS], results[w, BASELINE], results[w, NATIVE])
        for w in WORKLOADS
    ]
    return HttpResult(
        scenario=NAME,
        title=TITLE,
        server_version=server_version,
        server_kind=(
            f"external (${DSN_ENV})" if os.environ.get(DSN_ENV) else "embedded pgserver"
        ),
        settings=settings,
        pairs=pairs,
        reference=results[REFERENCE.workload, REFERENCE.contender],
        leaked_backends=leaked,
        server_exits={s.contender: s.exit_code for s in servers.values()},
        server_log_errors={s.contender: s.log_errors for s in servers.values()},
        seconds=time.perf_counter() - started,
        auth=auth,
    )


async def measure_all(
    observer: Observer,
    servers: dict[str, Server],
    config: HttpConfig,
    tool: str,
    results: dict[tuple[str, str], EndpointResult],
) -> None:
    warmup = dataclasses.replace(config, duration=config.warmup)
    for workload in WORKLOADS:
        for view in views_of(workload):
            progress(f"warm-up {workload} {view.contender} ({config.warmup:g}s)")
            server = servers[SERVER_OF[view.contender]]
            await run_load(spec_for(view, server, warmup, seed=0), tool)
    for round_ in range(config.rounds):
        for index, workload in enumerate(WORKLOADS):
            views = views_of(workload)
            order = views if round_ % 2 == 0 else views[::-1]
            seed = 1000 * (round_ + 1) + index
            for view in order:
                server = servers[SERVER_OF[view.contender]]
                sample = await measure_view(
                    observer, server, view, config, tool, round_, seed
                )
                results[workload, view.contender].samples.append(sample)
        # The no-database reference: on the async-db server (it never
        # touches the database, so either server would do).
        sample = await measure_view(
            observer, servers[OURS], REFERENCE, config, tool, round_, seed=0
        )
        results[REFERENCE.workload, REFERENCE.contender].samples.append(sample)


async def measure_view(
    observer: Observer,
    server: Server,
    view: View,
    config: HttpConfig,
    tool: str,
    round_: int,
    seed: int,
) -> Sample:
    """Settle the server, then one timed, observed load run of ``view``."""
    if not await observer.settle(server.app_name, config.pool_size):
        progress(f"warning: the {server.contender} server did not settle")
    spec = spec_for(view, server, config, seed)
    sample = await measured_load(observer, server, spec, tool, round_)
    load, cpu = sample.load, sample.cpu_ms_per_request
    progress(
        f"round {round_ + 1}/{config.rounds} {view.workload:<11} "
        f"{view.contender:<8} {load.rps:8,.0f} req/s  p50 {load.p50_ms:6.1f} ms  "
        f"p99 {load.p99_ms:6.1f} ms  errors {load.errors}  backends "
        f"{sample.peak_backends} (busy {sample.peak_busy})"
        + ("" if cpu is None else f"  CPU {cpu:.2f} ms/req")
    )
    return sample
