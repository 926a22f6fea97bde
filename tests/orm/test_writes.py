"""Native writes: acreate, asave, aupdate, abulk_create/abulk_update,
aget_or_create, aupdate_or_create, fast-path adelete, and their signals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DatabaseError, IntegrityError, NotSupportedError, models
from django.db.models import F
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from async_db import async_atomic, async_connections, new_connections
from async_db.models import native
from async_db.test import isolated
from tests.orm_parity import SyncConnectionCounter
from tests.ormapp.models import Author, Book, Item, Note

pytestmark = pytest.mark.usefixtures("orm")


@pytest.fixture(autouse=True)
def no_sync_connection() -> Iterator[None]:
    """No test of this module opens a sync connection: every write is native."""
    with SyncConnectionCounter() as counter:
        yield
    assert counter.opened == []


def committed_notes(observer: Any) -> list[str]:
    return [t for (t,) in observer.execute("SELECT text FROM ormapp_note ORDER BY id")]


async def sql_of(coro_fn: Any) -> tuple[Any, list[str]]:
    conn = async_connections["default"]
    conn.force_debug_cursor = True
    start = len(conn.queries_log)
    try:
        result = await coro_fn()
    finally:
        conn.force_debug_cursor = False
    return result, [q["sql"] for q in list(conn.queries_log)[start:]]


@isolated()
async def test_acreate_and_asave_insert_update() -> None:
    note, statements = await sql_of(lambda: Note.objects.acreate(text="a", n=1))
    assert note.pk is not None and note._state.adding is False
    assert note._state.db == "default"
    assert len(statements) == 1 and statements[0].startswith(
        'INSERT INTO "ormapp_note"'
    )
    assert "RETURNING" in statements[0]
    first_updated = note.updated
    note.n = 2
    _, statements = await sql_of(note.asave)
    assert [s.split(" ")[0] for s in statements] == ["UPDATE"]
    assert note.updated > first_updated  # auto_now pre_save ran
    assert (await Note.objects.aget(pk=note.pk)).n == 2

    fresh = Note(text="b")
    await fresh.asave()
    assert await Note.objects.acount() == 2


@isolated()
async def test_asave_update_fields_force_insert_force_update() -> None:
    note = await Note.objects.acreate(text="a", n=1)
    note.text, note.n = "changed", 5
    _, statements = await sql_of(lambda: note.asave(update_fields=["n"]))
    assert len(statements) == 1 and '"text"' not in statements[0]
    back = await Note.objects.aget(pk=note.pk)
    assert (back.text, back.n) == ("a", 5)

    with pytest.raises(ValueError, match="Cannot force both insert and updating"):
        await note.asave(force_insert=True, force_update=True)
    async with async_atomic():  # the savepoint keeps the outer block usable
        with pytest.raises(IntegrityError):
            async with async_atomic():
                await Note(pk=note.pk, text="dup").asave(force_insert=True)
    # As in Django, these errors mark the enclosing block for rollback (each
    # gets its own savepoint here).
    with pytest.raises(DatabaseError, match=r"Forced update did not affect any rows\."):
        async with async_atomic():
            await Note(pk=note.pk + 1000, text="ghost").asave(force_update=True)
    with pytest.raises(DatabaseError, match="update_fields did not affect any rows"):
        async with async_atomic():
            await Note(pk=note.pk + 1000, text="ghost").asave(update_fields=["text"])
    assert await Note.objects.acount() == 1


@isolated()
async def test_deferred_instance_saves_loaded_fields_only() -> None:
    await Note.objects.acreate(text="a", n=1)
    partial = await Note.objects.only("n").aget()
    partial.n = 9
    _, statements = await sql_of(partial.asave)
    assert len(statements) == 1 and '"text"' not in statements[0]
    await partial.arefresh_from_db()
    assert partial.n == 9
    await Note.objects.aupdate(n=F("n") + 1)
    await partial.arefresh_from_db(fields=["n"])
    assert partial.n == 10


@isolated()
async def test_aupdate_counts_rows() -> None:
    await Note.objects.abulk_create([Note(text=str(i), n=i) for i in range(5)])
    assert await Note.objects.filter(n__gte=3).aupdate(text="big") == 2
    assert await Note.objects.filter(text="big").acount() == 2
    assert await Note.objects.filter(pk__in=[]).aupdate(text="none") == 0


@isolated()
async def test_abulk_create_sets_pks_and_state() -> None:
    notes = await Note.objects.abulk_create([Note(text=f"n{i}") for i in range(3)])
    assert all(n.pk is not None and not n._state.adding for n in notes)
    assert [n.text async for n in Note.objects.order_by("pk")] == ["n0", "n1", "n2"]
    explicit = await Note.objects.abulk_create([Note(pk=10_000, text="explicit")])
    assert explicit[0].pk == 10_000
    await Note.objects.abulk_create(
        [Note(pk=10_000, text="dup")], ignore_conflicts=True
    )
    assert (await Note.objects.aget(pk=10_000)).text == "explicit"
    assert await Note.objects.abulk_create([]) == []


@isolated()
async def test_abulk_update() -> None:
    notes = await Note.objects.abulk_create([Note(text=f"n{i}", n=i) for i in range(4)])
    for note in notes:
        note.n *= 10
    assert await Note.objects.abulk_update(notes, ["n"], batch_size=3) == 4
    assert [
        n async for n in Note.objects.order_by("n").values_list("n", flat=True)
    ] == [
        0,
        10,
        20,
        30,
    ]


@isolated()
async def test_aget_or_create_and_aupdate_or_create() -> None:
    obj, created = await Note.objects.aget_or_create(text="x", defaults={"n": 3})
    assert created and obj.n == 3
    again, created = await Note.objects.aget_or_create(text="x", defaults={"n": 4})
    assert not created and again.pk == obj.pk and again.n == 3

    (updated, created), statements = await sql_of(
        lambda: Note.objects.aupdate_or_create(text="x", defaults={"n": 7})
    )
    assert not created and updated.n == 7
    assert any("FOR UPDATE" in s for s in statements)
    made, created = await Note.objects.aupdate_or_create(
        text="y", defaults={"n": 1}, create_defaults={"n": 2}
    )
    assert created and made.n == 2


@isolated()
async def test_aget_or_create_integrity_error_is_reraised_after_savepoint() -> None:
    ann = await Author.objects.aget(name="Ann")
    with pytest.raises(IntegrityError):
        await Author.objects.aget_or_create(name="New", defaults={"uid": ann.uid})
    # The create ran in a savepoint: the test's transaction is still usable.
    assert await Author.objects.filter(name="New").acount() == 0


async def test_aget_or_create_retries_get_after_a_concurrent_create(
    observer: Any,
) -> None:
    async def concurrent_create(sender: Any, instance: Any, **kwargs: Any) -> None:
        if instance.text == "race" and instance.n == 0:
            async with new_connections():
                await Note.objects.acreate(text="race", n=1)

    observer.execute("CREATE UNIQUE INDEX ormapp_note_race ON ormapp_note (text)")
    pre_save.connect(concurrent_create, sender=Note)
    try:
        obj, created = await Note.objects.aget_or_create(text="race", defaults={"n": 0})
        assert not created and obj.n == 1  # the other connection's row
    finally:
        pre_save.disconnect(concurrent_create, sender=Note)
        observer.execute("DROP INDEX ormapp_note_race")
        observer.execute("DELETE FROM ormapp_note")


async def test_writes_of_a_rolled_back_block_leave_nothing(observer: Any) -> None:
    with pytest.raises(RuntimeError):
        async with async_atomic():
            await Note.objects.acreate(text="gone")
            assert await Note.objects.filter(text="gone").aexists()  # sees its own row
            assert committed_notes(observer) == []
            raise RuntimeError
    assert committed_notes(observer) == []


async def test_fast_delete_paths(observer: Any) -> None:
    try:
        note = await Note.objects.acreate(text="a")
        await Note.objects.abulk_create([Note(text="b"), Note(text="c")])
        assert await note.adelete() == (1, {"ormapp.Note": 1})
        assert note.pk is None
        assert await Note.objects.filter(text="b").adelete() == (1, {"ormapp.Note": 1})
        assert committed_notes(observer) == ["c"]
        with pytest.raises(ValueError, match="can't be deleted because its id"):
            await note.adelete()
    finally:
        observer.execute("DELETE FROM ormapp_note")


@isolated()
async def test_cascading_delete_is_native() -> None:
    """Part 2 (issue 12): the cascade runs natively (tests/orm/test_deletion.py
    has the parity checks)."""
    ann = await Author.objects.aget(name="Ann")
    conn = async_connections["default"]
    result, statements = await sql_of(ann.adelete)
    assert result == (3, {"ormapp.Book": 2, "ormapp.Author": 1})
    assert any(s.startswith('DELETE FROM "ormapp_book"') for s in statements)
    assert not await Author.objects.filter(name="Ann").aexists()
    assert await Book.objects.filter(author__name="Ann").acount() == 0
    assert conn.in_atomic_block


@isolated()
async def test_save_signals_in_the_calling_task() -> None:
    calls: list[tuple[str, Any]] = []

    async def async_pre(sender: Any, instance: Any, **kwargs: Any) -> None:
        calls.append(("async pre", instance.pk))

    async def async_post(
        sender: Any, instance: Any, created: bool, **kwargs: Any
    ) -> None:
        # Same task, same connection, same transaction: sees the new row.
        seen = await Note.objects.filter(pk=instance.pk).aexists()
        calls.append(("async post", (created, seen, kwargs["using"])))

    def sync_post(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        calls.append(("sync post", created))

    pre_save.connect(async_pre, sender=Note)
    post_save.connect(async_post, sender=Note)
    post_save.connect(sync_post, sender=Note)
    try:
        note = await Note.objects.acreate(text="s")
        note.n = 1
        await note.asave(update_fields=["n"])
    finally:
        pre_save.disconnect(async_pre, sender=Note)
        post_save.disconnect(async_post, sender=Note)
        post_save.disconnect(sync_post, sender=Note)
    assert calls == [
        ("async pre", None),
        ("sync post", True),  # sync receivers first, as Signal.asend
        ("async post", (True, True, "default")),
        ("async pre", note.pk),
        ("sync post", False),
        ("async post", (False, True, "default")),
    ]


async def test_delete_signals(observer: Any) -> None:
    calls: list[str] = []

    async def pre(sender: Any, instance: Any, origin: Any, **kwargs: Any) -> None:
        calls.append(f"pre {instance.text} {type(origin).__name__}")

    def post(sender: Any, instance: Any, **kwargs: Any) -> None:
        calls.append(f"post {instance.text}")

    pre_delete.connect(pre, sender=Note)
    post_delete.connect(post, sender=Note)
    try:
        a = await Note.objects.acreate(text="a")
        await Note.objects.acreate(text="b")
        await Note.objects.acreate(text="c")
        assert await a.adelete() == (1, {"ormapp.Note": 1})
        assert await Note.objects.filter(text__in=["b", "c"]).adelete() == (
            2,
            {"ormapp.Note": 2},
        )
    finally:
        pre_delete.disconnect(pre, sender=Note)
        post_delete.disconnect(post, sender=Note)
        observer.execute("DELETE FROM ormapp_note")
    assert calls == [
        "pre a Note",
        "post a",
        "pre b AsyncQuerySet",
        "pre c AsyncQuerySet",
        "post c",
        "post b",
    ]
    assert committed_notes(observer) == []


@isolated()
async def test_mixin_model_and_native_on_any_model() -> None:
    item = await Item.objects.acreate(name="bolt", qty=3)
    item.qty = 4
    await item.asave()
    await item.arefresh_from_db()
    assert item.qty == 4
    assert await item.adelete() == (1, {"ormapp.Item": 1})

    from django.contrib.auth.models import Group

    group = await native(Group).acreate(name="staff")
    assert group.pk is not None
    assert await native(Group.objects.filter(name="staff")).acount() == 1


async def test_model_overriding_save_is_refused() -> None:
    class Audited(models.Model):
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "ormapp"
            db_table = "ormapp_audited_never_created"

        def save(self, *args: Any, **kwargs: Any) -> None:
            super().save(*args, **kwargs)

    with pytest.raises(NotSupportedError, match="Audited overrides save"):
        await native(Audited).acreate(name="x")


@isolated()
async def test_positional_asave_arguments_warn_as_in_django_5_2() -> None:
    from django.utils.deprecation import RemovedInDjango60Warning

    note = await Note.objects.acreate(text="p")
    note.n = 3
    with pytest.warns(RemovedInDjango60Warning, match="positional arguments to asave"):
        await note.asave(False, False, None, ["n"])
    assert (await Note.objects.aget(pk=note.pk)).n == 3


@isolated()
async def test_abulk_create_on_conflict() -> None:
    (ann,) = await Author.objects.abulk_create(
        [Author(name="Ann", age=99)],
        update_conflicts=True,
        update_fields=["age"],
        unique_fields=["name"],
    )
    stored = await Author.objects.aget(name="Ann")
    assert stored.age == 99 and ann.pk == stored.pk  # the row's pk, returned
    await Author.objects.abulk_create(
        [Author(name="Bob", age=1)], ignore_conflicts=True
    )
    assert (await Author.objects.aget(name="Bob")).age == 51
    with pytest.raises(ValueError, match="mutually exclusive"):
        await Author.objects.abulk_create(
            [Author(name="x")], ignore_conflicts=True, update_conflicts=True
        )
