"""The hub's Redis pub/sub link (live.pubsub) against a real Valkey: a channel left and taken
again at once stays subscribed, and the answer to our own SUNSUBSCRIBE is not mistaken for the
cluster moving the channel (which would drop the link and fail every subscribe meanwhile)."""

from __future__ import annotations

import asyncio

from core.resources import Resources
from live.pubsub import PubSubLink


async def test_a_channel_left_and_taken_again_at_once_keeps_the_link(
    resources: Resources,
) -> None:
    got: list[tuple[bytes, bytes]] = []
    lost: list[set[bytes]] = []
    link = PubSubLink(
        resources.settings.redis_url,
        lambda channel, data: got.append((channel, data)),
        on_lost=lost.append,
        on_restored=lambda channels: None,
        cluster=resources.settings.redis_cluster,
    )
    running = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        for _ in range(20):  # leave and come back before Redis answers the leaving
            await link.subscribe("{dashboard#churn}:events")
            link.unsubscribe("{dashboard#churn}:events")
        await link.subscribe("{dashboard#churn}:events")
        await link.subscribe("{dashboard#other}:events")
        await asyncio.sleep(0.2)  # every SUNSUBSCRIBE answered by now
        assert lost == [] and link.connected.is_set()
        await resources.redis.execute_command("SPUBLISH", "{dashboard#churn}:events", b"still")
        async with asyncio.timeout(5):
            while not got:
                await asyncio.sleep(0.01)
        assert got == [(b"{dashboard#churn}:events", b"still")]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
