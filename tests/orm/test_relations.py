"""Related managers: native reads and writes, in parity with the sync ORM.

Each write scenario runs twice from the same starting rows: natively (in a
rolled-back ``isolated()`` block, counting sync connections: none may open)
and with Django's sync ORM (in a thread, inside a rolled-back ``atomic``).
Both runs must give the same return values, the same rows afterwards, the
same ``m2m_changed`` signals (action, sender, instance, reverse, model,
``pk_set``, using) in the same order, and the same number and kinds of
queries (the async wrapper's ``queries`` log against Django's
``CaptureQueriesContext``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connection, connections, transaction
from django.db.models import Model, QuerySet
from django.db.models.signals import m2m_changed
from django.test.utils import CaptureQueriesContext

from async_db import async_atomic, async_connections
from async_db.models import native
from async_db.test import isolated
from tests.orm_parity import SyncConnectionCounter, parity, run_sync
from tests.ormapp.models import (
    Author,
    Book,
    RelArticle,
    RelChapter,
    RelClub,
    RelMembership,
    RelNote,
    RelPerson,
    RelShelf,
    RelTag,
    RelVolume,
)

pytestmark = pytest.mark.usefixtures("orm")


# ##### The scenario harness #####


@dataclass(frozen=True)
class Ref:
    """The object created under ``name`` by the setup (or its pk)."""

    name: str
    pk: bool = False


@dataclass(frozen=True)
class QS:
    """A queryset argument, built on each side."""

    build: Callable[[], QuerySet[Any]]


@dataclass(frozen=True)
class CT:
    """The content type of ``model`` (Django's cache: warmed by a fixture)."""

    model: type[Model]


#: (name, model, field values); ``Ref`` values are resolved.
SETUP: list[tuple[str, type[Model], dict[str, Any]]] = [
    ("S1", RelShelf, {"name": "S1"}),
    ("S2", RelShelf, {"name": "S2"}),
    ("V1", RelVolume, {"title": "V1", "shelf": Ref("S1")}),
    ("V2", RelVolume, {"title": "V2", "shelf": Ref("S1")}),
    ("V3", RelVolume, {"title": "V3"}),
    ("V4", RelVolume, {"title": "V4", "shelf": Ref("S2")}),
    ("C1", RelChapter, {"title": "C1", "volume": Ref("V1")}),
    ("C2", RelChapter, {"title": "C2", "number": 2, "volume": Ref("V2")}),
    ("T1", RelTag, {"name": "T1"}),
    ("T2", RelTag, {"name": "T2"}),
    ("T3", RelTag, {"name": "T3"}),
    ("A1", RelArticle, {"title": "A1"}),
    ("A2", RelArticle, {"title": "A2"}),
    ("A1T1", RelArticle.tags.through, {"relarticle": Ref("A1"), "reltag": Ref("T1")}),
    ("P1", RelPerson, {"name": "P1"}),
    ("P2", RelPerson, {"name": "P2"}),
    ("P3", RelPerson, {"name": "P3"}),
    ("K1", RelClub, {"name": "K1"}),
    ("M1", RelMembership, {"person": Ref("P1"), "club": Ref("K1"), "role": "chair"}),
    (
        "N1",
        RelNote,
        {"text": "N1", "content_type": CT(RelShelf), "object_id": Ref("S1", pk=True)},
    ),
    (
        "N2",
        RelNote,
        {"text": "N2", "content_type": CT(RelShelf), "object_id": Ref("S1", pk=True)},
    ),
    (
        "N3",
        RelNote,
        {"text": "N3", "content_type": CT(RelShelf), "object_id": Ref("S2", pk=True)},
    ),
]

#: The rows compared after each scenario (built on each side).
SNAPSHOT: list[Callable[[], QuerySet[Any]]] = [
    lambda: RelVolume.objects.order_by("title").values_list("title", "shelf__name"),
    lambda: RelChapter.objects.order_by("title").values_list("title", "volume__title"),
    lambda: RelTag.objects.order_by("name").values_list("name", flat=True),
    lambda: RelArticle.tags.through.objects.order_by(
        "relarticle__title", "reltag__name"
    ).values_list("relarticle__title", "reltag__name"),
    lambda: RelPerson.friends.through.objects.order_by(
        "from_relperson__name", "to_relperson__name"
    ).values_list("from_relperson__name", "to_relperson__name"),
    lambda: RelPerson.objects.order_by("name").values_list("name", flat=True),
    lambda: RelMembership.objects.order_by("person__name", "club__name").values_list(
        "person__name", "club__name", "role"
    ),
    lambda: RelNote.objects.order_by("text").values_list("text", flat=True),
    lambda: (
        RelShelf.objects.filter(notes__isnull=False)
        .order_by("name", "notes__text")
        .values_list("name", "notes__text")
    ),
]

#: Models whose pks appear in ``pk_set``: pk -> name after the run.
NAMED = [RelShelf, RelVolume, RelTag, RelArticle, RelPerson, RelClub]


def _name(obj: Any) -> str:
    for attr in ("name", "title", "text"):
        if value := getattr(obj, attr, None):
            return str(value)
    return str(obj)


def _resolve(value: Any, objs: dict[str, Any]) -> Any:
    if isinstance(value, Ref):
        obj = objs[value.name]
        return obj.pk if value.pk else obj
    if isinstance(value, QS):
        return value.build()
    if isinstance(value, CT):
        from django.contrib.contenttypes.models import ContentType

        return ContentType.objects.get_for_model(value.model)
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, objs) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, objs) for k, v in value.items()}
    return value


