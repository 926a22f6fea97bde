"""Issue 12, item 4: ``native(instance)`` (``asave``, ``adelete``,
``arefresh_from_db`` on any model's instance, in place), ``raw()`` with
``async for``, and the saves of ``order_with_respect_to`` and
``select_on_save`` models, each in parity with the sync ORM."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import FieldDoesNotExist
from django.db import NotSupportedError, connection
from django.test.utils import CaptureQueriesContext

from async_db import async_atomic, async_connections
from async_db.models import native
from async_db.models.base import NativeInstance
from async_db.test import isolated
from tests.orm_parity import SyncConnectionCounter, normal, run_sync
from tests.ormapp.models import (
    Answer,
    Author,
    Book,
    Member,
    PlainThing,
    Question,
    SaveOverride,
    SelectOnSave,
)

pytestmark = pytest.mark.usefixtures("orm")


def shape(sql: str) -> str:
    """A statement with its literal numbers (pks, counters) elided."""
    return re.sub(r"\b\d+\b", "N", sql)


async def native_sql(fn: Callable[[], Awaitable[Any]]) -> tuple[Any, list[str]]:
    """``await fn()`` and the SQL the task's async connection ran; no sync
    connection may be opened meanwhile (by any thread)."""
    conn = async_connections["default"]
    conn.force_debug_cursor = True
    start = len(conn.queries_log)
    try:
        with SyncConnectionCounter() as counter:
            result = await fn()
    finally:
        conn.force_debug_cursor = False
    assert counter.opened == []
    return result, [shape(q["sql"]) for q in list(conn.queries_log)[start:]]


async def sync_sql(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``fn()`` with the sync ORM in a thread, and the SQL it ran."""

    def call() -> tuple[Any, list[str]]:
        with CaptureQueriesContext(connection) as captured:
            result = fn()
        return result, [shape(q["sql"]) for q in captured.captured_queries]

    result: tuple[Any, list[str]] = await run_sync(call)
    return result


def fields_of(obj: Any, *exclude: str) -> dict[str, Any]:
    return {
        k: normal(v)
        for k, v in obj.__dict__.items()
        if k not in ("_state", "id", *exclude)
    }


# ##### native(instance) #####


def test_native_of_an_instance_is_its_model_methods() -> None:
    thing = PlainThing(name="x")
    proxy = native(thing)
    assert isinstance(proxy, NativeInstance)
    assert proxy.instance is thing
    with pytest.raises(TypeError, match="a model instance, not int"):
        native(1)


async def test_asave_insert_and_update_fields_on_a_plain_model() -> None:
    thing = PlainThing(name="a", n=1)
    _, statements = await native_sql(lambda: native(thing).asave())
    assert thing.pk is not None
    assert (thing._state.adding, thing._state.db) == (False, "default")
    thing.n, thing.note = 2, "not saved"
    _, updates = await native_sql(lambda: native(thing).asave(update_fields=["n"]))
    row = (
        await native(PlainThing.objects.filter(pk=thing.pk)).values("n", "note").aget()
    )
    assert row == {"n": 2, "note": ""}  # only update_fields were written

    def sync_side() -> list[list[str]]:
        other = PlainThing(name="a", n=1)
        with CaptureQueriesContext(connection) as first:
            other.save()
        other.n, other.note = 2, "not saved"
        with CaptureQueriesContext(connection) as second:
            other.save(update_fields=["n"])
        other.delete()
        return [
            [shape(q["sql"]) for q in first.captured_queries],
            [shape(q["sql"]) for q in second.captured_queries],
        ]

    await native(thing).adelete()
    assert [statements, updates] == await run_sync(sync_side)
    assert statements[0].startswith('INSERT INTO "ormapp_plainthing"')
    assert [s.split(" ")[0] for s in updates] == ["UPDATE"]


async def test_asave_inside_a_rolled_back_block_leaves_nothing(observer: Any) -> None:
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        async with async_atomic():
            thing = PlainThing(name="rolled-back")
            await native(thing).asave()
            # The block sees its own write.
            assert await native(PlainThing.objects.filter(name="rolled-back")).aexists()
            raise Rollback
    (count,) = observer.execute(
        "SELECT count(*) FROM ormapp_plainthing WHERE name = 'rolled-back'"
    ).fetchone()
    assert count == 0


