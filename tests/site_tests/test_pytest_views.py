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