def _result(value: Any) -> Any:
    """A comparable form of a return value or exception."""
    if isinstance(value, BaseException):
        message = re.sub(r"\(\d+\)", "(N)", str(value))
        return ("raised", type(value).__name__, message)
    if isinstance(value, Model):
        return ("obj", value._meta.label, _name(value), value._state.adding)
    if isinstance(value, tuple):
        return tuple(_result(v) for v in value)
    return value


#: One call: (object name, manager attribute, method, args, kwargs).
Step = tuple[str, str, str, tuple[Any, ...], dict[str, Any]]


class SignalLog:
    """Records ``m2m_changed`` (a sync receiver, as most projects have)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal")
        kwargs["sender"] = sender._meta.label
        kwargs["instance"] = (kwargs["instance"]._meta.label, _name(kwargs["instance"]))
        kwargs["model"] = kwargs["model"]._meta.label
        self.calls.append(kwargs)

    def normal(self, names: dict[tuple[str, Any], str]) -> list[dict[str, Any]]:
        out = []
        for call in self.calls:
            call = dict(call)
            if call["pk_set"] is not None:
                call["pk_set"] = sorted(
                    names.get((call["model"], pk), f"?{pk}") for pk in call["pk_set"]
                )
            out.append(call)
        return out


def _verbs(statements: list[str]) -> list[str]:
    return [s.split(" ", 1)[0].upper() for s in statements]


def _step_verbs(out: dict[str, Any]) -> list[str]:
    """The verbs of a one-step scenario, without the harness's savepoint."""
    verbs: list[str] = out["verbs"]
    assert verbs[0] == "SAVEPOINT" and verbs[-1] == "RELEASE", verbs
    return verbs[1:-1]


async def _native_run(steps: list[Step], log: SignalLog | None) -> dict[str, Any]:
    conn = async_connections["default"]
    async with isolated():
        objs: dict[str, Any] = {}
        for name, model, values in SETUP:
            objs[name] = await native(model).acreate(**_resolve(values, objs))
        conn.force_debug_cursor = True
        start = len(conn.queries_log)
        results = []
        if log is not None:
            m2m_changed.connect(log)
        try:
            with SyncConnectionCounter() as counter:
                for obj_name, attr, method, args, kwargs in steps:
                    manager = getattr(objs[obj_name], attr)
                    try:
                        async with async_atomic():  # an error leaves the run usable
                            value = await getattr(manager, f"a{method}")(
                                *_resolve(args, objs), **_resolve(kwargs, objs)
                            )
                    except Exception as exc:
                        value = exc
                    results.append(_result(value))
        finally:
            if log is not None:
                m2m_changed.disconnect(log)
            conn.force_debug_cursor = False
        statements = [q["sql"] for q in list(conn.queries_log)[start:]]
        assert counter.opened == [], counter.opened
        rows = [[r async for r in native(build())] for build in SNAPSHOT]
        names = {
            (m._meta.label, pk): n
            for m in NAMED
            async for pk, n in native(m).values_list(
                "pk", "title" if m is RelVolume or m is RelArticle else "name"
            )
        }
    return {
        "results": results,
        "rows": rows,
        "signals": log.normal(names) if log is not None else None,
        "verbs": _verbs(statements),
    }


