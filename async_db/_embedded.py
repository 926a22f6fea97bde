"""A database to run on: ``$ASYNC_DB_DSN`` or an embedded throwaway server.

Used by the test suite and the benchmarks so that both run on a fresh machine
with no PostgreSQL installed. The embedded server comes from the ``pgserver``
package (in the ``dev`` extra); it listens on a Unix socket only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg.conninfo import conninfo_to_dict

#: Environment variable naming an external PostgreSQL DSN.
DSN_ENV = "ASYNC_DB_DSN"


class EmbeddedServer:
    """A throwaway PostgreSQL cluster in a temporary directory."""

    def __init__(self) -> None:
        self.pgdata = tempfile.mkdtemp(prefix="async-db-pg-")
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells).
            warnings.simplefilter("ignore")
            try:
                import pgserver
            except ImportError as exc:  # pragma: no cover - dev extra missing
                raise RuntimeError(
                    f"No ${DSN_ENV} is set and the 'pgserver' package is not "
                    f"installed: run pip install -e '.[dev]' or set ${DSN_ENV}."
                ) from exc
            self._server = pgserver.get_server(  # type: ignore[attr-defined]
                self.pgdata, cleanup_mode="delete"
            )

    @property
    def dsn(self) -> str:
        return str(self._server.get_uri("postgres"))

    def restart(self) -> None:
        """Restart the server in place (fault-injection tests): every open
        connection is dropped; same socket, same data."""
        from pathlib import Path

        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        pgdata = Path(self.pgdata)
        # -l is required: without it the server would hold pg_ctl's stdout.
        pg_ctl(
            ["-w", "-m", "fast", "-l", str(pgdata / "log"), "restart"],
            pgdata=pgdata,
            user=self._server.system_user,
            timeout=60,
        )

    def stop(self) -> None:
        self._server.cleanup()
        shutil.rmtree(self.pgdata, ignore_errors=True)


@contextmanager
def database_dsn() -> Iterator[str]:
    """Yield ``$ASYNC_DB_DSN`` if set, else the DSN of a fresh embedded server
    that is stopped and deleted on exit."""
    dsn = os.environ.get(DSN_ENV)
    if dsn:
        yield dsn
        return
    server = EmbeddedServer()
    try:
        yield server.dsn
    finally:
        server.stop()


def settings_dict_from_dsn(dsn: str, **options: Any) -> dict[str, Any]:
    """A Django ``DATABASES`` entry for ``dsn``; extra ``options`` go to OPTIONS."""
    params: dict[str, Any] = conninfo_to_dict(dsn)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname", "postgres"),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "OPTIONS": {**params, **options},
    }
