"""A small populated shop built through the public HTTP routes, for security and fuzz tests:
a host with a live room, a product and a live drop; a buyer with a paid order and one with a held
order; a distributor with a link into the room."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from core.resources import Resources
from core.settings import Settings

Auth = Callable[..., dict[str, str]]

_keys = itertools.count(1)


def new_key() -> str:
    return f"sec-key-{next(_keys)}"


@dataclass
class World:
    host: str = "alice"
    buyer: str = "bob"
    other: str = "carol"
    distributor: str = "dave"
    room_id: str = ""
    other_room_id: str = ""
    product_id: str = ""
    drop_id: str = ""
    paid_order: str = ""
    held_order: str = ""
    distributor_id: str = ""
    link_code: str = ""
    tokens: dict[str, str] = field(default_factory=dict)


async def build_world(
    client: httpx.AsyncClient, auth: Auth, settings: Settings, resources: Resources
) -> World:
    w = World()
    host = auth(w.host, "host")

    async def ok(response: httpx.Response, *statuses: int) -> dict[str, object]:
        assert response.status_code in (statuses or (200, 201)), response.text
        return response.json()  # type: ignore[no-any-return]

    w.room_id = str(
        (await ok(await client.post("/api/rooms", json={"title": "Tea"}, headers=host)))["id"]
    )
    w.other_room_id = str(
        (
            await ok(
                await client.post(
                    "/api/rooms", json={"title": "Other"}, headers=auth("erin", "host")
                )
            )
        )["id"]
    )
    await ok(await client.post(f"/api/rooms/{w.room_id}/live", headers=host))
    product = {"sku": "SEC-1", "title": "Tea", "price_cents": 1000, "commission_bps": 1000}
    w.product_id = str(
        (await ok(await client.post("/api/products", json=product, headers=host)))["id"]
    )
    drop = {
        "product_id": w.product_id,
        "price_cents": 900,
        "quantity": 20,
        "per_buyer_limit": 5,
        "duration_s": 3600,
    }
    w.drop_id = str(
        (await ok(await client.post(f"/api/rooms/{w.room_id}/drops", json=drop, headers=host)))[
            "id"
        ]
    )
    dist = auth(w.distributor, "viewer", "distributor")
    w.distributor_id = str(
        (await ok(await client.post("/api/distributors", json={"team": "red"}, headers=dist)))["id"]
    )
    w.link_code = str(
        (await ok(await client.post("/api/links", json={"room_id": w.room_id}, headers=dist)))[
            "code"
        ]
    )
    buyer = auth(w.buyer, "viewer")
    await ok(
        await client.post(
            f"/api/rooms/{w.room_id}/enter", json={"link_code": w.link_code}, headers=buyer
        )
    )

    async def buy(who: str) -> str:
        response = await client.post(
            f"/api/drops/{w.drop_id}/buy",
            json={"quantity": 1},
            headers={**auth(who, "viewer"), "Idempotency-Key": new_key()},
        )
        await resources.after_commit.drain()
        return str((await ok(response, 201))["order_id"])

    w.paid_order = await buy(w.buyer)
    await ok(await client.post(f"/api/orders/{w.paid_order}/pay", headers=buyer))
    w.held_order = await buy(w.buyer)
    return w
