"""A primary of the cluster dies: its replica takes over, the hub moves its subscriptions there
(logging the outage once), viewers of rooms on that shard recover what was published meanwhile,
viewers of rooms on other shards never notice, and buying goes on without oversell."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import msgspec
import pytest
from redis.crc import key_slot

from core.events import Publisher, room_channel
from core.resources import Resources, open_resources
from live.events import CardUnpinned
from livesell.app import create_app
from storefront import Shop
from tests.cluster.test_cluster import new_drop, new_product, rooms_on_every_shard
from tests.cluster.valkey_cluster import ValkeyCluster
from tests.live.conftest import start_hub
from tests.live.sdk import PythonViewer
from tests.storefront.conftest import stock_truth

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
async def own_cluster(resources: Resources) -> AsyncIterator[Resources]:
    """Resources on a cluster of this test's own (it kills one of its nodes)."""
    cluster = ValkeyCluster(Path(tempfile.mkdtemp(prefix="livesell-failover-"))).start()
    try:
        settings = msgspec.structs.replace(resources.settings, redis_url=cluster.url)
        async with open_resources(settings) as res:
            res.cluster = cluster  # type: ignore[attr-defined]
            yield res
    finally:
        cluster.stop()


async def test_a_dead_primary_is_replaced_and_nothing_is_lost(
    own_cluster: Resources, auth: Callable[..., dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    res = own_cluster
    cluster: ValkeyCluster = res.cluster  # type: ignore[attr-defined]
    shop = Shop(res)
    app = create_app(res.settings, res, shop)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        rooms = await rooms_on_every_shard(res)
        victim_room, calm_room = rooms[0], rooms[1]
        drop = await new_drop(client, auth, victim_room, await new_product(client, auth), 20)
        publisher = Publisher(res.redis, history_size=100, ttl_s=600)
        running, stop = await start_hub(res)
        victim = PythonViewer(running.url, room_channel(victim_room))
        calm = PythonViewer(running.url, room_channel(calm_room))
        try:
            for viewer in (victim, calm):
                await viewer.start()
                await viewer.next("subscribed")

            async def say(room: int, text: str) -> None:
                await publisher.publish(
                    room_channel(room), CardUnpinned(room_id=str(room), product_id=text)
                )

            # buyers before, during and after the failover
            async def buyer(n: int) -> int:
                for _ in range(60):
                    response = await client.post(
                        f"/api/drops/{drop['id']}/buy",
                        json={"quantity": 1},
                        headers={**auth(f"b{n}", "viewer"), "Idempotency-Key": f"k{n}"},
                    )
                    if response.status_code != 503:
                        return response.status_code
                    await asyncio.sleep(0.25)
                return 503

            first = await asyncio.gather(*(buyer(n) for n in range(10)))
            assert first == [201] * 10

            await asyncio.sleep(0.5)  # replication is asynchronous: let the replicas catch up
            primary = cluster.primary_of_slot(key_slot(f"{{room:{victim_room}}}".encode()))
            with caplog.at_level(logging.INFO, logger="livesell.hub.pubsub"):
                primary.kill()
                health = await client.get("/healthz")
                if health.status_code == 200:
                    # the check retries for up to its timeout: a replica may already have
                    # taken over the slots, and then the write it made really landed
                    promoted = cluster.primary_of_slot(key_slot(f"{{room:{victim_room}}}".encode()))
                    assert promoted is not primary, health.text
                else:
                    assert health.status_code == 503, health.text
                    assert list(health.json()["errors"]) == [f"redis {primary.address}"]
                storm = asyncio.gather(*(buyer(n) for n in range(10, 40)))
                await say(calm_room, "calm-during")
                assert (await calm.next("publication"))["data"]["product_id"] == "calm-during"
                cluster.wait_ok(timeout=30)
                for _ in range(100):
                    try:
                        await say(victim_room, "after")
                        break
                    except Exception:  # noqa: BLE001 - the client learns the new primary
                        await asyncio.sleep(0.2)
                # the room's stock moves too (the buyers): wait for the card
                got = await victim.next("publication", timeout=30)
                while got["data"]["type"] != "card.unpinned":
                    got = await victim.next("publication", timeout=30)
                assert got["data"]["product_id"] == "after"
                await asyncio.wait_for(running.hub.link.connected.wait(), 20)
                statuses = await storm
            # the dead node's outage is logged once, not once per retry
            lost = [r for r in caplog.records if f":{primary.port} lost" in r.getMessage()]
            assert len(lost) == 1, [r.getMessage() for r in caplog.records]
            assert any("channels moved" in r.getMessage() for r in caplog.records)

            # up again once the client knows the new primary (it asks after a failed write)
            for _ in range(50):
                health = await client.get("/healthz")
                if health.status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert health.json() == {"ok": True, "postgres": "up", "redis": "up"}
            await shop.settled()
            assert statuses.count(201) == 10 and set(statuses) <= {201, 409}, statuses
            truth = await stock_truth(res, drop["id"])
            assert truth["held"] + truth["sold"] == 20 == truth["ordered_units"]
        finally:
            await victim.disconnect()
            await calm.disconnect()
            await stop()
            await shop.settled()
