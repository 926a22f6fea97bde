"""A real streaming replica: an embedded primary and a standby made with
``pg_basebackup``, both on Unix sockets in temporary directories.

The primary is an embedded server of its own (``pgserver``), in both CI
passes: it allows replication connections (``initdb --auth=trust``), which the
machine's service does not, and nothing of it outlives the tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from async_db._embedded import EmbeddedServer


class ReplicaPair:
    """A primary and its standby; :meth:`stop_replica` takes the standby down."""

    def __init__(self) -> None:
        self.primary = EmbeddedServer()
        params = conninfo_to_dict(self.primary.dsn)
        self._user = str(params.get("user") or "postgres")
        self._primary_host = str(params["host"])
        self._primary_port = str(params.get("port") or 5432)
        from pgserver._commands import POSTGRES_BIN_PATH  # type: ignore[attr-defined]

        self._bin = Path(POSTGRES_BIN_PATH)
        self._system_user = self.primary._server.system_user
        self.dir = Path(tempfile.mkdtemp(prefix="async-db-replica-"))
        if self._system_user is not None:
            user = pwd.getpwnam(self._system_user)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.data = self.dir / "data"
        self.port = 5433
        self._run(
            "pg_basebackup",
            "-D", str(self.data), "-R", "-X", "stream",
            "-h", self._primary_host, "-p", self._primary_port, "-U", self._user,
        )  # fmt: skip
        self.start_replica()

    def _run(self, exe: str, *args: str) -> None:
        subprocess.run(
            [str(self._bin / exe), *args],
            check=True,
            capture_output=True,
            timeout=120,
            user=self._system_user,
        )

    @property
    def primary_dsn(self) -> str:
        return self.primary.dsn

    @property
    def replica_dsn(self) -> str:
        return f"host={self.dir} port={self.port} dbname=postgres user={self._user}"

    def start_replica(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=''"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options,
            "-l", str(self.dir / "log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.replica_dsn, connect_timeout=5) as conn:
                    if conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,):
                        return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def stop_replica(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop_replica()  # unless already stopped
        self.primary.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
