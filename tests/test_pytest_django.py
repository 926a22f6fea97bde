"""pytest-django's ``django_db`` covers async-db (issue 13, item 2).

A small project (an ``AsyncModel``, a Channels consumer, the minimal
``conftest.py`` of docs/testing.rst) on a throwaway development database runs
its tests with pytest-django in a subprocess, with pytest-asyncio's event loop
per test and per session. In pytest-django's per-test transaction the async
test's native ORM calls share the session of Django's connection: sync
fixtures' rows are visible to them, theirs to sync code, and everything is
rolled back; ``transaction=True`` commits and pytest-django flushes.
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
from psycopg.conninfo import make_conninfo

from async_db._embedded import settings_dict_from_dsn
from tests.test_django_testcase import CONSUMER, MODELS

DEV_NAME = f"asyncdb_pdj_{os.getpid()}"
TEST_NAME = f"test_{DEV_NAME}"
APP_NAME = "async-db-pdj"
PYTEST = [
    sys.executable,
    "-m",
    "pytest",
    "-p",
    "no:cacheprovider",
    "-p",
    "pytest_django",
]

TESTS = '''
import asyncio
import json
import os

import psycopg
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.db.models.expressions import RawSQL
from django.db.transaction import TransactionManagementError

from async_db import async_atomic
from shop.consumers import BookConsumer
from shop.models import Book


def seen(line):
    with open(os.environ["SEEN_FILE"], "a") as out:
        out.write(line + "\\n")


def observed_count():
    with psycopg.connect(os.environ["OBSERVER_DSN"]) as observer:
        return observer.execute("SELECT count(*) FROM shop_book").fetchone()[0]


def sync_pid():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.fixture
def fixture_book(db):
    """A sync fixture, with the sync ORM."""
    return Book.objects.create(title="fixture")


async def test_native_orm_sees_sync_fixture(fixture_book):
    book = await Book.objects.aget(title="fixture")
    await Book.objects.acreate(title="async")
    async with async_atomic():
        await Book.objects.acreate(title="nested")
    seen(f"fixture {book.pk == fixture_book.pk} "
         f"sync {await sync_to_async(Book.objects.count)()} "
         f"observer {await sync_to_async(observed_count)()}")


@pytest.mark.django_db
async def test_rolled_back():
    seen(f"start {await Book.objects.acount()}")


@pytest.mark.django_db
async def test_one_session():
    book = await Book.objects.annotate(pid=RawSQL("pg_backend_pid()", [])).acreate(
        title="pid"
    )
    row = await Book.objects.annotate(pid=RawSQL("pg_backend_pid()", [])).aget()
    seen(f"same session {row.pid == await sync_to_async(sync_pid)()}")


@pytest.mark.django_db
async def test_spawned_task_forbidden():
    with pytest.raises(TransactionManagementError):
        await asyncio.create_task(Book.objects.acreate(title="spawned"))
    seen("spawned forbidden")


@pytest.mark.django_db
@pytest.mark.async_db(spawned_tasks="share")
async def test_share_mode(fixture_book):
    await asyncio.gather(*(Book.objects.acreate(title=f"t{i}") for i in range(4)))
    communicator = WebsocketCommunicator(BookConsumer.as_asgi(), "/ws/")
    await communicator.connect()
    await communicator.send_to(text_data=json.dumps({"title": "ws"}))
    reply = json.loads(await communicator.receive_from())
    await communicator.disconnect()
    assert await Book.objects.filter(pk=reply["id"]).aexists()
    seen(f"share {await sync_to_async(Book.objects.count)()} "
         f"observer {await sync_to_async(observed_count)()}")


@pytest.mark.async_db
async def test_async_db_mark_alone(fixture_book):
    seen(f"async_db mark {await Book.objects.acount()}")


@pytest.mark.django_db(transaction=True)
async def test_transaction_1_commits():
    await Book.objects.acreate(title="committed")
    seen(f"committed {await sync_to_async(observed_count)()}")


@pytest.mark.django_db(transaction=True)
async def test_transaction_2_flushed():
    seen(f"flushed {await Book.objects.acount()}")
'''


def write_project(root: Path, dev_dsn: str, loop_scope: str) -> None:
    entry = settings_dict_from_dsn(dev_dsn, application_name=APP_NAME)
    entry["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 2, "timeout": 10}
    (root / "shop").mkdir()
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "models.py").write_text(MODELS)
    (root / "shop" / "consumers.py").write_text(CONSUMER)
    (root / "test_shop.py").write_text(TESTS)
    (root / "projsettings.py").write_text(
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
    # The minimal conftest.py and configuration of docs/testing.rst.
    (root / "conftest.py").write_text('pytest_plugins = ["async_db.pytest_plugin"]\n')
    (root / "pytest.ini").write_text(
        textwrap.dedent(
            f"""
            [pytest]
            DJANGO_SETTINGS_MODULE = projsettings
            asyncio_mode = auto
            asyncio_default_fixture_loop_scope = {loop_scope}
            asyncio_default_test_loop_scope = {loop_scope}
            filterwarnings = error
            """
        )
    )


@pytest.fixture
def dev_database(observer: Any) -> Iterator[str]:
    for name in (TEST_NAME, DEV_NAME):
        observer.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    observer.execute(f'CREATE DATABASE "{DEV_NAME}"')
    try:
        yield DEV_NAME
    finally:
        for name in (TEST_NAME, DEV_NAME):
            observer.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_pytest(root: Path, dsn: str, *args: str) -> tuple[int, str, list[str]]:
    seen = root / "seen.txt"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "DJANGO_"))
    }
    env.update(
        PYTHONPATH=str(root),
        SEEN_FILE=str(seen),
        OBSERVER_DSN=make_conninfo(dsn, dbname=TEST_NAME),
    )
    result = subprocess.run(
        [*PYTEST, "-v", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = seen.read_text().splitlines() if seen.exists() else []
    return result.returncode, result.stdout + result.stderr, lines


EXPECTED = [
    # A sync fixture's row read by the native ORM; the async rows counted by
    # the sync ORM; nothing committed (another session sees no row).
    "fixture True sync 3 observer 0",
    "start 0",
    "same session True",
    "spawned forbidden",
    # Share mode: the fixture, 4 gathered tasks and the consumer's row.
    "share 6 observer 0",
    "async_db mark 1",
    "committed 1",
    "flushed 0",
]


@pytest.mark.parametrize("loop_scope", ["function", "session"])
def test_pytest_django_covers_async_db(
    tmp_path: Path, dsn: str, observer: Any, dev_database: str, loop_scope: str
) -> None:
    write_project(tmp_path, make_conninfo(dsn, dbname=DEV_NAME), loop_scope)
    returncode, output, seen = run_pytest(tmp_path, dsn, "--reuse-db")
    assert returncode == 0, output
    assert f"{len(EXPECTED)} passed" in output, output
    assert sorted(seen) == sorted(EXPECTED), (seen, output)
    # Every rollback test ran before the transactional ones (pytest-django's
    # order), and the kept test database holds nothing.
    with psycopg.connect(make_conninfo(dsn, dbname=TEST_NAME)) as conn:
        assert conn.execute("SELECT count(*) FROM shop_book").fetchone() == (0,)
    backends = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
        [APP_NAME],
    ).fetchone()
    assert backends == (0,)


def test_pytest_django_drops_the_test_database(
    tmp_path: Path, dsn: str, observer: Any, dev_database: str
) -> None:
    write_project(tmp_path, make_conninfo(dsn, dbname=DEV_NAME), "function")
    returncode, output, _ = run_pytest(tmp_path, dsn, "--create-db")
    assert returncode == 0, output
    assert "being accessed by other users" not in output
    row = observer.execute(
        "SELECT count(*) FROM pg_database WHERE datname = %s", [TEST_NAME]
    ).fetchone()
    assert row == (0,)