@isolated()
async def test_adelete_in_place_with_djangos_return_value() -> None:
    thing = PlainThing(name="doomed")
    await native(thing).asave()
    pk = thing.pk
    assert await native(thing).adelete() == (1, {"ormapp.PlainThing": 1})
    assert thing.pk is None  # Django clears the pk of a deleted instance
    assert not await native(PlainThing.objects.filter(pk=pk)).aexists()


@isolated()
async def test_arefresh_from_db_in_place_with_fields() -> None:
    thing = PlainThing(name="r", n=1, note="first")
    await native(thing).asave()
    await native(PlainThing.objects.filter(pk=thing.pk)).aupdate(n=5, note="second")
    same = thing
    await native(thing).arefresh_from_db(fields=["n"])
    assert thing is same
    assert (thing.n, thing.note) == (5, "first")  # only the fields asked for
    await native(thing).arefresh_from_db()
    assert thing.note == "second"
    deferred = await native(PlainThing.objects.defer("note")).aget(pk=thing.pk)
    await native(deferred).arefresh_from_db()
    # Django reloads the loaded fields only: the deferred one stays deferred.
    assert deferred.get_deferred_fields() == {"note"}


async def test_arefresh_from_db_parity() -> None:
    """The same refresh natively and with the sync ORM: same field values,
    same deferred set, same SQL."""
    thing = await native(PlainThing).acreate(name="p", n=3, note="n")
    try:

        async def native_refresh() -> Any:
            obj = await native(PlainThing.objects.only("name")).aget(pk=thing.pk)
            await native(obj).arefresh_from_db(fields=["n"])
            return obj

        def sync_refresh() -> Any:
            obj = PlainThing.objects.only("name").get(pk=thing.pk)
            obj.refresh_from_db(fields=["n"])
            return obj

        native_obj, native_statements = await native_sql(native_refresh)
        sync_obj, sync_statements = await sync_sql(sync_refresh)
        assert normal(native_obj) == normal(sync_obj)
        assert native_statements == sync_statements
    finally:
        await native(thing).adelete()


@isolated()
async def test_contrib_auth_user_saves_natively() -> None:
    """``User`` overrides ``save()`` (``AbstractBaseUser``): its async twin
    runs ``password_changed()`` for a new password, as ``save()`` does."""
    user = await native(User).acreate(username="native-ann")
    user.set_password("s3cret-pw")
    assert user._password == "s3cret-pw"
    await native(user).asave(update_fields=["password"])
    assert user._password is None  # password_changed() ran, as in save()
    again = await native(User).aget(pk=user.pk)
    assert again.check_password("s3cret-pw")
    await native(User.objects.filter(pk=user.pk)).aupdate(first_name="Ann")
    await native(user).arefresh_from_db(fields=["first_name"])
    assert user.first_name == "Ann"


@isolated()
async def test_a_custom_user_model_on_the_mixin_saves_like_save() -> None:
    """``AsyncModelMixin.asave()`` on an ``AbstractBaseUser`` subclass runs
    the twin of ``AbstractBaseUser.save()``, as ``save()`` would."""
    member = Member(name="mixin-member")
    member.set_password("pw-1")
    await member.asave()
    assert member._password is None  # password_changed() ran
    created = await Member.objects.acreate(name="mixin-created", password="x")
    assert created._password is None
    assert (await Member.objects.aget(pk=member.pk)).check_password("pw-1")


@isolated()
async def test_overridden_save_and_delete_are_refused_before_any_query() -> None:
    obj = SaveOverride(name="x")

    async def run() -> None:
        with pytest.raises(NotSupportedError, match=r"SaveOverride overrides save\(\)"):
            await native(obj).asave()

    _, statements = await native_sql(run)
    assert statements == []
    obj.pk = 1
    with pytest.raises(NotSupportedError, match=r"overrides delete\(\)"):
        await native(obj).adelete()


# ##### raw() with async for #####


async def raw_parity(make: Callable[[], Any]) -> list[Any]:
    async def native_eval() -> list[Any]:
        return [obj async for obj in make()]

    native_result, native_statements = await native_sql(native_eval)
    sync_result, sync_statements = await sync_sql(lambda: list(make()))
    assert normal(native_result) == normal(sync_result)
    assert native_statements == sync_statements
    return native_result


async def test_raw_async_for_in_parity() -> None:
    books = await raw_parity(
        lambda: Book.objects.raw("SELECT * FROM ormapp_book ORDER BY title")
    )
    assert [b.title for b in books] == ["A1", "A2", "B1", "C1", "D1"]


