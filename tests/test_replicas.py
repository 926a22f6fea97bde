"""Read replicas through DATABASE_ROUTERS, against a real streaming replica
(issue 14, item 2). Each scenario runs as a script with its own settings
(DATABASES = the primary and its replica, its own routers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.replica import ReplicaPair

ROOT = Path(__file__).resolve().parent.parent

PRELUDE = """\
import asyncio, faulthandler, json, os, time
faulthandler.dump_traceback_later(60, exit=True)
import django
from django.conf import settings
from async_db._embedded import settings_dict_from_dsn

primary = settings_dict_from_dsn(os.environ["PRIMARY"])
replica = settings_dict_from_dsn(os.environ["REPLICA"], connect_timeout=2)


class PrimaryReplicaRouter:
    def db_for_read(self, model, **hints):
        return "replica"

    def db_for_write(self, model, **hints):
        return "default"


ROUTERS = [PrimaryReplicaRouter()]
settings.configure(
    DATABASES={"default": primary, "replica": replica},
    DATABASE_ROUTERS=ROUTERS,
    USE_TZ=True,
)
django.setup()

from django.db import models, router
from django.db.models.expressions import RawSQL

from async_db import async_atomic, async_connections
from async_db.models import AsyncModel
from async_db.routers import ReadYourWritesRouter


class Note(AsyncModel):
    text = models.TextField()

    class Meta:
        app_label = "replicademo"
        db_table = "replica_note"


def use_routers(*routers):
    ROUTERS[:] = routers
    router.__dict__.pop("routers", None)  # Django caches the instances


async def on_replica(text):
    note = await Note.objects.annotate(r=RawSQL("pg_is_in_recovery()", [])).aget(
        text=text
    )
    return note.r


async def replicated(text, within=30):
    from django.db import ProgrammingError

    deadline = time.monotonic() + within
    while True:
        try:
            if await Note.objects.filter(text=text).aexists():
                return
        except ProgrammingError:
            pass  # the table itself has not reached the replica yet
        assert time.monotonic() < deadline, f"{text!r} never reached the replica"
        await asyncio.sleep(0.05)
"""

ROUTING = """
async def main():
    out = {}
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute(
            "CREATE TABLE IF NOT EXISTS replica_note (id serial PRIMARY KEY, text text)"
        )
    note = await Note.objects.acreate(text="a")        # a write: the primary
    out["written_on"] = note._state.db
    await replicated("a")                               # replication, visible
    out["read_in_recovery"] = await on_replica("a")     # a read: the replica
    forced = Note.objects.using("default").annotate(r=RawSQL("pg_is_in_recovery()", []))
    out["using_default_in_recovery"] = (await forced.aget(text="a")).r

    # Inside a transaction on the write alias, without read-your-writes.
    async with async_atomic():
        await Note.objects.acreate(text="b")
        out["sees_own_write_plain"] = await Note.objects.filter(text="b").aexists()
        async with async_atomic():
            pass
    use_routers(ReadYourWritesRouter(), PrimaryReplicaRouter())
    async with async_atomic():
        await Note.objects.acreate(text="c")
        out["sees_own_write_ryw"] = await Note.objects.filter(text="c").aexists()
        out["ryw_read_in_recovery"] = (
            await Note.objects.annotate(r=RawSQL("pg_is_in_recovery()", [])).aget(
                text="c"
            )
        ).r

        async def other_task():
            return await Note.objects.filter(text="c").aexists()

        # Another task (with its own connection, outside the block) is routed
        # as before: the replica, which cannot see the uncommitted row.
        from async_db import new_connections

        async def independent():
            async with new_connections():
                return await other_task()

        out["other_task_sees"] = await asyncio.create_task(independent())
    out["after_block_in_recovery"] = None
    await replicated("c")
    out["after_block_in_recovery"] = await on_replica("c")
    print(json.dumps(out))


asyncio.run(main())
"""

REPLICA_DOWN = """
from django.db import OperationalError


async def main():
    out = {}
    started = time.monotonic()
    try:
        await Note.objects.acount()
    except OperationalError as exc:
        out["error"] = type(exc).__name__
    out["seconds"] = time.monotonic() - started
    note = await Note.objects.acreate(text="while the replica is down")
    out["write_on"] = note._state.db
    count = await Note.objects.using("default").filter(text=note.text).acount()
    out["written"] = count
    print(json.dumps(out))


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def pair() -> Iterator[ReplicaPair]:
    replicas = ReplicaPair()
    try:
        yield replicas
    finally:
        replicas.close()


def run(pair: ReplicaPair, body: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "PRIMARY": pair.primary_dsn,
        "REPLICA": pair.replica_dsn,
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", PRELUDE + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_reads_go_to_the_replica_and_writes_to_the_primary(pair: ReplicaPair) -> None:
    out = run(pair, ROUTING)
    assert out["written_on"] == "default"
    assert out["read_in_recovery"] is True  # the replica answered
    assert out["using_default_in_recovery"] is False  # using() wins
    # Django's routing: the replica can't see the block's uncommitted row.
    assert out["sees_own_write_plain"] is False
    # ReadYourWritesRouter: the block's own connection answers, on the primary.
    assert out["sees_own_write_ryw"] is True
    assert out["ryw_read_in_recovery"] is False
    assert out["other_task_sees"] is False
    assert out["after_block_in_recovery"] is True


def test_a_replica_that_is_down(pair: ReplicaPair) -> None:
    pair.stop_replica()
    try:
        out = run(pair, REPLICA_DOWN)
    finally:
        pair.start_replica()
    assert out["error"] == "OperationalError"
    # Bounded by connect_timeout (2 s here), never a hang.
    assert out["seconds"] < 2 + 5
    # Writes on the primary are unaffected.
    assert out["write_on"] == "default" and out["written"] == 1
