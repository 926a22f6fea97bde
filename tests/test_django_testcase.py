"""``async_db.test.TestCase`` and ``TransactionTestCase`` under Django's own
test runner (issue 13, item 1).

A small project (an ``AsyncModel``, a Channels consumer) is written to
``tmp_path`` with a throwaway *development* database on the test server as
``DATABASES["default"]``; ``python -m django test`` runs its tests in a
subprocess, exactly as a user runs them: Django's runner creates
``test_<NAME>``, runs the classes, and drops it (which fails with "being
accessed by other users" if async-db left a connection). The project's tests
record what they saw in a file; the observer checks the server afterwards.
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

DEV_NAME = f"asyncdb_djtc_{os.getpid()}"
TEST_NAME = f"test_{DEV_NAME}"

MODELS = """
from django.db import models

from async_db.models import AsyncModel


class Book(AsyncModel):
    title = models.CharField(max_length=100)

    class Meta:
        app_label = "shop"
"""

CONSUMER = """
import json

from channels.generic.websocket import AsyncWebsocketConsumer

from shop.models import Book


class BookConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        book = await Book.objects.acreate(title=json.loads(text_data)["title"])
        await self.send(text_data=json.dumps({"id": book.pk}))
"""

TESTS = '''
import asyncio
import json
import os

import psycopg
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from django.db.transaction import TransactionManagementError

from async_db import async_atomic, async_connections
from async_db.test import TestCase, TransactionTestCase
from async_db.transaction import on_commit
from shop.consumers import BookConsumer
from shop.models import Book


def seen(line):
    with open(os.environ["SEEN_FILE"], "a") as out:
        out.write(line + "\\n")


def observed_count():
    """What another session sees: committed rows only."""
    with psycopg.connect(os.environ["OBSERVER_DSN"]) as observer:
        return observer.execute("SELECT count(*) FROM shop_book").fetchone()[0]


def sync_pid():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


class SharedSessionTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.fixture = Book.objects.create(title="fixture")

    async def test_native_orm_sees_set_up_test_data(self):
        book = await Book.objects.aget(title="fixture")
        self.assertEqual(book.pk, self.fixture.pk)
        seen(f"fixture {await Book.objects.acount()}")

    async def test_sync_code_sees_async_rows(self):
        await Book.objects.acreate(title="async")
        async with async_atomic():
            await Book.objects.acreate(title="nested")
        sync_count = await sync_to_async(Book.objects.count)()
        django_count = await Book.objects.filter(pk__gt=0).acount()
        seen(f"sync {sync_count} native {django_count} observer "
             f"{await sync_to_async(observed_count)()}")

    async def test_one_server_session(self):
        book = await Book.objects.annotate(pid=RawSQL("pg_backend_pid()", [])).aget()
        seen(f"same session {book.pid == await sync_to_async(sync_pid)()}")

    async def test_rows_of_other_tests_are_gone(self):
        seen(f"start {await Book.objects.acount()}")

    async def test_savepoint_rolls_back(self):
        try:
            async with async_atomic():
                await Book.objects.acreate(title="undone")
                raise ValueError
        except ValueError:
            pass
        seen(f"savepoint {await Book.objects.acount()}")

    async def test_sync_atomic_inside(self):
        def write():
            with transaction.atomic():
                Book.objects.create(title="sync atomic")
        await sync_to_async(write)()
        seen(f"sync atomic {await Book.objects.acount()}")

    async def test_assert_num_queries(self):
        with self.assertNumQueries(3):
            await Book.objects.acount()
            await Book.objects.acreate(title="counted")
            await sync_to_async(Book.objects.count)()
        try:
            with self.assertNumQueries(2):
                await Book.objects.acount()
        except AssertionError as exc:
            seen("num queries " + str(exc).splitlines()[0])

    async def test_capture_on_commit_callbacks(self):
        ran = []

        async def notify():
            ran.append("async")

        async with self.captureOnCommitCallbacks(execute=True) as callbacks:
            async with async_atomic():
                await Book.objects.acreate(title="callback")
                await on_commit(notify)
                await on_commit(lambda: ran.append("sync"))
        seen(f"callbacks {len(callbacks)} {ran}")

    async def test_spawned_task_forbidden(self):
        try:
            await asyncio.create_task(Book.objects.acreate(title="spawned"))
        except TransactionManagementError:
            seen("spawned forbidden")

    async def test_consumer_forbidden(self):
        communicator = WebsocketCommunicator(BookConsumer.as_asgi(), "/ws/")
        await communicator.connect()
        await communicator.send_to(text_data=json.dumps({"title": "ws"}))
        try:
            await communicator.receive_from()
            await communicator.disconnect()
        except TransactionManagementError:
            seen("consumer forbidden")

    def test_sync_test_unchanged(self):
        seen(f"sync test {Book.objects.count()}")


class ShareModeTests(TestCase):
    spawned_tasks = "share"

    @classmethod
    def setUpTestData(cls):
        Book.objects.create(title="fixture")

    async def test_gather(self):
        await asyncio.gather(
            *(Book.objects.acreate(title=f"task {i}") for i in range(5))
        )
        seen(f"gather {await sync_to_async(Book.objects.count)()}")

    async def test_sync_and_async_gathered(self):
        # One session, two sides: the lock makes each wait for the other.
        counts = await asyncio.gather(
            *(sync_to_async(Book.objects.count)() for _ in range(50)),
            *(Book.objects.acount() for _ in range(50)),
        )
        seen(f"gathered {sorted(set(counts))}")

    async def test_consumer(self):
        communicator = WebsocketCommunicator(BookConsumer.as_asgi(), "/ws/")
        connected, _ = await communicator.connect()
        await communicator.send_to(text_data=json.dumps({"title": "ws"}))
        reply = json.loads(await communicator.receive_from())
        await communicator.disconnect()
        book = await Book.objects.aget(pk=reply["id"])
        seen(f"consumer {connected} {book.title} "
             f"{await sync_to_async(observed_count)()}")


class FlushTests(TransactionTestCase):
    async def test_1_commits(self):
        await Book.objects.acreate(title="committed")
        seen(f"flush committed {await sync_to_async(observed_count)()}")

    async def test_2_flushed(self):
        seen(f"flush start {await Book.objects.acount()}")
        await asyncio.create_task(Book.objects.acreate(title="spawned"))
        seen(f"flush spawned {await Book.objects.acount()}")
'''


def write_project(root: Path, dev_dsn: str, pooled: bool) -> None:
    entry = settings_dict_from_dsn(dev_dsn, application_name="async-db-djtc")
    if pooled:
        entry["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 2, "timeout": 10}
    (root / "shop").mkdir()
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "models.py").write_text(MODELS)
    (root / "shop" / "consumers.py").write_text(CONSUMER)
    (root / "shop" / "tests.py").write_text(TESTS)
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


def run_django_tests(root: Path, dsn: str, *args: str) -> tuple[int, str, list[str]]:
    seen = root / "seen.txt"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "DJANGO_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="projsettings",
        PYTHONPATH=str(root),
        PYTHONWARNINGS="error",
        SEEN_FILE=str(seen),
        OBSERVER_DSN=make_conninfo(dsn, dbname=TEST_NAME),
    )
    result = subprocess.run(
        [sys.executable, "-m", "django", "test", "-v", "2", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = seen.read_text().splitlines() if seen.exists() else []
    return result.returncode, result.stdout + result.stderr, lines


EXPECTED = {
    # setUpTestData's row, read by the native ORM.
    "fixture 1",
    # Sync code (sync_to_async) sees the async test's rows and the other way
    # round; another session sees nothing: uncommitted.
    "sync 3 native 3 observer 0",
    "same session True",
    "start 1",
    "savepoint 1",
    "sync atomic 2",
    "num queries 1 != 2 : 1 queries executed, 2 expected",
    "callbacks 2 ['async', 'sync']",
    "spawned forbidden",
    "consumer forbidden",
    "sync test 1",
    "gathered [1]",
    # Share mode: 5 spawned tasks' rows in the test's transaction; the
    # consumer's write too, uncommitted.
    "gather 6",
    "consumer True ws 0",
    # TransactionTestCase: committed for real, then flushed by Django.
    "flush committed 1",
    "flush start 0",
    "flush spawned 1",
}


@pytest.mark.parametrize("pooled", [False, True], ids=["unpooled", "pooled"])
def test_django_runner(
    tmp_path: Path, dsn: str, observer: Any, dev_database: str, pooled: bool
) -> None:
    write_project(tmp_path, make_conninfo(dsn, dbname=DEV_NAME), pooled)
    returncode, output, seen = run_django_tests(tmp_path, dsn, "--keepdb")
    assert returncode == 0, output
    assert "Ran 16 tests" in output, output
    assert set(seen) == EXPECTED, (seen, output)
    assert len(seen) == len(EXPECTED), seen
    # Everything rolled back or flushed: the kept test database is empty ...
    with psycopg.connect(make_conninfo(dsn, dbname=TEST_NAME)) as conn:
        assert conn.execute("SELECT count(*) FROM shop_book").fetchone() == (0,)
    # ... and nothing of async-db is left on the server.
    backends = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
        ["async-db-djtc"],
    ).fetchone()
    assert backends == (0,)


def test_django_runner_drops_the_test_database(
    tmp_path: Path, dsn: str, observer: Any, dev_database: str
) -> None:
    """Without --keepdb, Django drops test_<NAME> at the end: no connection of
    async-db is left on it (a pooled alias)."""
    write_project(tmp_path, make_conninfo(dsn, dbname=DEV_NAME), pooled=True)
    returncode, output, _ = run_django_tests(tmp_path, dsn)
    assert returncode == 0, output
    assert "being accessed by other users" not in output
    assert f"Destroying test database for alias 'default' ('{TEST_NAME}')" in output
    row = observer.execute(
        "SELECT count(*) FROM pg_database WHERE datname = %s", [TEST_NAME]
    ).fetchone()
    assert row == (0,)
