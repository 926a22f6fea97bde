"""The test helpers never touch a real database (issue 10, item 6).

A throwaway *development* database (a real database on the test server, with
a table and 4 rows) is ``DATABASES["default"]`` of a small Django project
written to ``tmp_path``; pytest runs that project's tests in a subprocess (its
own settings and plugins), with and without pytest-django. They must run on
``test_<NAME>``, leave the development database's rows alone, and the test
database must be dropped at the end (no "being accessed by other users").
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import ProgrammingError
from psycopg.conninfo import make_conninfo

from async_db import async_connections
from async_db._embedded import settings_dict_from_dsn
from async_db.test import (
    flushed,
    is_test_database,
    isolated,
    use_test_databases,
)

DEV_NAME = f"asyncdb_dev_{os.getpid()}"
TEST_NAME = f"test_{DEV_NAME}"


def database_exists(observer: Any, name: str) -> bool:
    row = observer.execute(
        "SELECT count(*) FROM pg_database WHERE datname = %s", [name]
    ).fetchone()
    return bool(row[0])


def dev_rows(dsn: str) -> list[str]:
    with psycopg.connect(make_conninfo(dsn, dbname=DEV_NAME)) as conn:
        rows = conn.execute("SELECT title FROM shop_book ORDER BY id").fetchall()
    return [title for (title,) in rows]


@pytest.fixture
def dev_database(observer: Any, dsn: str) -> Iterator[str]:
    """A development database with a ``shop_book`` table and 4 rows."""
    for name in (TEST_NAME, DEV_NAME):
        observer.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    observer.execute(f'CREATE DATABASE "{DEV_NAME}"')
    try:
        with psycopg.connect(
            make_conninfo(dsn, dbname=DEV_NAME), autocommit=True
        ) as conn:
            conn.execute(
                "CREATE TABLE shop_book "
                "(id bigserial PRIMARY KEY, title varchar(100) NOT NULL)"
            )
            conn.execute(
                "INSERT INTO shop_book (title) VALUES ('a'), ('b'), ('c'), ('d')"
            )
        yield DEV_NAME
    finally:
        for name in (TEST_NAME, DEV_NAME):
            observer.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


PROJECT_TESTS = """
import os

import pytest

from async_db import async_connections


async def state():
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute("SELECT current_database(), count(*) FROM shop_book")
        database, count = await cursor.fetchone()
    with open(os.environ["SEEN_FILE"], "a") as seen:
        seen.write(f"{database} {count}\\n")
    return database, count


async def insert(title):
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute("INSERT INTO shop_book (title) VALUES (%s)", [title])


@pytest.mark.async_db(transaction=True)
async def test_1_writes_and_flushes():
    assert (await state())[1] == 0
    await insert("new")
    assert (await state())[1] == 1


@pytest.mark.async_db
async def test_2_rollback_mode():
    assert (await state())[1] == 0  # rows of other tests: flushed
    await insert("rolled back")
    assert (await state())[1] == 1


@pytest.mark.async_db(transaction=True)
async def test_3_after_rollback():
    assert (await state())[1] == 0
"""


# pytest-django's own database tests use async-db on the test database too.
PROJECT_DJANGO_DB_TEST = """
import os

import pytest

from async_db import async_connections


@pytest.mark.django_db
async def test_0_django_db_mark():
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute("SELECT current_database()")
        (database,) = await cursor.fetchone()
    with open(os.environ["SEEN_FILE"], "a") as seen:
        seen.write(f"django_db {database}\\n")
"""


def write_project(root: Path, dsn: str) -> None:
    entry = settings_dict_from_dsn(make_conninfo(dsn, dbname=DEV_NAME))
    # A pool: it must be closed when each test ends, or the test database
    # cannot be dropped at the end of the session.
    entry["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 2, "timeout": 10}
    (root / "shop").mkdir()
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "models.py").write_text(
        textwrap.dedent(
            """
            from django.db import models


            class Book(models.Model):
                title = models.CharField(max_length=100)
            """
        )
    )
    (root / "devsettings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "not secret"
            USE_TZ = True
            INSTALLED_APPS = ["shop"]
            DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
            DATABASES = {{"default": {entry!r}}}
            """
        )
    )
    # The minimal conftest of docs/testing.rst.
    (root / "conftest.py").write_text('pytest_plugins = ["async_db.pytest_plugin"]\n')
    (root / "pytest.ini").write_text(
        textwrap.dedent(
            """
            [pytest]
            asyncio_mode = auto
            asyncio_default_fixture_loop_scope = function
            filterwarnings = error
            """
        )
    )
    (root / "test_shop.py").write_text(PROJECT_TESTS)
    (root / "test_a_django_db.py").write_text(PROJECT_DJANGO_DB_TEST)


def run_project(
    root: Path, plugin_args: list[str], files: list[str]
) -> tuple[int, str, list[str]]:
    seen = root / "seen.txt"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "DJANGO_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="devsettings",
        PYTHONPATH=str(root),
        SEEN_FILE=str(seen),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-v",
            *plugin_args,
            *files,
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = seen.read_text().splitlines() if seen.exists() else []
    return result.returncode, result.stdout + result.stderr, lines