def _sync_run(steps: list[Step], log: SignalLog | None) -> dict[str, Any]:
    with transaction.atomic():
        objs: dict[str, Any] = {}
        for name, model, values in SETUP:
            objs[name] = model._default_manager.create(**_resolve(values, objs))
        results = []
        if log is not None:
            m2m_changed.connect(log)
        try:
            with CaptureQueriesContext(connection) as captured:
                for obj_name, attr, method, args, kwargs in steps:
                    manager = getattr(objs[obj_name], attr)
                    try:
                        with transaction.atomic():
                            value = getattr(manager, method)(
                                *_resolve(args, objs), **_resolve(kwargs, objs)
                            )
                    except Exception as exc:
                        value = exc
                    results.append(_result(value))
        finally:
            if log is not None:
                m2m_changed.disconnect(log)
        rows = [list(build()) for build in SNAPSHOT]
        names = {
            (m._meta.label, pk): n
            for m in NAMED
            for pk, n in m._default_manager.values_list(
                "pk", "title" if m is RelVolume or m is RelArticle else "name"
            )
        }
        transaction.set_rollback(True)
    return {
        "results": results,
        "rows": rows,
        "signals": log.normal(names) if log is not None else None,
        "verbs": _verbs([q["sql"] for q in captured.captured_queries]),
    }


async def scenario(steps: list[Step], signals: bool = True) -> dict[str, Any]:
    """Run ``steps`` natively and with the sync ORM; assert the same outcome;
    return the native one."""
    native_log = SignalLog() if signals else None
    sync_log = SignalLog() if signals else None
    native_out = await _native_run(steps, native_log)
    sync_out = await run_sync(lambda: _sync_run(steps, sync_log))
    assert native_out == sync_out
    return native_out


@pytest.fixture(autouse=True)
def _no_log_connected() -> Iterator[None]:
    yield
    assert not m2m_changed.has_listeners(RelArticle.tags.through)


@pytest.fixture(autouse=True)
def _content_types_cached(orm: None) -> None:
    """Building a generic relation's manager looks its content type up (a
    sync query on a miss, in Django too): both sides find it cached."""
    from django.contrib.contenttypes.models import ContentType

    try:
        ContentType.objects.get_for_models(RelShelf, RelNote)
    finally:
        connections.close_all()


# ##### Reverse foreign key managers #####

NULLABLE_FK_SCENARIOS: dict[str, list[Step]] = {
    "add_bulk": [("S1", "volumes", "add", (Ref("V3"), Ref("V4")), {})],
    "add_not_bulk": [("S1", "volumes", "add", (Ref("V3"), Ref("V4")), {"bulk": False})],
    "add_wrong_type": [("S1", "volumes", "add", (Ref("T1"),), {})],
    "remove_bulk": [("S1", "volumes", "remove", (Ref("V1"),), {})],
    "remove_not_bulk": [
        ("S1", "volumes", "remove", (Ref("V1"), Ref("V2")), {"bulk": False})
    ],
    "remove_unrelated": [("S1", "volumes", "remove", (Ref("V4"),), {})],
    "remove_nothing": [("S1", "volumes", "remove", (), {})],
    "clear_bulk": [("S1", "volumes", "clear", (), {})],
    "clear_not_bulk": [("S1", "volumes", "clear", (), {"bulk": False})],
    "set": [("S1", "volumes", "set", ([Ref("V2"), Ref("V3")],), {})],
    "set_not_bulk": [
        ("S1", "volumes", "set", ([Ref("V2"), Ref("V3")],), {"bulk": False})
    ],
    "set_clear": [("S1", "volumes", "set", ([Ref("V2"), Ref("V3")],), {"clear": True})],
    "set_queryset": [
        (
            "S1",
            "volumes",
            "set",
            (QS(lambda: RelVolume.objects.filter(title__in=["V3", "V4"])),),
            {},
        )
    ],
    "create_and_get_or_create": [
        ("S1", "volumes", "create", (), {"title": "V9"}),
        ("S1", "volumes", "get_or_create", (), {"title": "V1"}),
        ("S1", "volumes", "get_or_create", (), {"title": "V8"}),
        ("S2", "volumes", "get_or_create", (), {"title": "V1"}),  # IntegrityError
    ],
    "update_or_create": [
        ("S1", "volumes", "update_or_create", (), {"title": "V2", "defaults": {}}),
        ("S2", "volumes", "update_or_create", (), {"title": "V7"}),
        (
            "S2",
            "volumes",
            "update_or_create",
            (),
            {"title": "V4", "defaults": {"title": "V4b"}},
        ),
    ],
}


