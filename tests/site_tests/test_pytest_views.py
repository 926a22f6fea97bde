"""The item views with pytest-django: its ``async_client``, the ``items``
fixture (sync ORM) and the native ORM in the test."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from benchmarks.http.site.models import Item


async def test_native_lookup(async_client, items):
    response = await async_client.get(f"/items/{items[0].pk}/native/")
    assert response.json() == {"id": items[0].pk, "name": "item 1", "value": 1}


async def test_native_bump_then_orm_read(async_client, items):
    response = await async_client.post(f"/items/{items[1].pk}/bump/native/")
    assert response.json()["value"] == 3
    response = await async_client.get(f"/items/{items[1].pk}/orm/")
    assert response.json()["value"] == 3


@pytest.mark.django_db
async def test_created_in_the_test(async_client):
    item = await Item.objects.acreate(name="new", value=0)
    await async_client.post(f"/items/{item.pk}/bump/async-db/")
    assert (await Item.objects.aget(pk=item.pk)).value == 1
    assert await sync_to_async(Item.objects.count)() == 1


@pytest.mark.django_db
async def test_nothing_left_by_other_tests():
    assert await Item.objects.acount() == 0


@pytest.mark.async_db(spawned_tasks="share")
async def test_concurrent_requests(async_client, items):
    # Each request in a task of its own, on the test's connection in turn.
    responses = await asyncio.gather(
        *(async_client.post(f"/items/{items[2].pk}/bump/native/") for _ in range(5))
    )
    assert sorted(r.json()["value"] for r in responses) == [4, 5, 6, 7, 8]


@pytest.mark.async_db(spawned_tasks="share")
async def test_fan_out_view_sees_the_fixture_rows(async_client, items):
    # The view gathers three native queries in tasks of their own: they share
    # the test's connection, so they see the fixture's uncommitted rows.
    response = await async_client.get("/summary/")
    body = response.json()
    assert body["count"] == len(items)
    assert body["total"] == sum(item.value for item in items)
    assert body["first"]["id"] == items[0].pk


@pytest.mark.django_db
async def test_fan_out_view_is_refused_in_the_default_mode(async_client, items):
    # Without the share mode, the view's tasks would run outside the test's
    # transaction: async-db refuses them (the spawned-task rule).
    from django.db.transaction import TransactionManagementError

    with pytest.raises(TransactionManagementError, match="new_connections"):
        await async_client.get("/summary/")
