"""A real PgBouncer in front of the test server, for the tests.

The runner itself (:class:`PgBouncer`, the role PgBouncer logs in as, the
count of its server backends) lives in :mod:`async_db._pgbouncer`, shared with
the benchmarks; this module adds what only the tests need: the system user of
the test server and :func:`start_bouncer`, which skips a test when pgbouncer
is not installed (and fails it in CI, which installs it: ``.ci/run``).
"""

from __future__ import annotations

import os

import pytest

from async_db._pgbouncer import (
    BOUNCER_ROLE,
    PgBouncer,
    _free_port,
    bouncer_backends,
    bouncer_role,
    pgbouncer_missing,
)

__all__ = [
    "BOUNCER_ROLE",
    "PgBouncer",
    "_free_port",
    "bouncer_backends",
    "bouncer_role",
    "server_user",
    "start_bouncer",
]


def server_user(dsn: str) -> str:
    """The system user the test server runs as."""
    from tests import fix_db

    if fix_db._embedded:
        return str(fix_db._embedded[0]._server.system_user)
    return "postgres"


def start_bouncer(dsn: str, pool_mode: str, pool_size: int = 5) -> PgBouncer:
    missing = pgbouncer_missing()
    if missing is not None:
        # CI installs it (.ci/run); CI must not skip this.
        if os.environ.get("CI"):
            raise RuntimeError("pgbouncer is not installed, and CI must run these")
        pytest.skip(missing)
    bouncer = PgBouncer(dsn, server_user(dsn), pool_mode, pool_size)
    bouncer.start()
    return bouncer