@pytest.mark.parametrize("name", list(NULLABLE_FK_SCENARIOS))
async def test_nullable_reverse_fk_manager_parity(name: str) -> None:
    out = await scenario(NULLABLE_FK_SCENARIOS[name])
    assert out["signals"] == []  # m2m_changed is for many-to-many only
    if name == "add_bulk":
        assert _step_verbs(out) == ["UPDATE"]
        assert ("V3", "S1") in out["rows"][0] and ("V4", "S1") in out["rows"][0]
    if name == "add_not_bulk":
        assert _step_verbs(out) == ["UPDATE", "UPDATE"]
    if name == "add_wrong_type":
        assert out["results"][0][:2] == ("raised", "TypeError")
    if name == "remove_unrelated":
        assert out["results"][0][:2] == ("raised", "DoesNotExist")
    if name == "create_and_get_or_create":
        created, got, new, clash = out["results"]
        assert created == ("obj", "ormapp.RelVolume", "V9", False)
        assert got == (("obj", "ormapp.RelVolume", "V1", False), False)
        assert new == (("obj", "ormapp.RelVolume", "V8", False), True)
        assert clash[:2] == ("raised", "IntegrityError")


NON_NULL_FK_SCENARIOS: dict[str, list[Step]] = {
    "add": [("V1", "chapters", "add", (Ref("C2"),), {})],
    "create": [("V2", "chapters", "create", (), {"title": "C3", "number": 3})],
    "set": [("V1", "chapters", "set", ([Ref("C2")],), {})],
    "get_or_create": [
        ("V2", "chapters", "get_or_create", (), {"title": "C2", "number": 2})
    ],
}


@pytest.mark.parametrize("name", list(NON_NULL_FK_SCENARIOS))
async def test_non_null_reverse_fk_manager_parity(name: str) -> None:
    await scenario(NON_NULL_FK_SCENARIOS[name])


# ##### Generic relation managers (contrib.contenttypes) #####

GENERIC_SCENARIOS: dict[str, list[Step]] = {
    "add_bulk": [("S1", "notes", "add", (Ref("N3"),), {})],
    "add_not_bulk": [("S1", "notes", "add", (Ref("N3"),), {"bulk": False})],
    "add_wrong_type": [("S1", "notes", "add", (Ref("T1"),), {})],
    "remove_bulk": [("S1", "notes", "remove", (Ref("N1"),), {})],
    "remove_not_bulk": [
        ("S1", "notes", "remove", (Ref("N1"), Ref("N2")), {"bulk": False})
    ],
    "remove_nothing": [("S1", "notes", "remove", (), {})],
    "clear_bulk": [("S1", "notes", "clear", (), {})],
    "clear_not_bulk": [("S1", "notes", "clear", (), {"bulk": False})],
    "set": [("S1", "notes", "set", ([Ref("N2"), Ref("N3")],), {})],
    "set_clear": [("S1", "notes", "set", ([Ref("N2"), Ref("N3")],), {"clear": True})],
    "set_queryset": [
        (
            "S2",
            "notes",
            "set",
            (QS(lambda: RelNote.objects.filter(text__in=["N1", "N3"])),),
            {},
        )
    ],
    "create_get_or_create_update_or_create": [
        ("S2", "notes", "create", (), {"text": "N9"}),
        ("S2", "notes", "get_or_create", (), {"text": "N3"}),
        ("S2", "notes", "get_or_create", (), {"text": "N8"}),
        (
            "S1",
            "notes",
            "update_or_create",
            (),
            {"text": "N1", "defaults": {"text": "N1b"}},
        ),
        ("S1", "notes", "update_or_create", (), {"text": "N7"}),
    ],
}


