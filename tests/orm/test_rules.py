"""The rules of issue 11, checked against the server: native ORM calls run on
the task's async connection, inside its transaction, and nowhere else."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import SynchronousOnlyOperation
from django.db import DatabaseError, connections
from django.db.models import DateTimeField, F, Func, IntegerField
from django.db.models.expressions import RawSQL
from django.db.transaction import TransactionManagementError
from django.test.utils import override_settings

from async_db import async_atomic, async_connections
from async_db.test import isolated
from tests.fix_db import TEST_APP_NAME, our_backends
from tests.orm_parity import SyncConnectionCounter
from tests.ormapp.models import Author, Book, Country, Note

pytestmark = pytest.mark.usefixtures("orm")

BACKEND_PID = Func(function="pg_backend_pid", output_field=IntegerField())


@pytest.fixture(autouse=True)
def no_sync_connection() -> Iterator[None]:
    with SyncConnectionCounter() as counter:
        yield
    assert counter.opened == []
    assert all(c.connection is None for c in connections.all(initialized_only=True))


@pytest.fixture
def clean_notes(observer: Any) -> Iterator[None]:
    observer.execute("DELETE FROM ormapp_note")
    try:
        yield
    finally:
        observer.execute("DELETE FROM ormapp_note")


async def server_shows(observer: Any, condition: str) -> None:
    """Poll pg_stat_activity until one of our backends matches ``condition``
    (bounded, so a broken test fails instead of hanging)."""
    query = (
        f"SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND {condition}"
    )
    async with asyncio.timeout(20):
        while True:
            if observer.execute(query, [TEST_APP_NAME]).fetchall():
                return
            await asyncio.sleep(0.01)


def committed_notes(observer: Any) -> list[str]:
    return [t for (t,) in observer.execute("SELECT text FROM ormapp_note ORDER BY id")]


async def raw_pid(alias: str = "default") -> int:
    async with async_connections[alias].cursor() as cursor:
        await cursor.execute("SELECT pg_backend_pid()")
        (pid,) = await cursor.fetchone()
        return int(pid)


async def orm_pid(alias: str | None = None) -> int:
    qs = Country.objects.annotate(pid=BACKEND_PID).values_list("pid", flat=True)
    if alias is not None:
        qs = qs.using(alias)
    pid = await qs[:1].aget()
    return int(pid)


async def test_native_calls_run_on_the_tasks_backend(observer: Any) -> None:
    assert await orm_pid() == await raw_pid()
    assert await orm_pid("other") == await raw_pid("other")
    assert await raw_pid("other") != await raw_pid()
    # Server side: the task's two async connections are all the server sees
    # of us; no sync connection was opened behind them.
    backends = {pid for pid, _ in our_backends(observer)}
    assert backends == {await raw_pid(), await raw_pid("other")}
    pid = (
        await Author.objects.annotate(pid=RawSQL("pg_backend_pid()", []))
        .values_list("pid", flat=True)
        .afirst()
    )
    assert pid == await raw_pid()


class NotesToOther:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return "other" if model is Note else None

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return "default" if model is Note else None


async def test_routers_choose_the_alias() -> None:
    with override_settings(DATABASE_ROUTERS=[NotesToOther()]):
        reads = Note.objects.annotate(pid=BACKEND_PID).values_list("pid", flat=True)
        assert reads.db == "other"
        async with async_atomic():
            note = await Note.objects.acreate(text="routed")  # written on default
            assert note._state.db == "default"
            assert await Note.objects.using("default").filter(pk=note.pk).aexists()
            # Reads go to 'other': another connection, outside this transaction.
            assert not await Note.objects.filter(pk=note.pk).aexists()
            async_connections["default"].set_rollback(True)
        await Note.objects.acreate(text="seen by other")
        assert await reads.aget() == await raw_pid("other")
        await Note.objects.using("default").filter(text="seen by other").adelete()


async def test_rolled_back_block_leaves_nothing_and_sees_its_own_rows(
    observer: Any, clean_notes: None
) -> None:
    with pytest.raises(ZeroDivisionError):
        async with async_atomic():
            note = await Note.objects.acreate(text="a")
            await Note.objects.abulk_create([Note(text="b"), Note(text="c")])
            await Note.objects.filter(text="b").aupdate(text="b2")
            await Note.objects.filter(text="c").adelete()
            async with async_atomic():  # a savepoint, rolled back alone
                await Note.objects.acreate(text="inner")
                async_connections["default"].set_rollback(True)
            # The block's own uncommitted rows, on its connection:
            assert [n.text async for n in Note.objects.order_by("pk")] == ["a", "b2"]
            assert await Note.objects.filter(pk=note.pk).aexists()
            assert committed_notes(observer) == []  # nothing visible outside
            1 / 0  # noqa: B018
    assert committed_notes(observer) == []


async def test_committed_block_and_on_commit(observer: Any, clean_notes: None) -> None:
    from async_db.transaction import on_commit

    seen: list[list[str]] = []

    async def after() -> None:
        seen.append(committed_notes(observer))

    async with async_atomic():
        await Note.objects.acreate(text="kept")
        await on_commit(after)
        assert seen == []
    assert seen == [["kept"]]


WINDOW = Country.objects.annotate(
    pid=BACKEND_PID,
    start=RawSQL("statement_timestamp()", [], output_field=DateTimeField()),
    end=RawSQL(
        "(SELECT clock_timestamp() FROM pg_sleep(0.3))",
        [],
        output_field=DateTimeField(),
    ),
).values_list("pid", "start", "end")


@pytest.mark.parametrize("alias", ["default", "pooled"])
async def test_gather_overlaps_on_separate_connections(
    alias: str, global_pools: None
) -> None:
    async def read() -> tuple[int, Any, Any]:
        return await WINDOW.using(alias)[:1].aget()  # type: ignore[no-any-return]

    results = await asyncio.gather(read(), read(), read())
    pids = {pid for pid, _, _ in results}
    assert len(pids) == 3  # three backends
    # Server clock: every query started before any of them ended.
    assert max(start for _, start, _ in results) < min(end for _, _, end in results)


async def test_cancelled_native_write_commits_nothing_leaks_nothing(
    observer: Any, clean_notes: None
) -> None:
    started = asyncio.Event()

    async def write() -> None:
        async with async_atomic():
            await Note.objects.acreate(text="cancelled")
            started.set()
            await (
                Note.objects.annotate(s=RawSQL("(SELECT 1 FROM pg_sleep(30))", []))
                .values_list("s", flat=True)
                .afirst()
            )

    task = asyncio.create_task(write())
    await started.wait()
    await server_shows(
        observer,
        "query LIKE '%%pg_sleep(30)%%' AND state = 'active'",
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert committed_notes(observer) == []
    # The task's connection went away with it (the autouse leak check
    # confirms no backend is left).
    assert await Note.objects.acount() == 0


async def test_select_for_update_blocks_a_second_task(
    observer: Any, clean_notes: None
) -> None:
    (pk,) = observer.execute(
        "INSERT INTO ormapp_note (text, n, updated) VALUES ('locked', 0, now()) "
        "RETURNING id"
    ).fetchone()
    locked, release = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with async_atomic():
            note = await Note.objects.select_for_update().aget(pk=pk)
            locked.set()
            await release.wait()
            note.n = 1
            await note.asave(update_fields=["n"])

    async def second() -> int:
        async with async_atomic():
            note = await Note.objects.select_for_update(of=("self",)).aget(pk=pk)
            return int(note.n)

    holder = asyncio.create_task(first())
    await locked.wait()
    waiter = asyncio.create_task(second())
    # The second task's backend waits on the row lock (server evidence).
    await server_shows(observer, "wait_event_type = 'Lock'")
    assert not waiter.done()
    async with async_atomic():
        with pytest.raises(DatabaseError, match="could not obtain lock"):
            async with async_atomic():
                await Note.objects.select_for_update(nowait=True).aget(pk=pk)
        assert [n async for n in Note.objects.select_for_update(skip_locked=True)] == []
    release.set()
    await holder
    assert await waiter == 1  # it ran after the commit, and saw it


async def test_select_for_update_outside_a_transaction_is_djangos_error() -> None:
    with pytest.raises(
        TransactionManagementError,
        match=r"select_for_update cannot be used outside of a transaction\.",
    ):
        await Note.objects.select_for_update().afirst()


async def test_queries_log_and_execute_wrappers_see_native_calls() -> None:
    conn = async_connections["default"]
    seen: list[str] = []

    async def wrapper(execute: Any, sql: str, params: Any, many: bool, ctx: Any) -> Any:
        assert ctx["connection"] is conn
        seen.append(sql)
        return await execute(sql, params, many, ctx)

    conn.force_debug_cursor = True
    try:
        with conn.execute_wrapper(wrapper):
            await Author.objects.filter(name="Ann").aget()
            await Author.objects.filter(age=34).acount()
    finally:
        conn.force_debug_cursor = False
    assert len(seen) == 2
    assert seen[0].startswith('SELECT "ormapp_author"."id"')
    assert "COUNT(*)" in seen[1]
    assert [q["sql"].split(" ")[0] for q in conn.queries[-2:]] == ["SELECT", "SELECT"]


async def test_isolated_rolls_back_native_writes(
    observer: Any, clean_notes: None
) -> None:
    async with isolated():
        await Note.objects.acreate(text="isolated")
        await Author.objects.filter(name="Ann").aupdate(age=F("age") + 1)
        assert await Note.objects.acount() == 1
    assert committed_notes(observer) == []
    assert (await Author.objects.aget(name="Ann")).age == 34


async def test_spawned_tasks_follow_the_transaction_guard() -> None:
    async with async_atomic():
        await Note.objects.acount()
        with pytest.raises(TransactionManagementError, match="new_connections"):
            await asyncio.create_task(Note.objects.acount())
    assert await asyncio.create_task(Note.objects.acount()) >= 0


async def test_lazy_loads_stay_forbidden() -> None:
    book = await Book.objects.aget(title="A1")
    with pytest.raises(SynchronousOnlyOperation):
        _ = book.author
    partial = await Author.objects.only("name").aget(name="Ann")
    with pytest.raises(SynchronousOnlyOperation):
        _ = partial.age
    loaded = await Book.objects.select_related("author").aget(title="A1")
    assert loaded.author.name == "Ann"  # loaded: no query


async def test_server_version_for_compilation_comes_from_the_async_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JSONObject compiles differently on PostgreSQL 16+ (Django reads
    ``features.is_postgresql_16``, i.e. the server version, while compiling):
    a fresh compile connection in a fresh task, whose async connection isn't
    open yet, connects it and compiles with its server version."""
    from django.db.models.functions import JSONObject

    from async_db.models.sql import compile_connection

    monkeypatch.setattr(compile_connection, "_instances", {})

    async def fresh_task() -> tuple[Any, int, int]:
        conn = async_connections["default"]
        assert conn.connection is None
        value = (
            await Author.objects.annotate(j=JSONObject(n="name"))
            .values_list("j", flat=True)
            .aget(name="Ann")
        )
        compiled = compile_connection.compile_connection(conn)
        return value, compiled.pg_version, conn.connection.info.server_version

    value, compiled_version, server_version = await asyncio.create_task(fresh_task())
    assert value == {"n": "Ann"}
    assert compiled_version == server_version
