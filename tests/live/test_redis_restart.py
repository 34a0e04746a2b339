"""The hub keeps working when Redis restarts: the pub/sub link comes back by itself, and a viewer
ends up with every event in order, whether it arrived live or was recovered from history."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from core.embedded import EmbeddedValkey
from core.events import Publisher, room_channel
from core.resources import Resources, open_resources
from live.events import CardUnpinned
from live.hub import Hub
from tests.live.conftest import Room, start_hub
from tests.live.sdk import PythonViewer

pytestmark = pytest.mark.slow


@dataclass
class Stage:
    valkey: EmbeddedValkey
    hub: Hub
    viewer: PythonViewer
    room: Room
    publisher: Publisher

    async def unpin(self, product_id: str) -> None:
        event = CardUnpinned(room_id=self.room.id, product_id=product_id)
        await self.publisher.publish(room_channel(self.room.id), event)


@contextlib.asynccontextmanager
async def stage(
    resources: Resources, room: Room, tmp_path: Path, *, durable: bool
) -> AsyncIterator[Stage]:
    """A hub on a Valkey of its own (so the test may stop it) with one subscribed SDK viewer."""
    valkey = EmbeddedValkey(tmp_path / "valkey", durable=durable)
    settings = msgspec.structs.replace(resources.settings, redis_url=valkey.start())
    try:
        async with open_resources(settings) as res:
            running, stop = await start_hub(res)
            viewer = PythonViewer(running.url, room_channel(room.id))
            await viewer.start()
            try:
                await viewer.next("subscribed")
                publisher = Publisher(res.redis, history_size=100, ttl_s=600)
                yield Stage(valkey, running.hub, viewer, room, publisher)
            finally:
                await viewer.disconnect()
                await stop()
    finally:
        valkey.stop()


async def test_viewers_get_every_event_across_a_redis_restart(
    resources: Resources, room: Room, tmp_path: Path
) -> None:
    async with stage(resources, room, tmp_path, durable=True) as s:
        await s.unpin("1")
        assert (await s.viewer.next("publication"))["data"]["product_id"] == "1"

        s.valkey.stop()
        await asyncio.sleep(1.0)
        s.valkey.restart()
        # published the moment Redis is back: the hub may not have resubscribed yet
        for n in (2, 3, 4):
            await s.unpin(str(n))
        got = [(await s.viewer.next("publication", timeout=20))["data"] for _ in range(3)]
        assert [g["product_id"] for g in got] == ["2", "3", "4"]

        await asyncio.wait_for(s.hub.link.connected.wait(), 20)
        await s.unpin("5")
        assert (await s.viewer.next("publication"))["data"]["product_id"] == "5"


async def test_lost_history_makes_viewers_reload_the_snapshot(
    resources: Resources, room: Room, tmp_path: Path
) -> None:
    async with stage(resources, room, tmp_path, durable=False) as s:
        await s.unpin("1")
        await s.viewer.next("publication")
        s.valkey.stop()
        s.valkey.restart()  # empty: history and epoch are gone
        await asyncio.wait_for(s.hub.link.connected.wait(), 20)
        again = await s.viewer.next("subscribed", timeout=20)
        assert again["wasRecovering"] is True and again["recovered"] is False
        assert again["data"]["room"]["id"] == room.id, "the snapshot to reload from"
        await s.unpin("2")
        assert (await s.viewer.next("publication"))["data"]["product_id"] == "2"
