"""Channels consumers with async-db, through WebsocketCommunicator."""

from __future__ import annotations

import json
from typing import Any

from channels.testing import WebsocketCommunicator

from async_db import async_connections
from tests import consumers
from tests.fix_db import POOLED_APP_NAME, our_backends, settled_pool_stats


async def pool_stats() -> dict[str, int]:
    return await settled_pool_stats(async_connections, "pooled")


async def test_consumer_connections_are_per_consumer_and_released(
    observer: Any, global_pools: None
) -> None:
    consumers.used.clear()
    first = WebsocketCommunicator(consumers.ItemConsumer.as_asgi(), "/ws/")
    second = WebsocketCommunicator(consumers.ItemConsumer.as_asgi(), "/ws/")
    assert (await first.connect())[0] and (await second.connect())[0]
    pid1 = json.loads(await first.receive_from())["pid"]
    pid2 = json.loads(await second.receive_from())["pid"]
    # Two consumers, two tasks, two connections (both still held: no
    # aclose_old_connections() after connect).
    assert pid1 != pid2
    assert consumers.used[0] is not consumers.used[1]
    assert len(our_backends(observer, POOLED_APP_NAME)) >= 2

    # Between messages the consumer returns its slot.
    await first.send_to(text_data=json.dumps({"op": "pid"}))
    json.loads(await first.receive_from())
    assert consumers.used[-1].connection is None

    await first.disconnect()
    await second.disconnect()
    stats = await pool_stats()
    # Released on disconnect: every pool connection is back, none waiting.
    assert stats["pool_available"] == stats["pool_size"]
    assert all(conn.connection is None for conn in consumers.used)


async def test_long_lived_consumer_does_not_pin_a_slot(global_pools: None) -> None:
    consumers.used.clear()
    communicator = WebsocketCommunicator(consumers.ItemConsumer.as_asgi(), "/ws/")
    await communicator.connect()
    await communicator.receive_from()
    for _ in range(5):
        await communicator.send_to(text_data=json.dumps({"op": "pid"}))
        await communicator.receive_from()
        stats = await pool_stats()
        # Idle between messages: no slot held by this consumer.
        assert stats["pool_available"] == stats["pool_size"]
    await communicator.disconnect()


async def test_disconnect_while_holding_releases(global_pools: None) -> None:
    consumers.used.clear()
    communicator = WebsocketCommunicator(consumers.ItemConsumer.as_asgi(), "/ws/")
    await communicator.connect()
    await communicator.receive_from()
    await communicator.send_to(text_data=json.dumps({"op": "hold"}))
    await communicator.receive_from()
    assert consumers.used[-1].connection is not None  # held after the message
    await communicator.disconnect()
    stats = await pool_stats()
    assert stats["pool_available"] == stats["pool_size"]
