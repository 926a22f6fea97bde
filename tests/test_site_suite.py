"""The example site's test suite (``tests/site_tests``) passes, in rollback
mode, and leaves the database as it found it (issue 13, "Done when").

The site reads its database from ``$ASYNC_DB_SITE_DSN``: a throwaway
development database on the test server, holding the site's table with three
rows. Django's runner and pytest-django create ``test_<NAME>`` from it and run
the suite there in subprocesses (the suite's own settings, as a user runs it);
``--keepdb``/``--reuse-db`` keep the test database so that the observer can
check afterwards that the suite left nothing in it, and the development
database is untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from benchmarks.http.site.schema import create_statements

ROOT = Path(__file__).resolve().parent.parent
DEV_NAME = f"asyncdb_site_{os.getpid()}"
TEST_NAME = f"test_{DEV_NAME}"
TABLE = "async_db_site_item"
APP_NAME = "async-db-site-tests"
SITE_PYTEST = ["-m", "pytest", "-c", "tests/site_tests/pytest.ini", "tests/site_tests"]


@pytest.fixture
def site_database(observer: Any, dsn: str) -> Iterator[str]:
    for name in (TEST_NAME, DEV_NAME):
        observer.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    observer.execute(f'CREATE DATABASE "{DEV_NAME}"')
    try:
        with psycopg.connect(
            make_conninfo(dsn, dbname=DEV_NAME), autocommit=True
        ) as conn:
            for statement in create_statements(TABLE, rows=3):
                conn.execute(statement)
        yield make_conninfo(dsn, dbname=DEV_NAME)
    finally:
        for name in (TEST_NAME, DEV_NAME):
            observer.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(command: list[str], site_dsn: str) -> tuple[int, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "DJANGO_", "ASYNC_DB_SITE_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tests.site_tests.settings",
        PYTHONPATH=str(ROOT),
        PYTHONWARNINGS="error",
        ASYNC_DB_SITE_DSN=site_dsn,
        ASYNC_DB_SITE_APP_NAME=APP_NAME,
        ASYNC_DB_SITE_POOL_SIZE="2",
    )
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


def table_rows(dsn: str, dbname: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(make_conninfo(dsn, dbname=dbname)) as conn:
        return conn.execute(
            f'SELECT "id", "name", "value" FROM "{TABLE}" ORDER BY "id"'
        ).fetchall()


def check_left_as_found(observer: Any, dsn: str) -> None:
    # The test database holds nothing (everything was rolled back), the
    # development database its three rows as they were, and no connection of
    # the site is left on the server.
    assert table_rows(dsn, TEST_NAME) == []
    assert table_rows(dsn, DEV_NAME) == [(i, f"item {i}", 0) for i in (1, 2, 3)]
    backends = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
        [APP_NAME],
    ).fetchone()
    assert backends == (0,)


def test_site_suite_under_django_runner(
    observer: Any, dsn: str, site_database: str
) -> None:
    returncode, output = run(
        ["-m", "django", "test", "tests.site_tests.test_django_views", "--keepdb"],
        site_database,
    )
    assert returncode == 0, output
    assert "Ran 9 tests" in output and "OK" in output, output
    check_left_as_found(observer, dsn)


def test_site_suite_under_pytest_django(
    observer: Any, dsn: str, site_database: str
) -> None:
    returncode, output = run(
        [*SITE_PYTEST, "--reuse-db", "-q"],
        site_database,
    )
    assert returncode == 0, output
    # The TestCase module runs under pytest-django too.
    assert "16 passed" in output, output
    check_left_as_found(observer, dsn)