@pytest.mark.parametrize("name", list(GENERIC_SCENARIOS))
async def test_generic_relation_manager_parity(name: str) -> None:
    out = await scenario(GENERIC_SCENARIOS[name])
    shelves = out["rows"][-1]
    if name == "add_bulk":
        assert _step_verbs(out) == ["UPDATE"]
        assert ("S1", "N3") in shelves and ("S2", "N3") not in shelves
    if name == "add_wrong_type":
        assert out["results"][0][:2] == ("raised", "TypeError")
    if name == "clear_bulk":
        assert [n for s, n in shelves if s == "S1"] == []
        assert out["rows"][-2] == ["N3"]  # a generic relation deletes
    if name == "create_get_or_create_update_or_create":
        created, got, new, updated, made = out["results"]
        assert created == ("obj", "ormapp.RelNote", "N9", False)
        assert (got[1], new[1], updated[1], made[1]) == (False, True, False, True)
        assert ("S1", "N1b") in shelves and ("S2", "N9") in shelves


@isolated()
async def test_remove_and_clear_exist_only_for_nullable_fks() -> None:
    volume = await RelVolume.objects.acreate(title="Vx")
    shelf = await RelShelf.objects.acreate(name="Sx")
    assert not hasattr(volume.chapters, "aremove")
    assert not hasattr(volume.chapters, "aclear")
    assert not hasattr(volume.chapters, "remove")
    assert not hasattr(volume.chapters, "_aclear")
    assert hasattr(shelf.volumes, "aremove") and hasattr(shelf.volumes, "aclear")


@isolated()
async def test_add_bulk_refuses_unsaved_objects_before_any_query() -> None:
    shelf = await RelShelf.objects.acreate(name="Sx")
    conn = async_connections["default"]
    conn.force_debug_cursor = True
    start = len(conn.queries_log)
    try:
        with pytest.raises(ValueError, match=r"isn't saved\. Use bulk=False"):
            await shelf.volumes.aadd(RelVolume(title="unsaved"))
    finally:
        conn.force_debug_cursor = False
    assert len(conn.queries_log) == start
    # bulk=False saves it.
    volume = RelVolume(title="unsaved")
    await shelf.volumes.aadd(volume, bulk=False)
    assert volume.pk is not None
    assert [v.title async for v in shelf.volumes.all()] == ["unsaved"]


# ##### Many-to-many managers #####

M2M_SCENARIOS: dict[str, list[Step]] = {
    "add": [("A1", "tags", "add", (Ref("T2"), Ref("T3")), {})],
    "add_pks_and_duplicates": [
        ("A1", "tags", "add", (Ref("T1", pk=True), Ref("T2", pk=True), Ref("T2")), {})
    ],
    "add_wrong_type": [("A1", "tags", "add", (Ref("A2"),), {})],
    "add_reverse": [("T1", "articles", "add", (Ref("A2"),), {})],
    "remove": [
        ("A1", "tags", "add", (Ref("T2"), Ref("T3")), {}),
        ("A1", "tags", "remove", (Ref("T1"), Ref("T3", pk=True)), {}),
    ],
    "remove_reverse": [("T1", "articles", "remove", (Ref("A1"),), {})],
    "clear": [("A1", "tags", "clear", (), {}), ("T1", "articles", "clear", (), {})],
    "set": [("A1", "tags", "set", ([Ref("T2"), Ref("T3", pk=True)],), {})],
    "set_clear": [("A1", "tags", "set", ([Ref("T1"), Ref("T2")],), {"clear": True})],
    "set_queryset": [
        ("A1", "tags", "set", (QS(lambda: RelTag.objects.exclude(name="T1")),), {})
    ],
    "create_get_or_create_update_or_create": [
        ("A1", "tags", "create", (), {"name": "T9"}),
        ("A1", "tags", "get_or_create", (), {"name": "T1"}),
        ("A1", "tags", "get_or_create", (), {"name": "T8"}),
        ("A2", "tags", "update_or_create", (), {"name": "T7"}),
        ("A2", "tags", "update_or_create", (), {"name": "T7", "defaults": {}}),
    ],
    "symmetrical": [
        ("P1", "friends", "add", (Ref("P2"), Ref("P3")), {}),
        ("P2", "friends", "remove", (Ref("P1"),), {}),
        ("P3", "friends", "set", ([Ref("P2")],), {}),
        ("P1", "friends", "clear", (), {}),
    ],
    "through_defaults": [
        ("K1", "members", "add", (Ref("P2"),), {"through_defaults": {"role": "guest"}}),
        (
            "K1",
            "members",
            "create",
            (),
            {"name": "P9", "through_defaults": {"role": "new"}},
        ),
        ("P3", "clubs", "add", (Ref("K1"),), {"through_defaults": {"role": "rev"}}),
        ("K1", "members", "remove", (Ref("P1"),), {}),
        (
            "K1",
            "members",
            "set",
            ([Ref("P2"), Ref("P1")],),
            {"through_defaults": {"role": "back"}},
        ),
        ("K1", "members", "get_or_create", (), {"name": "P8"}),
    ],
    "through_clear": [("K1", "members", "clear", ())],
}
M2M_SCENARIOS["through_clear"] = [("K1", "members", "clear", (), {})]


