"""Native deletes with cascades: parity with Django's sync ``Collector``.

Each scenario builds the same committed data twice (explicit primary keys),
deletes it once natively in the test's task and once with the sync ORM in a
thread, and compares: every table's rows afterwards (read from an observer
connection), the return value or the error (type, message,
``protected_objects``/``restricted_objects``), and the sequence of
``pre_delete``/``post_delete`` signals (signal, sender, the instance's normal
form, ``origin``). Every scenario runs with no receivers (Django's fast
deletes and deferred sub-collections), with sync receivers and with async
receivers. The native side must open no sync connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.db import NotSupportedError
from django.db.models import Model, QuerySet
from django.db.models.deletion import Collector as DjangoCollector
from django.db.models.deletion import ProtectedError, RestrictedError
from django.db.models.signals import post_delete, pre_delete

from async_db import async_atomic, async_connections
from async_db.models import native
from async_db.models.deletion import Collector
from tests.orm_parity import SyncConnectionCounter, normal, run_sync
from tests.ormapp.models import (
    SENTINEL_PK,
    DelA,
    DelB,
    DelChef,
    DelLeaf,
    DelMembership,
    DelOwner,
    DelPlace,
    DelQuerying,
    DelR,
    DelRestaurant,
    DelTag,
)

pytestmark = pytest.mark.usefixtures("orm")


def _tables() -> list[str]:
    return sorted(
        m._meta.db_table
        for m in apps.get_app_config("ormapp").get_models(include_auto_created=True)
        if m.__name__.startswith("Del")
    )


def snapshot(observer: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the deletion tables, as the server has them committed."""
    return {
        table: list(observer.execute(f'SELECT * FROM "{table}" ORDER BY 1'))
        for table in _tables()
    }


@pytest.fixture
def clean(observer: Any) -> Iterator[Callable[[], None]]:
    def truncate() -> None:
        names = ", ".join(f'"{t}"' for t in _tables())
        observer.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")

    truncate()
    yield truncate
    truncate()


def build_world(
    *,
    protect: bool = False,
    restrict: bool = False,
    stray_leaf: bool = False,
    many: bool = False,
) -> None:
    """The scenario's data, with the sync ORM (explicit primary keys)."""
    ct = ContentType.objects.get_for_model(DelR)
    DelOwner.objects.bulk_create([DelOwner(pk=1, name="o1"), DelOwner(pk=2, name="o2")])
    DelR.objects.bulk_create(
        [
            DelR(pk=SENTINEL_PK, name="sentinel"),
            DelR(pk=1, name="r1", owner_id=1),
            DelR(pk=2, name="r2", owner_id=1),
            DelR(pk=3, name="r3", owner_id=2),
        ]
    )
    kinds = ["cascade", "set_null", "set_default", "set_value", "set_callable"]
    kinds.append("do_nothing")
    a_rows = []
    for r in (1, 2, 3):
        for i, kind in enumerate(kinds):
            fks: dict[str, Any] = {"set_default_id": None, f"{kind}_id": r}
            a_rows.append(DelA(pk=r * 100 + i, name=f"{kind}-{r}", **fks))
    if restrict:  # restricted by r1, but owned by o1 (which owns r1 too)
        a_rows.append(DelA(pk=150, name="restrict-1", restrict_id=1, owner_id=1))
        a_rows.append(DelA(pk=151, name="restrict-1b", restrict_id=1, owner_id=1))
        leaves = [DelLeaf(pk=1, r_id=1, owner_id=1)]
        if stray_leaf:  # restricted by r2 (owned by o1), owned by o2
            leaves.append(DelLeaf(pk=2, r_id=2, owner_id=2))
    if protect:
        a_rows.append(DelA(pk=250, name="protect-2", protect_id=2))
    a_rows.append(DelA(pk=900, name="owned-2", owner_id=2))
    if many:  # more rows than a batch (GET_ITERATOR_CHUNK_SIZE) per kind
        for i in range(250):
            fks = {"set_default_id": 2} if i % 2 else {"cascade_id": 2}
            a_rows.append(DelA(pk=10_000 + i, name=f"many-{i}", **fks))
    DelA.objects.bulk_create(a_rows)
    if restrict:
        DelLeaf.objects.bulk_create(leaves)
    DelB.objects.bulk_create(
        [
            DelB(pk=1, a_id=100),
            DelB(pk=2, a_id=100),
            DelB(pk=3, a_id=200),
            DelB(pk=4, a_id=900),
        ]
    )
    DelTag.objects.bulk_create(
        [
            DelTag(pk=1, label="t1", content_type=ct, object_id=1),
            DelTag(pk=2, label="t2", content_type=ct, object_id=1),
            DelTag(pk=3, label="t3", content_type=ct, object_id=3),
        ]
    )
    through = DelR.owners.through
    through.objects.bulk_create(
        [
            through(pk=1, delr_id=1, delowner_id=1),
            through(pk=2, delr_id=1, delowner_id=2),
            through(pk=3, delr_id=2, delowner_id=2),
        ]
    )
    DelMembership.objects.bulk_create(
        [
            DelMembership(pk=1, r_id=1, owner_id=1, role="a"),
            DelMembership(pk=2, r_id=3, owner_id=2, role="b"),
        ]
    )
    DelPlace.objects.create(pk=1, name="place-1", r_id=1)
    DelRestaurant.objects.create(pk=2, name="rest-2", r_id=1, seats=2)
    DelRestaurant.objects.create(pk=3, name="rest-3", r2_id=2, seats=3)
    DelRestaurant.objects.create(pk=4, name="rest-4", seats=4)
    DelChef.objects.bulk_create(
        [
            DelChef(pk=1, restaurant_id=2),
            DelChef(pk=2, restaurant_id=3),
            DelChef(pk=3, restaurant_id=4),
        ]
    )


