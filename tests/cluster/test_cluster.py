"""The whole product on a Redis Cluster: buys, drops, rate limits, scripts in pipelines and the
hub, with rooms and drops spread over the three shards."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from core.events import Publisher, publish_keys, room_channel
from core.ratelimit import Limit
from core.resources import Resources
from core.scripts import Batched, register, run_many
from live.events import CardUnpinned
from storefront import Shop
from storefront.buy.gate import gate_keys, lock_key
from tests.cluster.conftest import shard_of
from tests.conftest import within_one_window
from tests.live.conftest import start_hub
from tests.live.sdk import PythonViewer
from tests.storefront.conftest import HOST, room_events, stock_truth

Auth = Callable[..., dict[str, str]]
_keys = itertools.count(1)


async def rooms_on_every_shard(res: Resources) -> list[int]:
    """Live rooms, at least one on each primary (room ids are a sequence: insert until)."""
    rooms: dict[int, int] = {}
    async with res.pool.acquire() as conn:
        while len(rooms) < 3:
            room_id = await conn.fetchval(
                """INSERT INTO rooms (host_id, title, status, live_at)
                   VALUES ($1, 'Shard room', 'live', now()) RETURNING id""",
                HOST,
            )
            rooms.setdefault(shard_of(f"room:{room_id}"), room_id)
    return [rooms[shard] for shard in sorted(rooms)]


async def new_product(client: httpx.AsyncClient, auth: Auth) -> str:
    response = await client.post(
        "/api/products",
        json={"sku": f"SKU-{next(_keys)}", "title": "Tea", "price_cents": 900,
              "commission_bps": 1000},
        headers=auth(HOST, "host"),
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def new_drop(
    client: httpx.AsyncClient, auth: Auth, room_id: int, product_id: str, quantity: int
) -> dict[str, Any]:
    response = await client.post(
        f"/api/rooms/{room_id}/drops",
        json={"product_id": product_id, "price_cents": 900, "quantity": quantity,
              "per_buyer_limit": 1, "starts_in_s": 0, "duration_s": 600},
        headers=auth(HOST, "host"),
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_every_key_of_a_script_call_shares_a_slot() -> None:
    from redis.crc import key_slot

    for keys in (gate_keys(7), [lock_key(7), *gate_keys(7)], publish_keys("room:7")):
        assert len({key_slot(k.encode()) for k in keys}) == 1, keys
    assert shard_of("room:1") != shard_of("room:2") or shard_of("room:2") != shard_of("room:3")


async def test_buy_storm_on_drops_of_every_shard_never_oversells(
    client: httpx.AsyncClient, auth: Auth, resources: Resources, shop: Shop
) -> None:
    rooms = await rooms_on_every_shard(resources)
    product = await new_product(client, auth)
    drops = [await new_drop(client, auth, room, product, quantity=10) for room in rooms]
    assert len({shard_of(f"drop:{d['id']}") for d in drops}) >= 2, "drops on several shards"

    async def attempt(drop_id: str, buyer: str) -> int:
        response = await client.post(
            f"/api/drops/{drop_id}/buy",
            json={"quantity": 1},
            headers={**auth(buyer, "viewer"), "Idempotency-Key": f"k-{buyer}"},
        )
        return response.status_code

    statuses = await asyncio.gather(
        *(attempt(d["id"], f"buyer-{i}-{d['id']}") for d in drops for i in range(40))
    )
    await shop.settled()
    for n, drop in enumerate(drops):
        mine = statuses[n * 40 : (n + 1) * 40]
        assert mine.count(201) == 10, (drop["id"], sorted(set(mine)))
        assert set(mine) == {201, 409}
        truth = await stock_truth(resources, drop["id"])
        assert truth["held"] + truth["sold"] == 10 == truth["ordered_units"]
        probe = await shop.gate.probe(int(drop["id"]))
        assert probe.free == 0 and probe.in_flight == 0


async def test_drops_are_announced_in_rooms_of_every_shard(
    client: httpx.AsyncClient, auth: Auth, resources: Resources
) -> None:
    rooms = await rooms_on_every_shard(resources)
    product = await new_product(client, auth)
    for room in rooms:
        drop = await new_drop(client, auth, room, product, quantity=3)
        events = await room_events(resources, room)
        assert [e["type"] for e in events] == ["drop.started"]
        assert events[0]["drop"]["id"] == drop["id"]


async def test_rate_limits_are_enforced_for_subjects_on_every_shard(
    resources: Resources, client: httpx.AsyncClient, auth: Auth
) -> None:
    limit = Limit("cluster-test", 3)
    subjects = [f"user-{n}" for n in range(12)]
    assert len({shard_of(f"rl:cluster-test:{s}") for s in subjects}) == 3
    await within_one_window(need_s=4)
    for subject in subjects:
        verdicts = [await resources.limiter.hit((limit, subject)) for _ in range(5)]
        assert [v is None for v in verdicts] == [True, True, True, False, False], subject

    # and through the buy route: the per-user limit of the settings (30 per 10 s)
    rooms = await rooms_on_every_shard(resources)
    drop = await new_drop(client, auth, rooms[0], await new_product(client, auth), quantity=1)
    codes = []
    await within_one_window(need_s=6)
    for n in range(resources.settings.buy_rate_per_user + 2):
        response = await client.post(
            f"/api/drops/{drop['id']}/buy",
            json={"quantity": 1},
            headers={**auth("eager", "viewer"), "Idempotency-Key": f"eager-{n}"},
        )
        codes.append(response.json().get("error", {}).get("code", "ok"))
    assert codes[0] == "ok" and codes.count("rate_limited") == 2, codes


async def test_script_pipelines_span_shards_and_reload_lost_scripts(
    resources: Resources,
) -> None:
    client = resources.redis
    script = register(client, "core", "ratelimit_hit")
    calls = [([f"{{pipe:{n}}}:c"], [60]) for n in range(30)]
    assert await run_many(client, script, calls) == [1] * 30
    await client.script_flush()  # every primary forgets its scripts
    assert await run_many(client, script, calls) == [2] * 30

    batched = Batched(client, script)
    await client.script_flush()
    replies = await asyncio.gather(*(batched(keys, args) for keys, args in calls))
    assert replies == [3] * 30 and batched.round_trips == 1


async def test_hub_viewers_of_rooms_on_every_shard_get_their_events_and_recover(
    resources: Resources,
) -> None:
    rooms = await rooms_on_every_shard(resources)
    publisher = Publisher(resources.redis, history_size=100, ttl_s=600)
    running, stop = await start_hub(resources)
    viewers = [PythonViewer(running.url, room_channel(room)) for room in rooms]
    try:
        for viewer in viewers:
            await viewer.start()
            await viewer.next("subscribed")
        for room in rooms:
            await publisher.publish(
                room_channel(room), CardUnpinned(room_id=str(room), product_id=f"p{room}")
            )
        for room, viewer in zip(rooms, viewers, strict=True):
            got = await viewer.next("publication")
            assert got["data"]["product_id"] == f"p{room}"

        # each viewer drops out; the room goes on; each comes back and recovers what it missed
        for viewer in viewers:
            await viewer.disconnect()
        for room in rooms:
            for n in (1, 2):
                await publisher.publish(
                    room_channel(room), CardUnpinned(room_id=str(room), product_id=f"m{n}")
                )
        for viewer in viewers:
            await viewer.connect()
            again = await viewer.next("subscribed")
            assert again["wasRecovering"] is True and again["recovered"] is True
            missed = [(await viewer.next("publication"))["data"]["product_id"] for _ in (1, 2)]
            assert missed == ["m1", "m2"]
    finally:
        for viewer in viewers:
            await viewer.disconnect()
        await stop()


pytestmark = pytest.mark.cluster
