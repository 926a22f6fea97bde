"""A real PgBouncer in front of a PostgreSQL server, on a loopback port.

Used by the test suite and the benchmarks (``python -m benchmarks deploy``),
as :mod:`async_db._embedded` is for the server itself; not part of the public
API. It needs the ``pgbouncer`` binary (Debian's ``pgbouncer`` package):
:func:`pgbouncer_missing` says why it cannot run, callers skip with that reason.

PgBouncer refuses to run as root, so it runs as the server's own system user
(``postgres`` for a packaged server, pgserver's user for the embedded one),
which can also reach the embedded server's Unix socket. It logs in to the
server as a role of its own (:data:`BOUNCER_ROLE`, created and dropped by
:func:`bouncer_role`), so that :func:`bouncer_backends` counts exactly the
server connections PgBouncer holds.
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

from psycopg.conninfo import conninfo_to_dict

#: The server role PgBouncer logs in as.
BOUNCER_ROLE = "async_db_bouncer"
#: Seconds :meth:`PgBouncer.start` waits for the port to accept connections.
START_TIMEOUT = 10.0


def _free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pgbouncer_missing() -> str | None:
    """Why PgBouncer cannot run here (no binary on ``PATH``), or None."""
    if shutil.which("pgbouncer") is None:
        return "pgbouncer is not installed (apt-get install pgbouncer)"
    return None


class PgBouncer:
    """One PgBouncer process in front of the server of ``dsn``, in
    ``pool_mode`` (``session`` or ``transaction``) with at most ``pool_size``
    server connections in all (``max_db_connections``, no reserve) and up to
    ``max_client_conn`` clients. :meth:`start` and :meth:`stop` may be called
    again (:meth:`restart` drops every client connection); :meth:`close` also
    removes its directory."""

    def __init__(
        self,
        dsn: str,
        run_as: str,
        pool_mode: str,
        pool_size: int,
        max_client_conn: int = 2000,
    ) -> None:
        params = conninfo_to_dict(dsn)
        self.dbname = str(params.get("dbname") or "postgres")
        host = str(params.get("host") or "127.0.0.1")
        port = str(params.get("port") or 5432)
        self.port = _free_port()
        self.pool_size = pool_size
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
            f"max_client_conn = {max_client_conn}\n"
            f"logfile = {self.dir}/pgbouncer.log\n"
            f"pidfile = {self.dir}/pgbouncer.pid\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """A libpq DSN of the database through PgBouncer."""
        return f"host=127.0.0.1 port={self.port} dbname={self.dbname} user=any"

    def start(self) -> None:
        """Start the process and wait until its port accepts connections;
        RuntimeError with the end of its log if it does not."""
        self.process = subprocess.Popen(
            ["pgbouncer", "-u", self.run_as, str(self.dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"PgBouncer did not start: {self.log()}")

    def stop(self) -> None:
        """SIGTERM (immediate: SIGINT would wait for queries), SIGKILL after
        10 seconds; always reaps the process."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
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
        """The end of PgBouncer's log file."""
        path = self.dir / "pgbouncer.log"
        return path.read_text()[-2000:] if path.exists() else "(no log)"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def bouncer_role(observer: Any) -> Iterator[None]:
    """Create :data:`BOUNCER_ROLE` on the server of ``observer`` (a sync
    autocommit psycopg connection) for the block; at its end terminate the
    role's backends, wait (bounded) until they are gone, and drop it."""
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
            if not bouncer_backends(observer):
                break
            time.sleep(0.05)
        observer.execute(f"DROP ROLE IF EXISTS {BOUNCER_ROLE}")


def server_system_user(observer: Any) -> str:
    """The system user the server of ``observer`` (a sync psycopg connection
    as a superuser) runs as: the owner of its data directory when that is on
    this machine, else ``postgres`` (Debian's packaged server)."""
    row = observer.execute("SHOW data_directory").fetchone()
    try:
        return pwd.getpwuid(os.stat(row[0]).st_uid).pw_name
    except (OSError, KeyError):
        return "postgres"


def bouncer_backends(observer: Any) -> int:
    """Server backends PgBouncer holds right now (``observer``: a sync
    autocommit psycopg connection to the server)."""
    row = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
        [BOUNCER_ROLE],
    ).fetchone()
    return int(row[0])