def _origin(origin: Any) -> Any:
    if origin is None:
        return None
    if isinstance(origin, Model):
        return ("instance", origin._meta.label, origin.pk)
    return ("queryset", origin.model._meta.label)


class Recorder:
    """Records pre_delete/post_delete as (signal, sender, instance, origin),
    with sync receivers, async receivers, or none (``mode``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.log: list[Any] = []
        self._receivers: list[tuple[Any, Any]] = []

    def _record(self, name: str, sender: Any, instance: Any, kwargs: Any) -> None:
        self.log.append(
            (
                name,
                sender._meta.label,
                instance.pk,
                normal(instance),
                _origin(kwargs["origin"]),
                kwargs["using"],
            )
        )

    def __enter__(self) -> Recorder:
        for name, signal in (("pre", pre_delete), ("post", post_delete)):
            if self.mode == "sync":

                def receiver(
                    sender: Any, instance: Any, _n: str = name, **kwargs: Any
                ) -> None:
                    self._record(_n, sender, instance, kwargs)

            elif self.mode == "async":

                async def receiver(  # type: ignore[misc]
                    sender: Any, instance: Any, _n: str = name, **kwargs: Any
                ) -> None:
                    await asyncio.sleep(0)
                    self._record(_n, sender, instance, kwargs)

            else:
                continue
            signal.connect(receiver, weak=False)
            self._receivers.append((signal, receiver))
        return self

    def __exit__(self, *exc: object) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)
        self._receivers.clear()


def outcome_of_error(exc: Exception) -> Any:
    objs = getattr(exc, "protected_objects", None)
    if objs is None:
        objs = getattr(exc, "restricted_objects", ())
    return (
        "raised",
        type(exc),
        exc.args[0],
        sorted((normal(o) for o in objs), key=repr),
    )


async def native_outcome(op: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return normal(await op())
    except (ProtectedError, RestrictedError) as exc:
        return outcome_of_error(exc)


def sync_outcome(op: Callable[[], Any]) -> Any:
    try:
        return normal(op())
    except (ProtectedError, RestrictedError) as exc:
        return outcome_of_error(exc)


async def compare(
    observer: Any,
    clean: Callable[[], None],
    mode: str,
    native_op: Callable[[], Awaitable[Any]],
    sync_op: Callable[[], Any],
    **world: bool,
) -> tuple[Any, dict[str, Any], list[Any]]:
    """Run the scenario natively then with the sync ORM; assert parity."""
    await run_sync(lambda: build_world(**world))
    before = snapshot(observer)
    ContentType.objects.clear_cache()
    recorder = Recorder(mode)
    with recorder, SyncConnectionCounter() as counter:
        native_result = await native_outcome(native_op)
    assert counter.opened == [], counter.opened
    native_state = snapshot(observer)
    native_log = recorder.log
    clean()

    await run_sync(lambda: build_world(**world))
    assert snapshot(observer) == before
    ContentType.objects.clear_cache()
    recorder = Recorder(mode)
    with recorder:
        sync_result = await run_sync(lambda: sync_outcome(sync_op))
    sync_state = snapshot(observer)
    clean()

    assert native_result == sync_result
    assert native_state == sync_state
    assert native_log == recorder.log
    if mode != "none" and native_result[0] != "raised":
        assert native_log  # the scenario does send signals
    return native_result, native_state, native_log


def _instance_delete(model: Any, pk: int, **kwargs: Any) -> Any:
    async def native_op() -> Any:
        obj = await model.objects.aget(pk=pk)
        result = await obj.adelete(**kwargs)
        return result, obj.pk

    def sync_op() -> Any:
        obj = model.objects.get(pk=pk)
        result = obj.delete(**kwargs)
        return result, obj.pk

    return native_op, sync_op


def _qs_delete(make_qs: Callable[[], Any]) -> Any:
    return (lambda: native(make_qs()).adelete(), lambda: make_qs().delete())


def _collector_delete() -> Any:
    """The Collector API itself, given a plain Django ``QuerySet``."""

    async def native_op() -> Any:
        collector = Collector(using="default")
        await collector.acollect(QuerySet(model=DelR).filter(pk__in=[1, 3]))
        return await collector.adelete()

    def sync_op() -> Any:
        collector = DjangoCollector(using="default")
        collector.collect(QuerySet(model=DelR).filter(pk__in=[1, 3]))
        return collector.delete()

    return native_op, sync_op


SCENARIOS: dict[str, tuple[Any, dict[str, bool]]] = {
    "collector, plain queryset": (_collector_delete(), {}),
    # every on_delete but PROTECT/RESTRICT, generic relation, m2m, MTI parents
    "r1 queryset": (_qs_delete(lambda: DelR.objects.filter(pk=1)), {}),
    "r2 instance": (_instance_delete(DelR, 2), {}),
    "r3 instance": (_instance_delete(DelR, 3), {}),
    "all r": (_qs_delete(lambda: DelR.objects.exclude(pk=SENTINEL_PK)), {}),
    "owners cascade": (_qs_delete(lambda: DelOwner.objects.all()), {}),
    "owner 2 instance": (_instance_delete(DelOwner, 2), {}),
    "a queryset": (_qs_delete(lambda: DelA.objects.filter(pk__in=[100, 200])), {}),
    "b fast": (_qs_delete(lambda: DelB.objects.filter(a_id=100)), {}),
    "b single": (_instance_delete(DelB, 3), {}),
    "many rows": (_qs_delete(lambda: DelR.objects.filter(pk=2)), {"many": True}),
    "many rows, owner": (_instance_delete(DelOwner, 1), {"many": True}),
    # RESTRICT: refused alone, allowed when the owner's cascade takes them too
    "restricted r1": (
        _qs_delete(lambda: DelR.objects.filter(pk=1)),
        {"restrict": True},
    ),
    "restricted r1 instance": (_instance_delete(DelR, 1), {"restrict": True}),
    "restrict lifted": (
        _qs_delete(lambda: DelOwner.objects.filter(pk=1)),
        {"restrict": True},
    ),
    "restrict kept": (
        _qs_delete(lambda: DelOwner.objects.filter(pk=1)),
        {"restrict": True, "stray_leaf": True},
    ),
    # PROTECT: direct, and nested below a cascade (re-raised for the owner)
    "protected r2": (_instance_delete(DelR, 2), {"protect": True}),
    "protected via owner": (
        _qs_delete(lambda: DelOwner.objects.all()),
        {"protect": True},
    ),
    # multi-table inheritance
    "restaurant instance": (_instance_delete(DelRestaurant, 2), {}),
    "restaurant keep_parents": (
        _instance_delete(DelRestaurant, 3, keep_parents=True),
        {},
    ),
    "place of restaurant": (_instance_delete(DelPlace, 4), {}),
    "places queryset": (_qs_delete(lambda: DelPlace.objects.all()), {}),
    "restaurants queryset": (_qs_delete(lambda: DelRestaurant.objects.all()), {}),
    # the generic foreign key's side, and the through rows themselves
    "tags": (_qs_delete(lambda: DelTag.objects.filter(object_id=1)), {}),
    "memberships": (_qs_delete(lambda: DelMembership.objects.all()), {}),
}


@pytest.mark.parametrize("mode", ["none", "sync", "async"])
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_delete_parity(
    observer: Any, clean: Callable[[], None], name: str, mode: str
) -> None:
    (native_op, sync_op), world = SCENARIOS[name]
    await compare(observer, clean, mode, native_op, sync_op, **world)


async def test_every_on_delete_did_its_work(
    observer: Any, clean: Callable[[], None]
) -> None:
    """What the parity scenarios compare is the real effect of each
    ``on_delete`` (not two identical no-ops), and the return value counts it."""
    (native_op, sync_op), _ = SCENARIOS["r1 queryset"]
    result, state, _ = await compare(observer, clean, "sync", native_op, sync_op)
    total, counts = result[2]
    assert total == ("int", 13)
    assert {label: count for label, (_, count) in counts[1].items()} == {
        "ormapp.DelA": 1,  # cascade-1 (the SET_* rows are updated)
        "ormapp.DelB": 2,  # below cascade-1
        "ormapp.DelMembership": 1,  # explicit through row
        "ormapp.DelR_owners": 2,  # auto-created through rows
        "ormapp.DelTag": 2,  # generic relation
        "ormapp.DelPlace": 2,  # place-1, and rest-2's parent row
        "ormapp.DelRestaurant": 1,  # rest-2
        "ormapp.DelChef": 1,  # rest-2's chef
        "ormapp.DelR": 1,
    }
    a_rows = {row[0]: row for row in state["ormapp_dela"]}
    columns = [
        c.name
        for c in observer.execute("SELECT * FROM ormapp_dela LIMIT 0").description
    ]
    by_name = {
        row[columns.index("name")]: dict(zip(columns, row, strict=True))
        for row in a_rows.values()
    }
    assert "cascade-1" not in by_name
    assert by_name["set_null-1"]["set_null_id"] is None
    assert by_name["set_default-1"]["set_default_id"] == SENTINEL_PK
    assert by_name["set_value-1"]["set_value_id"] == SENTINEL_PK
    assert by_name["set_callable-1"]["set_callable_id"] == SENTINEL_PK
    assert by_name["do_nothing-1"]["do_nothing_id"] == 1  # dangling, as Django
    assert by_name["set_null-2"]["set_null_id"] == 2  # other rows untouched


async def test_errors_are_djangos(observer: Any, clean: Callable[[], None]) -> None:
    (native_op, sync_op), world = SCENARIOS["protected via owner"]
    result, _, _ = await compare(observer, clean, "none", native_op, sync_op, **world)
    assert result[0] == "raised" and result[1] is ProtectedError
    assert result[2] == (
        "Cannot delete some instances of model 'DelOwner' because they are "
        "referenced through protected foreign keys: 'DelR.owner'."
    )
    assert [o[1] for o in result[3]] == ["ormapp.DelA"]
    (native_op, sync_op), world = SCENARIOS["restricted r1"]
    result, _, _ = await compare(observer, clean, "none", native_op, sync_op, **world)
    assert result[1] is RestrictedError
    assert result[2] == (
        "Cannot delete some instances of model 'DelR' because they are "
        "referenced through restricted foreign keys: 'DelA.restrict', 'DelLeaf.r'."
    )
    assert sorted((o[1], o[2]["id"][1]) for o in result[3]) == [
        ("ormapp.DelA", 150),
        ("ormapp.DelA", 151),
        ("ormapp.DelLeaf", 1),
    ]
    (native_op, sync_op), world = SCENARIOS["restrict kept"]
    result, _, _ = await compare(observer, clean, "none", native_op, sync_op, **world)
    assert result[1] is RestrictedError
    assert result[2] == (
        "Cannot delete some instances of model 'DelOwner' because they are "
        "referenced through restricted foreign keys: 'DelLeaf.r'."
    )
    assert [o[2]["id"][1] for o in result[3]] == [2]  # leaf 1 was lifted


async def test_protected_error_runs_no_write(
    observer: Any, clean: Callable[[], None]
) -> None:
    await run_sync(lambda: build_world(protect=True))
    before = snapshot(observer)
    conn = async_connections["default"]
    conn.force_debug_cursor = True
    start = len(conn.queries_log)
    try:
        with pytest.raises(ProtectedError) as info:
            await DelOwner.objects.filter(pk=1).adelete()
    finally:
        conn.force_debug_cursor = False
    statements = [q["sql"] for q in list(conn.queries_log)[start:]]
    assert statements and all(s.startswith("SELECT") for s in statements)
    assert {o.pk for o in info.value.protected_objects} == {250}
    assert snapshot(observer) == before


async def test_rolled_back_block_leaves_everything(
    observer: Any, clean: Callable[[], None]
) -> None:
    await run_sync(build_world)
    before = snapshot(observer)
    with pytest.raises(RuntimeError):
        async with async_atomic():
            result = await DelOwner.objects.all().adelete()
            assert result[0] > 10
            assert not await DelR.objects.exclude(pk=SENTINEL_PK).aexists()
            assert snapshot(observer) == before  # nothing committed yet
            raise RuntimeError
    assert snapshot(observer) == before
    assert await DelR.objects.acount() == 4


async def test_cancelled_cascade_commits_nothing(
    observer: Any, clean: Callable[[], None]
) -> None:
    """Cancelled after some DELETEs ran (in a post_delete receiver): the
    transaction of the delete is rolled back, nothing is committed."""
    await run_sync(build_world)
    before = snapshot(observer)
    reached = asyncio.Event()

    async def stall(sender: Any, **kwargs: Any) -> None:
        reached.set()
        await asyncio.Event().wait()

    post_delete.connect(stall, sender=DelR, weak=False)
    try:
        task = asyncio.create_task(DelOwner.objects.all().adelete())
        await reached.wait()
        pid = await _task_backend_in_transaction(observer)
        assert pid is not None  # the delete's transaction is open
        assert snapshot(observer) == before
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        post_delete.disconnect(stall, sender=DelR)
    assert snapshot(observer) == before


async def _task_backend_in_transaction(observer: Any) -> Any:
    rows = list(
        observer.execute(
            "SELECT pid FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"
            " AND datname = current_database()"
        )
    )
    return rows[0][0] if rows else None


async def test_querying_on_delete_handler_is_refused(
    observer: Any, clean: Callable[[], None]
) -> None:
    await run_sync(build_world)
    await run_sync(lambda: DelQuerying.objects.create(pk=1, r_id=3))
    before = snapshot(observer)
    with (
        SyncConnectionCounter() as counter,
        pytest.raises(NotSupportedError, match=r"ormapp\.DelQuerying\.r"),
    ):
        await DelR.objects.filter(pk=3).adelete()
    assert counter.opened == []
    assert snapshot(observer) == before


async def test_content_type_is_read_natively(
    observer: Any, clean: Callable[[], None]
) -> None:
    """A generic relation's content type is fetched natively when Django's
    cache is cold, and created natively when missing."""
    await run_sync(build_world)
    ContentType.objects.clear_cache()
    observer.execute(
        "DELETE FROM django_content_type WHERE app_label = 'ormapp'"
        " AND model = 'delowner'"
    )
    with SyncConnectionCounter() as counter:
        assert await DelR.objects.filter(pk=3).adelete() == (
            4,
            {
                "ormapp.DelR": 1,
                "ormapp.DelA": 1,
                "ormapp.DelTag": 1,
                "ormapp.DelMembership": 1,
            },
        )
        collector = Collector(using="default")
        from async_db.contrib.contenttypes import aget_for_model

        ct = await aget_for_model(DelOwner, "default", for_concrete_model=True)
    assert counter.opened == []
    assert (ct.app_label, ct.model) == ("ormapp", "delowner")
    assert ContentType.objects.get_for_model(DelOwner) == ct  # cached: no query
    assert collector.data == {}


async def test_sync_entry_points_are_refused() -> None:
    collector = Collector(using="default")
    with pytest.raises(NotSupportedError, match="acollect"):
        collector.collect([])
    with pytest.raises(NotSupportedError, match="adelete"):
        collector.delete()


async def test_delete_in_a_block_adds_no_savepoint(
    observer: Any, clean: Callable[[], None]
) -> None:
    """Django's ``atomic(savepoint=False)``: inside the caller's block the
    delete adds no savepoint; its rows go with the block."""
    await run_sync(lambda: build_world(many=True))
    before = snapshot(observer)
    conn = async_connections["default"]
    with pytest.raises(RuntimeError):
        async with async_atomic():
            conn.force_debug_cursor = True
            start = len(conn.queries_log)
            try:
                result = await DelR.objects.filter(pk=2).adelete()
            finally:
                conn.force_debug_cursor = False
            statements = [q["sql"] for q in list(conn.queries_log)[start:]]
            assert result[1]["ormapp.DelA"] == 126  # cascade-2 and 125 "many"
            assert not any("SAVEPOINT" in s for s in statements)
            deletes = [
                s for s in statements if s.startswith('DELETE FROM "ormapp_dela"')
            ]
            assert len(deletes) == 2  # 126 pks: two batches of 100
            raise RuntimeError
    assert snapshot(observer) == before


async def test_contrib_auth_user_delete_parity(observer: Any) -> None:
    """A model you don't own (``django.contrib.auth``'s ``User``, with its
    auto-created many-to-many through rows to ``Group`` and ``Permission``),
    deleted through ``native()``."""
    from django.contrib.auth.models import Group, Permission, User

    pks = (9001, 9002)

    def build() -> None:
        group = Group.objects.create(pk=9001, name="deletion-group")
        perm = Permission.objects.order_by("pk").first()
        for pk in pks:
            user = User.objects.create(pk=pk, username=f"deletion-{pk}")
            user.groups.add(group)
            if perm is not None:
                user.user_permissions.add(perm)

    def state() -> Any:
        return [
            list(
                observer.execute(
                    f"SELECT {columns} FROM {table} WHERE {column} = ANY(%s)"
                    " ORDER BY 1",
                    [list(pks)],
                )
            )
            for table, columns, column in (
                ("auth_user", "id, username", "id"),  # not date_joined
                ("auth_user_groups", "user_id, group_id", "user_id"),
                ("auth_user_user_permissions", "user_id, permission_id", "user_id"),
                ("auth_group", "*", "id"),
            )
        ]

    def drop() -> None:
        User.objects.filter(pk__in=pks).delete()
        Group.objects.filter(pk=9001).delete()

    try:
        await run_sync(build)
        before = state()
        with SyncConnectionCounter() as counter:
            native_result = await native(User.objects.filter(pk=9001)).adelete()
        assert counter.opened == []
        native_state = state()
        await run_sync(drop)
        await run_sync(build)
        sync_result = await run_sync(lambda: User.objects.filter(pk=9001).delete())
        assert native_result == sync_result
        assert native_result[1]["auth.User"] == 1
        assert native_result[1]["auth.User_groups"] == 1
        assert state() == native_state != before
    finally:
        await run_sync(drop)
