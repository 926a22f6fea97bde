"""Many worker processes (issue 14, item 3): the example site served by
``uvicorn --workers 2`` and by gunicorn with uvicorn's worker class, against
one server, directly and through PgBouncer in transaction mode.

What is checked, against the real server: each worker process has pools of
its own (disjoint backend pids, requests reached both workers); the server's
backends of the site stay within ``workers x max_size`` directly, and within
PgBouncer's pool behind it, also under 1,000 concurrent HTTP clients, which
all get a 200 (the pools queue them: no "too many clients"); a graceful
shutdown of the master closes every worker's pools (each logs it) and leaves
no backend of the site.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from async_db._pgbouncer import PgBouncer, bouncer_backends, bouncer_role
from benchmarks.http._runner import http_get
from benchmarks.http.site.schema import create_statements, drop_statement
from tests.fix_db import our_backends
from tests.pgbouncer import _free_port, start_bouncer

APP_NAME = "async-db-workers"
TABLE = f"async_db_workers_item_{os.getpid()}"
ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2
#: Per worker: async-db's pool of the default alias (min_size = max_size).
MAX_SIZE = 4
#: PgBouncer's server connections, fewer than the workers' pools together.
BOUNCER_POOL = 3
#: Concurrent HTTP clients of the storm test.
CLIENTS = 1000
#: Seconds a request may wait for a pooled connection: the storm's requests
#: queue on 2 x 4 connections, far longer than any of them needs.
POOL_TIMEOUT = 60


@pytest.fixture(scope="module")
def item_table(dsn: str) -> Iterator[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(drop_statement(TABLE))
        for statement in create_statements(TABLE, rows=100):
            conn.execute(statement)
    try:
        yield TABLE
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(drop_statement(TABLE))


@dataclass
class Site:
    """A master process serving the site with ``WORKERS`` workers."""

    port: int
    process: asyncio.subprocess.Process
    log: Path
    #: Worker pid -> the backend pids its requests ran on.
    seen: dict[int, set[int]] = field(default_factory=dict)

    async def whoami(self) -> tuple[int, int]:
        status, body = await http_get(self.port, "/whoami/")
        assert status == 200, body
        data = json.loads(body)
        pid, backend = int(data["pid"]), int(data["backend_pid"])
        self.seen.setdefault(pid, set()).add(backend)
        return pid, backend

    async def reach_every_worker(self) -> None:
        """Concurrent ``/whoami/`` batches until every worker answered (the
        kernel spreads connections over the workers sharing the socket);
        bounded: 50 batches of 20."""
        for _ in range(50):
            await asyncio.gather(*(self.whoami() for _ in range(20)))
            if len(self.seen) >= WORKERS:
                return


def command(server: str, port: int) -> list[str]:
    app = "benchmarks.http.site.asgi:application"
    if server == "uvicorn":
        return [
            *(sys.executable, "-m", "uvicorn", app),
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--workers", str(WORKERS), "--lifespan", "on", "--no-access-log"),
        ]
    return [
        *(sys.executable, "-m", "gunicorn", app),
        *("--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS)),
        *("--worker-class", "uvicorn.workers.UvicornWorker"),
        # Gunicorn 27's control socket would be one path in $HOME for all.
        "--no-control-socket",
        # The storm's 1,000 connections: more than gunicorn's default.
        *("--worker-connections", str(2 * CLIENTS), "--backlog", str(2 * CLIENTS)),
    ]


#: The graceful stop of each master: uvicorn's is SIGINT; gunicorn's SIGINT is
#: its quick shutdown (workers get SIGQUIT, which uvicorn's worker class does
#: not handle: killed before the lifespan shutdown), SIGTERM its graceful one.
STOP_SIGNAL = {"uvicorn": signal.SIGINT, "gunicorn": signal.SIGTERM}


@contextlib.asynccontextmanager
async def serve(server: str, dsn: str, table: str, **env: str) -> AsyncIterator[Site]:
    """The site under ``server`` with ``WORKERS`` workers on ``dsn``; at the
    end, the master gets its graceful stop signal and must exit 0 with every
    worker having logged that its pools are closed."""
    port = _free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASYNC_DB_SITE_")},
        "PYTHONPATH": str(ROOT),
        "ASYNC_DB_SITE_DSN": dsn,
        "ASYNC_DB_SITE_APP_NAME": APP_NAME,
        "ASYNC_DB_SITE_POOL_SIZE": str(MAX_SIZE),
        "ASYNC_DB_SITE_POOL_TIMEOUT": str(POOL_TIMEOUT),
        "ASYNC_DB_SITE_ITEM_TABLE": table,
        **{f"ASYNC_DB_SITE_{k}": v for k, v in env.items()},
    }
    with tempfile.TemporaryDirectory(prefix="async-db-workers-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *command(server, port),
                cwd=ROOT,
                env=environ,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        site = Site(port, process, log)
        try:
            await wait_up(site)
            yield site
        finally:
            process.send_signal(STOP_SIGNAL[server])
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()
            output = log.read_text(errors="replace")
        assert process.returncode == 0, output
        closed = {
            int(line.rsplit("pid ", 1)[1].rstrip(")"))
            for line in output.splitlines()
            if "pools closed (pid " in line
        }
        # Every worker that served a request closed its pools on shutdown.
        assert set(site.seen) <= closed, output
        assert len(closed) == WORKERS, output


async def wait_up(site: Site) -> None:
    for _ in range(600):
        if site.process.returncode is not None:
            raise RuntimeError(site.log.read_text(errors="replace"))
        with contextlib.suppress(OSError):
            status, _ = await http_get(site.port, "/health/")
            if status == 200:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the site did not start: {site.log.read_text()}")


class Peak:
    """Samples a count in a thread (its own connection) until stopped."""

    def __init__(self, dsn: str, count: Any) -> None:
        self.dsn, self.count = dsn, count
        self.peak = self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.count(conn))
                self.samples += 1
                self._stop.wait(0.005)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def site_backends(conn: Any) -> int:
    return len(our_backends(conn, APP_NAME))


async def load(site: Site, requests: int, concurrency: int) -> list[int]:
    """``requests`` GETs of the native ORM lookup, ``concurrency`` at once."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with semaphore:
            status, _ = await http_get(site.port, f"/items/{i % 100 + 1}/native/")
            return status

    return list(await asyncio.gather(*(one(i) for i in range(requests))))