@pytest.mark.parametrize("name", list(M2M_SCENARIOS))
async def test_many_to_many_manager_parity(name: str) -> None:
    out = await scenario(M2M_SCENARIOS[name])
    actions = [s["action"] for s in out["signals"]]
    if name == "add":
        assert actions == ["pre_add", "post_add"]
        assert out["signals"][0]["pk_set"] == ["T2", "T3"]
        assert out["signals"][0]["reverse"] is False
        assert out["signals"][0]["sender"] == RelArticle.tags.through._meta.label
    if name == "add_reverse":
        assert out["signals"][0]["reverse"] is True
        assert out["signals"][0]["pk_set"] == ["A2"]
    if name == "add_pks_and_duplicates":
        assert out["signals"][0]["pk_set"] == ["T2"]  # T1 is there already
    if name == "clear":
        assert actions == ["pre_clear", "post_clear"] * 2
    if name == "symmetrical":
        assert ("P2", "P3") in out["rows"][4] and ("P3", "P2") in out["rows"][4]
    if name == "through_defaults":
        assert ("P2", "K1", "back") not in out["rows"][6]  # P2 was kept
        assert ("P1", "K1", "back") in out["rows"][6]
        assert ("P3", "K1", "rev") not in out["rows"][6]  # set() removed it


@pytest.mark.parametrize("name", ["add", "add_pks_and_duplicates", "set"])
async def test_many_to_many_fast_add_without_listeners(name: str) -> None:
    """No m2m_changed receiver: Django's one-query ``bulk_create(ignore_conflicts)``."""
    out = await scenario(M2M_SCENARIOS[name], signals=False)
    if name == "add":
        assert _step_verbs(out) == ["INSERT"]


# ##### Signals, transactions, the connection #####


@isolated()
async def test_async_m2m_changed_receivers_are_awaited_in_the_task() -> None:
    article = await RelArticle.objects.acreate(title="Ax")
    tag = await RelTag.objects.acreate(name="Tx")
    seen: list[tuple[str, Any, int]] = []
    through = RelArticle.tags.through

    async def receiver(sender: Any, action: str, instance: Any, **kwargs: Any) -> None:
        rows = await native(through).filter(relarticle=instance).acount()
        seen.append((action, asyncio.current_task(), rows))

    m2m_changed.connect(receiver, sender=through)
    try:
        async with async_atomic():
            await article.tags.aadd(tag)
            await article.tags.aclear()
    finally:
        m2m_changed.disconnect(receiver, sender=through)
    task = asyncio.current_task()
    # The receiver saw the block's uncommitted rows, from the calling task.
    assert seen == [
        ("pre_add", task, 0),
        ("post_add", task, 1),
        ("pre_clear", task, 1),
        ("post_clear", task, 0),
    ]


