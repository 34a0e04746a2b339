"""Storefront fixtures: a live room (rooms belong to live, so inserted with SQL), a product,
and helpers to start drops and buy through the real HTTP routes."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgspec
import pytest
from redis.asyncio.cluster import RedisCluster

from core.resources import Resources
from storefront import Shop
from storefront.events import Event
from tests.published import published

HOST = "hana"
Auth = Callable[..., dict[str, str]]

_keys = itertools.count(1)


def new_key() -> str:
    return f"key-{next(_keys)}"


@pytest.fixture
async def room_id(resources: Resources) -> int:
    async with resources.pool.acquire() as conn:
        room: int = await conn.fetchval(
            """INSERT INTO rooms (host_id, title, status, live_at)
               VALUES ($1, 'Tea tasting / 品茶', 'live', now()) RETURNING id""",
            HOST,
        )
    return room


@pytest.fixture
async def product_id(client: httpx.AsyncClient, auth: Auth) -> str:
    response = await client.post(
        "/api/products",
        json={
            "sku": "TEA-1",
            "title": "Longjing 250g",
            "price_cents": 12_800,
            "commission_bps": 1500,
        },
        headers=auth(HOST, "host"),
    )
    assert response.status_code == 201, response.text
    pid: str = response.json()["id"]
    return pid


StartDrop = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def start_drop(client: httpx.AsyncClient, auth: Auth, room_id: int, product_id: str) -> StartDrop:
    """`await start_drop(quantity=5, per_buyer_limit=2)` → the created drop (JSON)."""

    async def start(**overrides: Any) -> dict[str, Any]:
        body = {
            "product_id": product_id,
            "price_cents": 9_900,
            "quantity": 5,
            "per_buyer_limit": 2,
            "starts_in_s": 0,
            "duration_s": 600,
        }
        body.update(overrides)
        response = await client.post(
            f"/api/rooms/{room_id}/drops", json=body, headers=auth(HOST, "host")
        )
        assert response.status_code == 201, response.text
        drop: dict[str, Any] = response.json()
        return drop

    return start


Buy = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture
def buy(client: httpx.AsyncClient, auth: Auth, shop: Shop) -> Buy:
    """`await buy(drop_id, "bob", quantity=1, key=None)` → the HTTP response."""

    async def attempt(
        drop_id: str, buyer: str, quantity: int = 1, key: str | None = None
    ) -> httpx.Response:
        response = await client.post(
            f"/api/drops/{drop_id}/buy",
            json={"quantity": quantity},
            headers={**auth(buyer, "viewer"), "Idempotency-Key": key or new_key()},
        )
        # the gate and the room hear of a sale just after the answer; wait for that
        await shop.settled()
        return response

    return attempt


async def room_events(res: Resources, room_id: int | str) -> list[dict[str, Any]]:
    """Every event published to the room so far, from its history stream, oldest first."""
    return [msgspec.json.decode(data) for data in await published(res.redis, f"room:{room_id}")]


async def stock_truth(res: Resources, drop_id: int | str) -> dict[str, int]:
    """PostgreSQL's view of a drop: quantity, held, sold, and the worst buyer."""
    async with res.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT d.quantity, d.per_buyer_limit,
                      (SELECT count(*) FROM stock_claims c WHERE c.drop_id = d.id
                       AND c.state = 'held') AS held,
                      (SELECT count(*) FROM stock_claims c WHERE c.drop_id = d.id
                       AND c.state = 'sold') AS sold,
                      (SELECT coalesce(max(n), 0) FROM (
                           SELECT sum(o.quantity - o.refunded_units) AS n FROM orders o
                           WHERE o.drop_id = d.id AND o.status IN ('held', 'paid', 'delivered')
                           GROUP BY o.buyer_id) per_buyer) AS max_per_buyer,
                      (SELECT coalesce(sum(o.quantity - o.refunded_units), 0) FROM orders o
                       WHERE o.drop_id = d.id AND o.status IN ('held', 'paid', 'delivered'))
                       AS ordered_units
               FROM drops d WHERE d.id = $1""",
            int(drop_id),
        )
    return dict(row)


__all__ = ["Event", "new_key", "room_events", "stock_truth"]


async def redis_calls(res: Resources) -> Counter[str]:
    """Commands Redis has served so far, by name (`INFO commandstats`; scripts' own commands
    included; on every primary of a cluster), without the INFO calls that read them."""
    if isinstance(res.redis, RedisCluster):
        replies = await res.redis.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        every = list(replies.values())
    else:
        every = [await res.redis.info("commandstats")]
    calls: Counter[str] = Counter()
    for stats in every:
        for name, figures in stats.items():
            if name.startswith("cmdstat_") and name != "cmdstat_info":
                calls[name.removeprefix("cmdstat_")] += int(figures["calls"])
    return calls
