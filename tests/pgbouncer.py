"""A real PgBouncer in front of the test server, on a loopback port.

Debian's ``pgbouncer`` package (``.ci/run`` installs it). PgBouncer refuses to
run as root, so it runs as the test server's own system user (``postgres`` for
the service, pgserver's user for the embedded server), which can also reach
the embedded server's Unix socket. It logs in to the server as a role of its
own (``async_db_bouncer``), so the tests can count exactly the server
connections PgBouncer holds.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

#: The server role PgBouncer logs in as.
BOUNCER_ROLE = "async_db_bouncer"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """One PgBouncer process; :meth:`restart` stops and starts it on the same
    port (every client connection is dropped)."""

    def __init__(self, dsn: str, run_as: str, pool_mode: str, pool_size: int) -> None:
        params = conninfo_to_dict(dsn)
        self.dbname = str(params.get("dbname") or "postgres")
        host = str(params.get("host") or "127.0.0.1")
        port = str(params.get("port") or 5432)
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="async-db-bouncer-"))
        user = pwd.getpwnam(run_as)
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.run_as = run_as
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={port} user={BOUNCER_ROLE}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = any\n"
            f"pool_mode = {pool_mode}\n"
            f"default_pool_size = {pool_size}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            f"max_db_connections = {pool_size}\n"
            "max_client_conn = 2000\n"
            f"logfile = {self.dir}/pgbouncer.log\n"
            f"pidfile = {self.dir}/pgbouncer.pid\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={self.dbname} user=any"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["pgbouncer", "-u", self.run_as, str(self.dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"PgBouncer did not start: {self.log()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)  # immediate (SIGINT waits for queries)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            process.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text()[-2000:] if path.exists() else "(no log)"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def server_user(dsn: str) -> str:
    """The system user the test server runs as."""
    from tests import fix_db

    if fix_db._embedded:
        return str(fix_db._embedded[0]._server.system_user)
    return "postgres"


@contextlib.contextmanager
def bouncer_role(observer: Any) -> Iterator[None]:
    observer.execute(f"DROP ROLE IF EXISTS {BOUNCER_ROLE}")
    observer.execute(f"CREATE ROLE {BOUNCER_ROLE} LOGIN SUPERUSER")
    try:
        yield
    finally:
        observer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            [BOUNCER_ROLE],
        )
        for _ in range(100):
            left = observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                [BOUNCER_ROLE],
            ).fetchone()[0]
            if not left:
                break
            time.sleep(0.05)
        observer.execute(f"DROP ROLE IF EXISTS {BOUNCER_ROLE}")


def bouncer_backends(observer: Any) -> int:
    """Server backends PgBouncer holds right now."""
    return int(
        observer.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
            [BOUNCER_ROLE],
        ).fetchone()[0]
    )


def start_bouncer(dsn: str, pool_mode: str, pool_size: int = 5) -> PgBouncer:
    if shutil.which("pgbouncer") is None:
        # CI installs it (.ci/run); CI must not skip this.
        if os.environ.get("CI"):
            raise RuntimeError("pgbouncer is not installed, and CI must run these")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    bouncer = PgBouncer(dsn, server_user(dsn), pool_mode, pool_size)
    bouncer.start()
    return bouncer
