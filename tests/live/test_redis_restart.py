"""The hub keeps working when Redis restarts: the pub/sub link comes back by itself, and a viewer
ends up with every event in order, whether it arrived live or was recovered from history."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from core.embedded import EmbeddedValkey
from core.events import Publisher, room_channel
from core.resources import Resources, open_resources
from live.events import CardUnpinned
from tests.live.conftest import Room, start_hub
from tests.live.sdk import PythonViewer

pytestmark = pytest.mark.slow


async def test_viewers_get_every_event_across_a_redis_restart(
    resources: Resources, room: Room, tmp_path: Path
) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", durable=True)
    redis_url = valkey.start()
    settings = msgspec.structs.replace(resources.settings, redis_url=redis_url)
    try:
        async with open_resources(settings) as res:
            running, stop = await start_hub(res)
            publisher = Publisher(res.redis, history_size=100, ttl_s=600)
            channel = room_channel(room.id)
            viewer = PythonViewer(running.url, channel)
            await viewer.start()
            try:
                await viewer.next("subscribed")
                await publisher.publish(channel, CardUnpinned(room_id=room.id, product_id="1"))
                assert (await viewer.next("publication"))["data"]["product_id"] == "1"

                valkey.stop()
                await asyncio.sleep(1.0)
                valkey.restart()
                # published the moment Redis is back: the hub may not have resubscribed yet
                for n in (2, 3, 4):
                    await publisher.publish(
                        channel, CardUnpinned(room_id=room.id, product_id=str(n))
                    )
                got = [(await viewer.next("publication", timeout=20))["data"] for _ in range(3)]
                assert [g["product_id"] for g in got] == ["2", "3", "4"]

                await asyncio.wait_for(running.hub.link.connected.wait(), 20)
                await publisher.publish(channel, CardUnpinned(room_id=room.id, product_id="5"))
                assert (await viewer.next("publication"))["data"]["product_id"] == "5"
            finally:
                await viewer.disconnect()
                await stop()
    finally:
        valkey.stop()


async def test_lost_history_makes_viewers_reload_the_snapshot(
    resources: Resources, room: Room, tmp_path: Path
) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", durable=False)
    redis_url = valkey.start()
    settings = msgspec.structs.replace(resources.settings, redis_url=redis_url)
    try:
        async with open_resources(settings) as res:
            running, stop = await start_hub(res)
            publisher = Publisher(res.redis, history_size=100, ttl_s=600)
            channel = room_channel(room.id)
            viewer = PythonViewer(running.url, channel)
            await viewer.start()
            try:
                await viewer.next("subscribed")
                await publisher.publish(channel, CardUnpinned(room_id=room.id, product_id="1"))
                await viewer.next("publication")
                valkey.stop()
                valkey.restart()  # empty: history and epoch are gone
                await asyncio.wait_for(running.hub.link.connected.wait(), 20)
                again = await viewer.next("subscribed", timeout=20)
                assert again["wasRecovering"] is True and again["recovered"] is False
                assert again["data"]["room"]["id"] == room.id, "the snapshot to reload from"
                await publisher.publish(channel, CardUnpinned(room_id=room.id, product_id="2"))
                assert (await viewer.next("publication"))["data"]["product_id"] == "2"
            finally:
                await viewer.disconnect()
                await stop()
    finally:
        valkey.stop()