@pytest.mark.parametrize(
    "plugin_args",
    [
        pytest.param(["-p", "pytest_django"], id="pytest-django"),
        pytest.param(["-p", "no:django"], id="plain-pytest"),
    ],
)
def test_project_runs_on_its_test_database(
    tmp_path: Path,
    dsn: str,
    observer: Any,
    dev_database: str,
    plugin_args: list[str],
) -> None:
    write_project(tmp_path, dsn)
    with_pytest_django = "no:django" not in plugin_args
    files = ["test_shop.py"]
    if with_pytest_django:
        # First: the database setup happens for a plain django_db test.
        files.insert(0, "test_a_django_db.py")
    returncode, output, seen = run_project(tmp_path, plugin_args, files)
    assert returncode == 0, output
    assert f"{len(files) + 2} passed" in output, output
    if with_pytest_django:
        assert "django: version" in output, output  # pytest-django's header
        assert seen[0] == f"django_db {TEST_NAME}"
        seen = seen[1:]
    else:
        assert "django: version" not in output  # pytest-django is off
    # Every query ran on the test database Django names test_<NAME> (in
    # whatever order the runner chose: pytest-django runs rollback tests
    # first), each test starting from an empty table ...
    assert sorted(seen) == sorted(
        f"{TEST_NAME} {count}" for count in (0, 1, 0, 1, 0)
    ), seen
    # ... the development database kept its rows ...
    assert dev_rows(dsn) == ["a", "b", "c", "d"]
    # ... and the test database was dropped: no pool kept it busy.
    assert "being accessed by other users" not in output
    assert not database_exists(observer, TEST_NAME)


@pytest.fixture
def dev_alias(dev_database: str, dsn: str) -> Iterator[str]:
    """An alias 'dev' of the global handler on the development database (no
    TEST NAME: not a test database)."""
    from tests.fix_db import configured

    entry = configured(settings_dict_from_dsn(make_conninfo(dsn, dbname=DEV_NAME)))
    async_connections.settings["dev"] = entry
    try:
        yield "dev"
    finally:
        del async_connections.settings["dev"]


async def test_flushed_refuses_a_development_database(dev_alias: str, dsn: str) -> None:
    assert not is_test_database(dev_alias)
    ran = False
    with pytest.raises(
        ProgrammingError,
        match=rf"Refusing to flush database '{DEV_NAME}' \(alias 'dev'\): it is "
        r"not a test database",
    ):
        async with flushed(databases=[dev_alias], tables=["shop_book"]):
            ran = True
    assert not ran  # refused before the block could commit anything there
    assert dev_rows(dsn) == ["a", "b", "c", "d"]


async def test_isolated_refuses_a_development_database(
    dev_alias: str, dsn: str
) -> None:
    with pytest.raises(
        ProgrammingError,
        match=rf"Refusing to open rollback mode on database '{DEV_NAME}' "
        r"\(alias 'dev'\)",
    ):
        async with isolated(["default", dev_alias]):
            pass
    # Refused before opening anything, on any alias.
    assert not async_connections["default"].in_atomic_block
    assert dev_rows(dsn) == ["a", "b", "c", "d"]


def test_use_test_databases_follows_django(dev_database: str, dsn: str) -> None:
    """NAME switched as Django's setup_databases() switches it: recorded as a
    test database; switched back: not one any more."""
    from django.db import connections

    from async_db import AsyncConnectionHandler
    from tests.fix_db import configured

    entry = configured(settings_dict_from_dsn(make_conninfo(dsn, dbname=DEV_NAME)))
    handler = AsyncConnectionHandler({"default": entry})
    wrapper_settings = handler.settings["default"]
    django_entry = connections["default"].settings_dict
    old_name = django_entry["NAME"]
    old_test = django_entry["TEST"]
    try:
        # Django's test name for this alias is "test_" + NAME.
        django_entry["TEST"] = {**old_test, "NAME": None}
        django_entry["NAME"] = TEST_NAME
        use_test_databases(handler=handler)
        assert wrapper_settings["NAME"] == TEST_NAME  # updated in place
        assert is_test_database("default", handler)
        django_entry["NAME"] = "elsewhere"  # not a test name for it
        use_test_databases(handler=handler)
        assert not is_test_database("default", handler)
    finally:
        django_entry["NAME"] = old_name
        django_entry["TEST"] = old_test


async def test_use_test_databases_refuses_an_open_pool(dsn: str) -> None:
    """A pool open on the old database would keep serving it: refused, the
    settings unchanged, until the pool is closed."""
    from django.db import connections

    from async_db import AsyncConnectionHandler
    from tests.fix_db import POOLED_APP_NAME, configured

    entry = configured(settings_dict_from_dsn(dsn, application_name=POOLED_APP_NAME))
    entry["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 2, "timeout": 5}
    handler = AsyncConnectionHandler({"default": entry})
    django_entry = connections["default"].settings_dict
    old_name = django_entry["NAME"]
    try:
        async with handler["default"].cursor() as cursor:
            await cursor.execute("SELECT 1")
        django_entry["NAME"] = TEST_NAME
        with pytest.raises(
            ProgrammingError,
            match=rf"Cannot point database 'default' at '{TEST_NAME}': its "
            r"connection pool is open",
        ):
            use_test_databases(handler=handler)
        assert handler.settings["default"]["NAME"] == old_name
        await handler.close_pools()
        use_test_databases(handler=handler)
        assert handler.settings["default"]["NAME"] == TEST_NAME
    finally:
        django_entry["NAME"] = old_name
        await handler.close_pools()


async def test_setup_test_databases_refuses_the_event_loop() -> None:
    from async_db.test import setup_test_databases

    with pytest.raises(ProgrammingError, match="outside the event loop"):
        setup_test_databases()