async def test_raw_with_params_translations_and_annotations() -> None:
    authors = await raw_parity(
        lambda: Author.objects.raw(
            "SELECT id, name AS who, age * 2 AS twice, data FROM ormapp_author "
            "WHERE age > %s ORDER BY name",
            [30],
            translations={"who": "name"},
        )
    )
    assert [(a.name, a.twice) for a in authors] == [
        ("Ann", 68),
        ("Bob", 102),
        ("Dee", 68),
    ]
    # Deferred fields stay deferred (a lazy load would be sync).
    assert "age" in authors[0].get_deferred_fields()
    by_dict = await raw_parity(
        lambda: Author.objects.raw(
            "SELECT * FROM ormapp_author WHERE name = %(name)s", {"name": "Bob"}
        )
    )
    assert by_dict[0].data == [1, "two", None]  # JSONField's converter ran


async def test_raw_on_a_model_you_dont_own_and_its_errors() -> None:
    users = [u async for u in native(User.objects).raw("SELECT * FROM auth_user")]
    assert users == [u async for u in native(User.objects.all())]
    with pytest.raises(
        FieldDoesNotExist, match="Raw query must include the primary key"
    ):
        [a async for a in Author.objects.raw("SELECT name FROM ormapp_author")]


async def test_raw_with_prefetch_related_in_parity() -> None:
    def make() -> Any:
        return Author.objects.raw(
            "SELECT * FROM ormapp_author ORDER BY name"
        ).prefetch_related("book_set")

    def shape_of(authors: Any) -> list[Any]:
        # The prefetched caches: read without a query.
        return [(a.name, sorted(b.title for b in a.book_set.all())) for a in authors]

    async def native_eval() -> list[Any]:
        return shape_of([a async for a in make()])

    native_result, native_statements = await native_sql(native_eval)
    sync_result, sync_statements = await sync_sql(lambda: shape_of(list(make())))
    assert native_result == sync_result
    assert native_result[0] == ("Ann", ["A1", "A2"])
    assert native_statements == sync_statements  # the raw query, one prefetch
    assert len(native_statements) == 2


async def test_raw_inside_async_atomic_sees_the_blocks_rows() -> None:
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        async with async_atomic():
            await native(PlainThing).acreate(name="raw-uncommitted")
            rows = [
                t
                async for t in native(PlainThing.objects).raw(
                    "SELECT * FROM ormapp_plainthing WHERE name = %s",
                    ["raw-uncommitted"],
                )
            ]
            assert [t.name for t in rows] == ["raw-uncommitted"]
            raise Rollback


# ##### order_with_respect_to and select_on_save #####


async def test_order_with_respect_to_saves_in_parity() -> None:
    async def native_side() -> list[Any]:
        question = await Question.objects.acreate(text="owrt")
        for text in ("a", "b", "c"):
            await Answer(question=question, text=text).asave()
        await native(Answer).acreate(question=question, text="d")
        return [
            (a.text, a._order)
            async for a in Answer.objects.filter(question=question).order_by("_order")
        ]

    def sync_side() -> list[Any]:
        question = Question.objects.create(text="owrt")
        for text in ("a", "b", "c"):
            Answer(question=question, text=text).save()
        Answer.objects.create(question=question, text="d")
        return [
            (a.text, a._order)
            for a in Answer.objects.filter(question=question).order_by("_order")
        ]

    native_result, native_statements = await native_sql(native_side)
    sync_result, sync_statements = await sync_sql(sync_side)
    assert native_result == sync_result == [("a", 0), ("b", 1), ("c", 2), ("d", 3)]
    assert native_statements == sync_statements
    assert any("MAX" in s and "_order" in s for s in native_statements)


async def test_select_on_save_in_parity() -> None:
    native_obj = await SelectOnSave.objects.acreate(name="n")
    sync_obj = await SelectOnSave.objects.acreate(name="n")

    async def native_update() -> None:
        native_obj.n = 7
        await native_obj.asave()

    def sync_update() -> None:
        sync_obj.n = 7
        sync_obj.save()

    _, native_statements = await native_sql(native_update)
    _, sync_statements = await sync_sql(sync_update)
    assert native_statements == sync_statements
    # Django's select_on_save: SELECT (exists), then UPDATE.
    assert [s.split(" ")[0] for s in native_statements] == ["SELECT", "UPDATE"]
    assert (await SelectOnSave.objects.aget(pk=native_obj.pk)).n == 7
