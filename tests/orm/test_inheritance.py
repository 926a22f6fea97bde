"""Multi-table inheritance: native saves write every table in one block."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import NotSupportedError

from async_db import async_connections
from async_db.test import isolated
from tests.orm_parity import parity
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


@isolated()
async def test_multi_table_update_of_parent_fields_is_refused() -> None:
    restaurant = await Restaurant.objects.acreate(name="R", seats=1)
    assert await Restaurant.objects.filter(pk=restaurant.pk).aupdate(seats=2) == 1
    with pytest.raises(NotSupportedError, match=r"multi-table inheritance.*issue 12"):
        await Restaurant.objects.filter(pk=restaurant.pk).aupdate(name="S")
    # Deletes are native (issue 12): tests/orm/test_deletion.py.
