"""The item views and the WebSocket consumer, with async-db's ``TestCase``."""

import json

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from async_db.test import TestCase
from benchmarks.http.site.consumers import ItemConsumer
from benchmarks.http.site.models import Item


class ItemViewTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.item = Item.objects.create(name="lamp", value=10)

    async def test_native_lookup(self):
        response = await self.async_client.get(f"/items/{self.item.pk}/native/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.json(), {"id": self.item.pk, "name": "lamp", "value": 10}
        )

    async def test_native_lookup_unknown(self):
        response = await self.async_client.get("/items/999999/native/")
        self.assertEqual(response.status_code, 404)

    async def test_raw_sql_lookup(self):
        response = await self.async_client.get(f"/items/{self.item.pk}/async-db/")
        self.assertEqual(response.json()["name"], "lamp")

    async def test_django_orm_lookup(self):
        # Django's own aget() runs in sync_to_async: on the same session.
        response = await self.async_client.get(f"/items/{self.item.pk}/orm/")
        self.assertEqual(response.json()["value"], 10)

    async def test_native_bump(self):
        with self.assertNumQueries(4):  # SAVEPOINT, UPDATE, SELECT, RELEASE
            response = await self.async_client.post(
                f"/items/{self.item.pk}/bump/native/"
            )
        self.assertEqual(response.json()["value"], 11)
        # The sync ORM sees the view's write: one transaction.
        item = await sync_to_async(Item.django_objects.get)(pk=self.item.pk)
        self.assertEqual(item.value, 11)

    async def test_bumps_of_all_kinds_add_up(self):
        for kind in ("async-db", "native", "orm"):
            await self.async_client.post(f"/items/{self.item.pk}/bump/{kind}/")
        item = await Item.objects.aget(pk=self.item.pk)
        self.assertEqual(item.value, 13)

    async def test_bump_rolled_back(self):
        # Whatever the other tests bumped was rolled back.
        item = await Item.objects.aget(pk=self.item.pk)
        self.assertEqual(item.value, 10)

    async def test_new_item_seen_by_the_view(self):
        new = await Item.objects.acreate(name="desk", value=1)
        response = await self.async_client.get(f"/items/{new.pk}/native/")
        self.assertEqual(response.json()["name"], "desk")


class ItemConsumerTests(TestCase):
    # The communicator runs the consumer in a task of its own: it shares the
    # test's connection.
    spawned_tasks = "share"

    @classmethod
    def setUpTestData(cls):
        cls.item = Item.objects.create(name="chair", value=3)

    async def test_lookup_over_websocket(self):
        communicator = WebsocketCommunicator(ItemConsumer.as_asgi(), "/ws/items/")
        connected, _ = await communicator.connect()
        self.assertTrue(connected)
        await communicator.send_to(text_data=json.dumps({"id": self.item.pk}))
        reply = json.loads(await communicator.receive_from())
        await communicator.disconnect()
        self.assertEqual(
            reply["item"], {"id": self.item.pk, "name": "chair", "value": 3}
        )
