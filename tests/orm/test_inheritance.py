"""Multi-table inheritance: native saves write every table in one block."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from async_db import async_atomic, async_connections
from async_db.test import isolated
from tests.orm_parity import SyncConnectionCounter, parity, run_sync
from tests.ormapp.models import Place, Restaurant

pytestmark = pytest.mark.usefixtures("orm")


async def statements_of(coro_fn: Any) -> list[str]:
    conn = async_connections["default"]
    conn.force_debug_cursor = True
    start = len(conn.queries_log)
    try:
        await coro_fn()
    finally:
        conn.force_debug_cursor = False
    return [q["sql"] for q in list(conn.queries_log)[start:]]


@isolated()
async def test_multi_table_save_insert_and_update() -> None:
    statements = await statements_of(
        lambda: Restaurant.objects.acreate(name="Chez A", seats=12)
    )
    inserts = [s.split('"')[1] for s in statements if s.startswith("INSERT")]
    assert inserts == ["ormapp_place", "ormapp_restaurant"]
    restaurant = await Restaurant.objects.aget(name="Chez A")
    assert (restaurant.seats, restaurant.place_ptr_id) == (12, restaurant.pk)
    restaurant.name, restaurant.seats = "Chez B", 20
    statements = await statements_of(restaurant.asave)
    updates = [s.split('"')[1] for s in statements if s.startswith("UPDATE")]
    assert updates == ["ormapp_place", "ormapp_restaurant"]
    back = await Restaurant.objects.aget(pk=restaurant.pk)
    assert (back.name, back.seats) == ("Chez B", 20)
    assert await Place.objects.filter(name="Chez B").acount() == 1


async def test_multi_table_reads_parity(observer: Any) -> None:
    try:
        await Restaurant.objects.acreate(name="Chez C", seats=3)
        await Place.objects.acreate(name="Just a place")
        await parity(lambda: Restaurant.objects.order_by("pk"))
        await parity(lambda: Place.objects.select_related("restaurant").order_by("pk"))
    finally:
        observer.execute("DELETE FROM ormapp_restaurant")
        observer.execute("DELETE FROM ormapp_place")


def tables(observer: Any) -> list[Any]:
    """Both tables of the inheritance, as the server has them."""
    return [
        observer.execute("SELECT id, name FROM ormapp_place ORDER BY id").fetchall(),
        observer.execute(
            "SELECT place_ptr_id, seats FROM ormapp_restaurant ORDER BY 1"
        ).fetchall(),
    ]


@pytest.mark.parametrize(
    ("filters", "values"),
    [
        ({"seats__gte": 2}, {"name": "N"}),  # parent fields only
        ({"seats__gte": 2}, {"name": "N", "seats": 9}),  # both tables
        ({"name": "B"}, {"name": "N", "seats": 9}),  # filtered on the parent
        ({"seats__gt": 99}, {"name": "N"}),  # no row: 0, as Django
    ],
    ids=["parent", "both", "parent-filter", "none"],
)
async def test_multi_table_update_of_parent_fields_parity(
    observer: Any, filters: dict[str, Any], values: dict[str, Any]
) -> None:
    """Django's pre-select of the rows to update, its UPDATE of the child and
    of the parent table: natively the same row count and the same tables as
    the sync ORM's update on the same data, with no sync connection."""
    try:
        for name, seats in [("A", 1), ("B", 2), ("C", 3)]:
            await Restaurant.objects.acreate(name=name, seats=seats)
        await Place.objects.acreate(name="B")  # a parent row of no restaurant
        before = tables(observer)

        def sync_update() -> int:
            return int(Restaurant.objects.filter(**filters).update(**values))

        async def native_update() -> int:
            # A new task: the update is its first query (its connection opens
            # while the update compiles).
            assert async_connections["default"].connection is None
            return await Restaurant.objects.filter(**filters).aupdate(**values)

        with SyncConnectionCounter() as counter:
            native_count = await asyncio.create_task(native_update())
        assert counter.opened == []
        native_tables = tables(observer)
        # Put the rows back, then Django's sync update on the same data.
        for pk, name in before[0]:
            observer.execute(
                "UPDATE ormapp_place SET name = %s WHERE id = %s", [name, pk]
            )
        for pk, seats in before[1]:
            observer.execute(
                "UPDATE ormapp_restaurant SET seats = %s WHERE place_ptr_id = %s",
                [seats, pk],
            )
        assert tables(observer) == before
        sync_count = await run_sync(sync_update)
        assert native_count == sync_count
        assert native_tables == tables(observer)
        assert (native_tables != before) == (sync_count > 0)
    finally:
        observer.execute("DELETE FROM ormapp_restaurant")
        observer.execute("DELETE FROM ormapp_place")


@isolated()
async def test_multi_table_update_runs_in_the_task_transaction() -> None:
    """The pre-select and both UPDATEs run on the task's connection, inside
    the surrounding async_atomic: rolled back with it."""
    restaurant = await Restaurant.objects.acreate(name="R", seats=1)
    statements: list[str] = []

    async def update() -> None:
        count = await Restaurant.objects.filter(pk=restaurant.pk).aupdate(
            name="S", seats=2
        )
        assert count == 1

    with pytest.raises(ValueError, match="undo"):
        async with async_atomic():
            statements = await statements_of(update)
            back = await Restaurant.objects.aget(pk=restaurant.pk)
            assert (back.name, back.seats) == ("S", 2)
            raise ValueError("undo")
    verbs = [s.split()[0] for s in statements]
    assert verbs == ["SELECT", "UPDATE", "UPDATE"], statements
    back = await Restaurant.objects.aget(pk=restaurant.pk)
    assert (back.name, back.seats) == ("R", 1)
    # Deletes are native (issue 12): tests/orm/test_deletion.py.


@isolated()
async def test_multi_table_bulk_update_of_parent_and_child_fields() -> None:
    """``abulk_update`` is Django's ``update()`` per batch: parent fields of a
    multi-table child go through the same native pre-select."""
    first = await Restaurant.objects.acreate(name="A", seats=1)
    second = await Restaurant.objects.acreate(name="B", seats=2)
    first.name, first.seats = "A2", 10
    second.name, second.seats = "B2", 20
    assert (
        await Restaurant.objects.abulk_update([first, second], ["name", "seats"]) == 2
    )
    rows = [(r.name, r.seats) async for r in Restaurant.objects.order_by("pk")]
    assert rows == [("A2", 10), ("B2", 20)]
    assert [p.name async for p in Place.objects.order_by("pk")] == ["A2", "B2"]