async def test_writes_inside_a_rolled_back_async_atomic_leave_nothing(
    observer: Any,
) -> None:
    class Boom(Exception):
        pass

    def count(table: str) -> int:
        row = observer.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0])

    before = {
        table: count(table)
        for table in (
            "ormapp_relshelf",
            "ormapp_relvolume",
            "ormapp_reltag",
            "ormapp_relarticle_tags",
        )
    }
    with pytest.raises(Boom):
        async with async_atomic():
            shelf = await RelShelf.objects.acreate(name="rolled back")
            await shelf.volumes.acreate(title="rolled back")
            article = await RelArticle.objects.acreate(title="rolled back")
            await article.tags.acreate(name="rolled back")
            # Seen inside the block, on the block's connection.
            assert await shelf.volumes.acount() == 1
            assert [t.name async for t in article.tags.all()] == ["rolled back"]
            raise Boom
    assert {table: count(table) for table in before} == before


@isolated()
async def test_related_writes_run_on_the_task_connection() -> None:
    conn = async_connections["default"]
    article = await RelArticle.objects.acreate(title="Ay")
    tag = await RelTag.objects.acreate(name="Ty")
    conn.force_debug_cursor = True
    start = len(conn.queries_log)
    try:
        with SyncConnectionCounter() as counter:
            await article.tags.aadd(tag)
            await article.tags.aset([])
    finally:
        conn.force_debug_cursor = False
    assert counter.opened == []
    statements = [q["sql"] for q in list(conn.queries_log)[start:]]
    assert any('INSERT INTO "ormapp_relarticle_tags"' in s for s in statements)
    assert any('DELETE FROM "ormapp_relarticle_tags"' in s for s in statements)


@isolated()
async def test_writes_clear_the_prefetched_cache() -> None:
    shelf = await RelShelf.objects.acreate(name="Sp")
    await shelf.volumes.acreate(title="Vp1")
    [shelf] = [
        s
        async for s in RelShelf.objects.filter(pk=shelf.pk).prefetch_related("volumes")
    ]
    assert [v.title for v in shelf.volumes.all()] == ["Vp1"]
    await shelf.volumes.acreate(title="Vp2")
    assert "volumes" not in shelf._prefetched_objects_cache
    assert [v.title async for v in shelf.volumes.all()] == ["Vp1", "Vp2"]


# ##### Reads (part 1's models) #####


async def test_reverse_fk_manager_reads_parity() -> None:
    ann = await Author.objects.aget(name="Ann")
    await parity(lambda: ann.book_set.filter(pages__gte=100).order_by("title"))
    await parity(lambda: ann.book_set.order_by("-pages"), in_atomic=True)
    bob = await Author.objects.aget(name="Bob")
    await parity(lambda: bob.edited.all())
    assert await ann.book_set.acount() == 2
    assert await ann.book_set.filter(title="A1").aexists()
    assert [b.title async for b in ann.book_set.order_by("title")] == ["A1", "A2"]
    # Known related objects: the books point back to ann, without a query.
    books = [b async for b in ann.book_set.all()]
    assert all(b.author is ann for b in books)


async def test_forward_fk_access_stays_sync_only_unless_loaded() -> None:
    book = await Book.objects.aget(title="A1")
    with pytest.raises(SynchronousOnlyOperation):
        book.author  # noqa: B018
    loaded = await Book.objects.select_related("author").aget(title="A1")
    assert loaded.author.name == "Ann"


@isolated()
async def test_generic_relations_prefetch_inside_the_task_transaction() -> None:
    """Generic relations' prefetches run on the task's connection: rows
    written in the surrounding block are prefetched (tests/orm/test_prefetch.py
    has the parity with the sync ORM)."""
    from django.contrib.contenttypes.models import ContentType

    from async_db.contrib.contenttypes import aget_for_model

    shelf = await RelShelf.objects.acreate(name="Sg")
    shelf_type = await aget_for_model(RelShelf)
    await RelNote.objects.acreate(
        text="g1", content_type=shelf_type, object_id=shelf.pk
    )
    [loaded] = [
        s async for s in RelShelf.objects.filter(pk=shelf.pk).prefetch_related("notes")
    ]
    assert [n.text for n in loaded.notes.all()] == ["g1"]
    [note] = [
        n
        async for n in RelNote.objects.filter(text="g1").prefetch_related(
            "content_object"
        )
    ]
    assert note.content_object == shelf
    assert ContentType.objects.get_for_model(RelShelf) == shelf_type  # cached