async def storm(site: Site, clients: int) -> list[int]:
    """``clients`` HTTP connections opened first, then one GET on each, all
    at once (client-side concurrency ``clients``); their statuses."""
    host, port = "127.0.0.1", site.port
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(clients):
            opened.append(await asyncio.open_connection(host, int(port)))

        async def one(
            i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> int:
            writer.write(
                f"GET /items/{i % 100 + 1}/native/ HTTP/1.1\r\nHost: {host}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            raw = await reader.read()
            return int(raw.split(b" ", 2)[1]) if raw else 0

        return list(
            await asyncio.gather(*(one(i, r, w) for i, (r, w) in enumerate(opened)))
        )
    finally:
        for _, writer in opened:
            writer.close()
        for _, writer in opened:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def assert_own_pools(site: Site) -> None:
    """Requests reached every worker, and no backend served two workers."""
    assert len(site.seen) == WORKERS, site.seen
    assert site.process.pid not in site.seen  # the master serves nothing
    backends = list(site.seen.values())
    assert not backends[0] & backends[1], site.seen
    for pids in backends:
        assert 1 <= len(pids) <= MAX_SIZE, site.seen


async def wait_no_backends(observer: Any) -> int:
    """The site's backends left, once their exit reached the server (bounded)."""
    for _ in range(200):
        left = site_backends(observer)
        if not left:
            return 0
        await asyncio.sleep(0.05)
    return left


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
async def test_workers_direct(
    server: str, dsn: str, observer: Any, item_table: str
) -> None:
    async with serve(server, dsn, item_table) as site:
        await site.reach_every_worker()
        assert_own_pools(site)
        with Peak(dsn, site_backends) as peak:
            statuses = await load(site, 400, concurrency=50)
            storm_statuses = await storm(site, CLIENTS)
        assert statuses == [200] * 400
        # 1,000 clients at once: every one served, none refused.
        assert storm_statuses == [200] * CLIENTS
        assert peak.samples > 0
        # Each worker's pool is full (min_size = max_size) and never grows.
        assert peak.peak == WORKERS * MAX_SIZE
        await site.reach_every_worker()
        assert_own_pools(site)
    # The graceful stop closed every worker's pools: nothing left.
    assert await wait_no_backends(observer) == 0


@contextlib.contextmanager
def bouncer(dsn: str, observer: Any) -> Iterator[PgBouncer]:
    with bouncer_role(observer):
        running = start_bouncer(dsn, "transaction", pool_size=BOUNCER_POOL)
        try:
            yield running
        finally:
            running.close()


@pytest.mark.slow
async def test_workers_through_pgbouncer_transaction_mode(
    dsn: str, observer: Any, item_table: str
) -> None:
    with bouncer(dsn, observer) as running:
        async with serve(
            "uvicorn", running.dsn, item_table, TRANSACTION_POOLING="1"
        ) as site:
            await site.reach_every_worker()
            assert len(site.seen) == WORKERS
            with Peak(dsn, bouncer_backends) as peak:
                statuses = await load(site, 400, concurrency=50)
                storm_statuses = await storm(site, CLIENTS)
            assert statuses == [200] * 400
            assert storm_statuses == [200] * CLIENTS
            # 2 x 4 pooled client connections share PgBouncer's 3.
            assert 1 <= peak.peak <= BOUNCER_POOL
            backends = set().union(*site.seen.values())
            assert len(backends) <= BOUNCER_POOL
