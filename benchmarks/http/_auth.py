"""The HTTP scenario's session + user + list view (issue 12): async-db's
native request path against Django's own async path, over real HTTP.

Two uvicorn servers (1 worker each) serve :mod:`benchmarks.http.auth_site`,
the same view code on both: ``native`` with async-db's opt-in
(``ASYNC_DB = {"NATIVE_ORM": True}``), its session engine and its
``SessionMiddleware``; ``django`` with Django's session engine and
middleware (``sync_to_async``). Both sit behind Django's
``AuthenticationMiddleware`` and share one schema of their own (created per
run, dropped after): the tables (``migrate --run-syncdb``), the user, 30
books, and one logged-in session made beforehand with Django's sync session
store. The load generator sends that session's cookie on every request of
its 32 keep-alive connections; each request loads the session and the user
and renders 10 books with ``select_related`` and ``prefetch_related``.

Both servers must answer the same JSON before anything is timed; then one
unrecorded warm-up run per server, then rounds alternating the order
(reversed every other round). A non-2xx answer (a 403 would mean the session
was not read) counts as an error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.http._loadgen import LoadResult, LoadSpec, run_load
from benchmarks.http._runner import (
    APP_NAME,
    HOST,
    ROOT,
    HttpConfig,
    Observer,
    Server,
    free_port,
    http_get,
    log_tail,
    progress,
    stop_server,
    wait_ready,
)

ASGI_APP = "benchmarks.http.auth_site.asgi:application"
NATIVE = "native"
DJANGO = "django"
CONTENDERS = (NATIVE, DJANGO)
PATH = "/books/"
LABELS = {
    NATIVE: "native (opt-in, async-db sessions)",
    DJANGO: "Django's async path",
}


@dataclasses.dataclass
class AuthResult:
    """Per contender, the load runs; the servers' health after shutdown."""

    samples: dict[str, list[LoadResult]]
    connections: int
    duration: float
    server_exits: dict[str, int | None]
    server_log_errors: dict[str, list[str]]
    leaked_backends: int

    def rps(self, name: str) -> float:
        return statistics.median(s.rps for s in self.samples[name])

    def p50(self, name: str) -> float:
        return statistics.median(s.p50_ms for s in self.samples[name])

    def p99(self, name: str) -> float:
        return statistics.median(s.p99_ms for s in self.samples[name])

    def errors(self, name: str) -> int:
        return sum(s.errors for s in self.samples[name])

    @property
    def ratio(self) -> float:
        """Median over rounds of native's req/s over Django's."""
        pairs = zip(self.samples[NATIVE], self.samples[DJANGO], strict=True)
        return statistics.median(n.rps / d.rps for n, d in pairs if d.rps)

    def table(self) -> str:
        header = ["view", "req/s", "p50 ms", "p99 ms", "errors", "native / this"]
        rows = [
            [
                LABELS[name],
                f"{self.rps(name):,.0f}",
                f"{self.p50(name):.1f}",
                f"{self.p99(name):.1f}",
                str(self.errors(name)),
                f"{self.ratio:.2f}x" if name == DJANGO else "",
            ]
            for name in CONTENDERS
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        title = (
            f"session + user + 10 books (select_related, prefetch_related), "
            f"{self.connections} connections, {len(self.samples[NATIVE])} x "
            f"{self.duration:g}s per server"
        )
        exits = ", ".join(f"{k} {v}" for k, v in self.server_exits.items())
        log_errors = sum(len(v) for v in self.server_log_errors.values())
        return "\n".join(
            [
                title,
                line(header),
                "-" * len(line(header)),
                *(line(r) for r in rows),
                f"after shutdown: {self.leaked_backends} server backends left; "
                f"server exit status: {exits}; error lines in server logs: "
                f"{log_errors}",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "duration": self.duration,
            "contenders": {
                name: {
                    "rps": self.rps(name),
                    "p50_ms": self.p50(name),
                    "p99_ms": self.p99(name),
                    "errors": self.errors(name),
                    "samples": [s.to_json() for s in self.samples[name]],
                }
                for name in CONTENDERS
            },
            "native_speed_vs_django": self.ratio,
            "server_exits": self.server_exits,
            "server_log_errors": self.server_log_errors,
            "leaked_backends": self.leaked_backends,
        }


def site_env(dsn: str, schema: str, native: bool, pool_size: int) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ASYNC_DB_AUTH_SITE_", "ASYNC_DB_SITE_"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        DJANGO_SETTINGS_MODULE="benchmarks.http.auth_site.settings",
        ASYNC_DB_AUTH_SITE_DSN=dsn,
        ASYNC_DB_AUTH_SITE_SCHEMA=schema,
        ASYNC_DB_AUTH_SITE_NATIVE="1" if native else "0",
        ASYNC_DB_AUTH_SITE_APP_NAME=f"{APP_NAME}-auth-{NATIVE if native else DJANGO}",
        ASYNC_DB_AUTH_SITE_POOL_SIZE=str(pool_size),
    )
    return env


async def prepare(dsn: str, schema: str) -> str:
    """Tables, rows and the logged-in session; the session key."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.http.auth_site.setup_db",
        cwd=ROOT,
        env=site_env(dsn, schema, native=False, pool_size=0),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"auth site setup failed:\n{err.decode(errors='replace')}")
    return out.decode().strip().splitlines()[-1]


async def start(
    dsn: str, schema: str, name: str, pool_size: int, log_dir: Path
) -> Server:
    env = site_env(dsn, schema, native=name == NATIVE, pool_size=pool_size)
    port = free_port()
    log_path = log_dir / f"auth-server-{name}.log"
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
    server = Server(name, env["ASYNC_DB_AUTH_SITE_APP_NAME"], port, process, log_path)
    try:
        await wait_ready(server)
    except BaseException:
        await stop_server(server)
        raise
    return server


def spec(server: Server, cookie: str, connections: int, duration: float) -> LoadSpec:
    return LoadSpec(
        host=HOST,
        port=server.port,
        method="GET",
        path=PATH,
        rows=1,
        connections=connections,
        duration=duration,
        seed=0,
        headers=(f"Cookie: sessionid={cookie}",),
    )


async def same_answers(servers: dict[str, Server], cookie: str) -> None:
    """Both servers answer the logged-in user's 10 books, the same JSON."""
    bodies = {}
    for name, server in servers.items():
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            writer.write(
                f"GET {PATH} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
                f"Cookie: sessionid={cookie}\r\nConnection: close\r\n\r\n".encode()
            )
            from benchmarks.http.load import read_response

            status, _, body = await read_response(reader)
        finally:
            writer.close()
        if status != 200:
            raise AssertionError(f"the {name} server answered {status}: {body!r}")
        data = json.loads(body)
        if data["user"] != "bench" or len(data["books"]) != 10:
            raise AssertionError(f"the {name} server answered {data!r}")
        if any(len(book["tags"]) != 3 for book in data["books"]):
            raise AssertionError(f"the {name} server's prefetch: {data!r}")
        bodies[name] = body
    if len(set(bodies.values())) != 1:
        raise AssertionError(f"the servers disagree: {bodies!r}")
    status, _ = await http_get(servers[NATIVE].port, PATH)
    if status != 403:
        raise AssertionError(f"an anonymous request got {status}, not 403")


async def run(
    dsn: str, config: HttpConfig, tool: str, observer: Observer, log_dir: Path
) -> AuthResult:
    """The comparison (see the module docstring)."""
    schema = f"bench_auth_{secrets.token_hex(4)}"
    quick = config.rounds <= 1 and config.duration <= 2
    duration = 1.5 if quick else config.duration
    warmup = 0.5 if quick else config.warmup
    await observer.conn.execute(f"CREATE SCHEMA {schema}".encode())
    servers: dict[str, Server] = {}
    try:
        cookie = await prepare(dsn, schema)
        started = await asyncio.gather(
            *(start(dsn, schema, n, config.pool_size, log_dir) for n in CONTENDERS),
            return_exceptions=True,
        )
        for name, s in zip(CONTENDERS, started, strict=True):
            if isinstance(s, Server):
                servers[name] = s
        failed = [s for s in started if isinstance(s, BaseException)]
        if failed:
            raise failed[0]
        progress(
            f"auth servers up: native on :{servers[NATIVE].port}, django on "
            f":{servers[DJANGO].port}"
        )
        await same_answers(servers, cookie)
        for name in CONTENDERS:
            progress(f"warm-up session + user + list {name} ({warmup:g}s)")
            await run_load(
                spec(servers[name], cookie, config.connections, warmup), tool
            )
        samples: dict[str, list[LoadResult]] = {n: [] for n in CONTENDERS}
        for round_ in range(config.rounds):
            order = CONTENDERS if round_ % 2 == 0 else CONTENDERS[::-1]
            for name in order:
                await observer.settle(servers[name].app_name, config.pool_size)
                load = await run_load(
                    spec(servers[name], cookie, config.connections, duration), tool
                )
                progress(
                    f"round {round_ + 1}/{config.rounds} session+user+list "
                    f"{name:<7} {load.rps:8,.0f} req/s  p50 {load.p50_ms:6.1f} ms  "
                    f"p99 {load.p99_ms:6.1f} ms  errors {load.errors}"
                )
                samples[name].append(load)
    finally:
        for server in servers.values():
            await stop_server(server)
        leaked = await observer.wait_gone(
            [s.app_name for s in servers.values()], within=10.0
        )
        await observer.conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())
    for server in servers.values():
        if server.exit_code != 0:
            progress(f"the auth {server.contender} server:\n{log_tail(server)}")
    return AuthResult(
        samples=samples,
        connections=config.connections,
        duration=duration,
        server_exits={s.contender: s.exit_code for s in servers.values()},
        server_log_errors={s.contender: s.log_errors for s in servers.values()},
        leaked_backends=leaked,
    )


__all__ = ["AuthResult", "run"]
