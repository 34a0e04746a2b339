"""Coupons as hosts and viewers use them: release, claim behind the gate (idempotent, limited,
never over-issued), the room told live, and a claim applied to one order at the buy."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from core.resources import Resources
from storefront import Shop
from tests.storefront.conftest import HOST, Auth, StartDrop, new_key, room_events, stock_truth


async def release(
    client: httpx.AsyncClient, auth: Auth, room_id: int | str, **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "¥10 off / 立减10元",
        "amount_off_cents": 1_000,
        "quantity": 3,
        "claim_duration_s": 600,
        "valid_s": 3600,
    }
    body.update(overrides)
    response = await client.post(
        f"/api/rooms/{room_id}/coupons", json=body, headers=auth(HOST, "host")
    )
    assert response.status_code == 201, response.text
    coupon: dict[str, Any] = response.json()
    return coupon


async def claim(
    client: httpx.AsyncClient, auth: Auth, shop: Shop, coupon_id: str, user: str,
    key: str | None = None,
) -> httpx.Response:  # fmt: skip
    response = await client.post(
        f"/api/coupons/{coupon_id}/claim",
        headers={**auth(user, "viewer"), "Idempotency-Key": key or new_key()},
    )
    await shop.settled()
    return response


async def buy_with(
    client: httpx.AsyncClient, auth: Auth, shop: Shop, drop_id: str, user: str, **body: Any
) -> httpx.Response:
    response = await client.post(
        f"/api/drops/{drop_id}/buy",
        json={"quantity": 1, **body},
        headers={**auth(user, "viewer"), "Idempotency-Key": new_key()},
    )
    await shop.settled()
    return response


async def test_release_claim_and_the_room_hears_it(
    client: httpx.AsyncClient, auth: Auth, shop: Shop, room_id: int, resources: Resources
) -> None:
    coupon = await release(client, auth, room_id, quantity=2)
    assert coupon["status"] == "active" and coupon["remaining"] == 2
    first = await claim(client, auth, shop, coupon["id"], "ann")
    assert first.status_code == 201, first.text
    assert set(first.json()) == {"claim_id", "coupon_id", "expires_at"}
    second = await claim(client, auth, shop, coupon["id"], "ben")
    assert second.status_code == 201
    gone = await claim(client, auth, shop, coupon["id"], "cat")
    assert gone.status_code == 409 and gone.json()["error"]["code"] == "coupons_gone"

    events = await room_events(resources, room_id)
    released = [e for e in events if e["type"] == "coupon.released"]
    assert released and released[0]["coupon"]["id"] == coupon["id"]
    remaining = [e["remaining"] for e in events if e["type"] == "coupon.remaining"]
    assert remaining[-1] == 0 and sorted(remaining, reverse=True) == remaining

    snapshot = (await client.get(f"/api/rooms/{room_id}")).json()
    assert snapshot["coupons"][0]["id"] == coupon["id"]
    assert snapshot["coupons"][0]["status"] == "gone"
    mine = (await client.get("/api/me/coupons", headers=auth("ann", "viewer"))).json()
    assert [c["claim_id"] for c in mine["claims"]] == [first.json()["claim_id"]]


async def test_claims_are_idempotent_and_limited_per_user(
    client: httpx.AsyncClient, auth: Auth, shop: Shop, room_id: int, resources: Resources
) -> None:
    coupon = await release(client, auth, room_id, quantity=10, per_user_limit=2)
    first = await claim(client, auth, shop, coupon["id"], "ann", key="k1")
    replay = await claim(client, auth, shop, coupon["id"], "ann", key="k1")
    assert replay.status_code == 201 and replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert (await claim(client, auth, shop, coupon["id"], "ann", key="k2")).status_code == 201
    third = await claim(client, auth, shop, coupon["id"], "ann", key="k3")
    assert third.status_code == 429 and third.json()["error"]["code"] == "limit_reached"
    async with resources.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM coupon_claims") == 2


async def test_claim_window_and_bad_terms(
    client: httpx.AsyncClient, auth: Auth, shop: Shop, room_id: int
) -> None:
    later = await release(client, auth, room_id, claim_starts_in_s=3600)
    refused = await claim(client, auth, shop, later["id"], "ann")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "coupon_not_active"
    both = await client.post(
        f"/api/rooms/{room_id}/coupons",
        json={"title": "x", "amount_off_cents": 1, "percent_off_bps": 10, "quantity": 1,
              "claim_duration_s": 60, "valid_s": 60},
        headers=auth(HOST, "host"),
    )  # fmt: skip
    assert both.status_code == 422 and both.json()["error"]["code"] == "coupon_invalid"
    stranger = await client.post(
        f"/api/rooms/{room_id}/coupons",
        json={"title": "x", "amount_off_cents": 1, "quantity": 1, "claim_duration_s": 60,
              "valid_s": 60},
        headers=auth("mallory", "host"),
    )  # fmt: skip
    assert stranger.status_code == 403
    missing = await claim(client, auth, shop, "987654", "ann")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "coupon_not_found"


async def test_redis_lost_mid_claims_never_over_issues(
    client: httpx.AsyncClient, auth: Auth, shop: Shop, room_id: int, resources: Resources
) -> None:
    coupon = await release(client, auth, room_id, quantity=20)
    first = await asyncio.gather(
        *(claim(client, auth, shop, coupon["id"], f"u{i}") for i in range(15))
    )
    await resources.redis.flushall()
    rest = await asyncio.gather(
        *(claim(client, auth, shop, coupon["id"], f"v{i}") for i in range(30))
    )
    statuses = [r.status_code for r in first + rest]
    assert statuses.count(201) == 20 and set(statuses) <= {201, 409}
    async with resources.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM coupon_claims") == 20


async def test_a_claim_discounts_one_order_and_commission_follows_what_was_paid(
    client: httpx.AsyncClient, auth: Auth, shop: Shop, room_id: int, start_drop: StartDrop,
    resources: Resources,
) -> None:  # fmt: skip
    drop = await start_drop(quantity=10, per_buyer_limit=5, price_cents=3_000)
    coupon = await release(client, auth, room_id, percent_off_bps=2_500, amount_off_cents=None,
                           min_spend_cents=5_000)  # fmt: skip
    claim_id = (await claim(client, auth, shop, coupon["id"], "ann")).json()["claim_id"]

    short = await buy_with(client, auth, shop, drop["id"], "ann", coupon_claim_id=claim_id)
    assert short.status_code == 422
    assert short.json()["error"]["code"] == "coupon_not_applicable"
    bought = await buy_with(
        client, auth, shop, drop["id"], "ann", quantity=3, coupon_claim_id=claim_id
    )
    assert bought.status_code == 201, bought.text
    assert bought.json()["amount_cents"] == 9_000 - 2_250
    order = (
        await client.get(f"/api/orders/{bought.json()['order_id']}", headers=auth("ann"))
    ).json()
    assert order["discount_cents"] == 2_250 and order["coupon_claim_id"] == claim_id
    again = await buy_with(client, auth, shop, drop["id"], "ann", coupon_claim_id=claim_id)
    assert again.status_code == 409 and again.json()["error"]["code"] == "coupon_claim_used"
    other = await buy_with(client, auth, shop, drop["id"], "ben", coupon_claim_id=claim_id)
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "coupon_claim_not_found"
    assert (await client.get("/api/me/coupons", headers=auth("ann"))).json()["claims"] == []


async def test_two_concurrent_buys_with_one_claim_discount_one_order(
    client: httpx.AsyncClient, auth: Auth, shop: Shop, room_id: int, start_drop: StartDrop,
    resources: Resources,
) -> None:  # fmt: skip
    drop = await start_drop(quantity=10, per_buyer_limit=5, price_cents=3_000)
    coupon = await release(client, auth, room_id)
    claim_id = (await claim(client, auth, shop, coupon["id"], "ann")).json()["claim_id"]
    answers = await asyncio.gather(
        *(buy_with(client, auth, shop, drop["id"], "ann", coupon_claim_id=claim_id)
          for _ in range(2))
    )  # fmt: skip
    async with resources.pool.acquire() as conn:
        used = await conn.fetchval(
            "SELECT count(*) FROM orders WHERE coupon_claim_id = $1", int(claim_id)
        )
    assert used == 1
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json()["error"]["code"] == "coupon_claim_used"
    truth = await stock_truth(resources, drop["id"])
    assert truth["held"] == 1, "the refused buy's unit went back"


async def test_two_writes_of_one_claim_at_once_place_one_order(
    shop: Shop, room_id: int, start_drop: StartDrop, client: httpx.AsyncClient, auth: Auth,
    resources: Resources,
) -> None:  # fmt: skip
    """Past every check in front, two orders with one claim written in the same moment: the
    database's unique index lets one through, the other is `coupon_taken`."""
    from storefront.buy.placing import NotPlaced, OrderRequest, Placed

    drop = await start_drop(quantity=10, per_buyer_limit=5, price_cents=3_000)
    coupon = await release(client, auth, room_id)
    claim_id = int((await claim(client, auth, shop, coupon["id"], "ann")).json()["claim_id"])
    outcomes = await asyncio.gather(
        *(shop.orders.place(OrderRequest(int(drop["id"]), "ann", f"direct-{n}", bytes(32),
                                         [n + 1], coupon_claim_id=claim_id))
          for n in range(2))
    )  # fmt: skip
    assert sorted(type(o).__name__ for o in outcomes) == ["NotPlaced", "Placed"]
    assert [o.reason for o in outcomes if isinstance(o, NotPlaced)] == ["coupon_taken"]
    assert [o.amount_cents for o in outcomes if isinstance(o, Placed)] == [2_000]


async def test_the_constraint_refuses_a_second_live_order_on_one_claim(
    client: httpx.AsyncClient, auth: Auth, shop: Shop, room_id: int, start_drop: StartDrop,
    resources: Resources,
) -> None:  # fmt: skip
    """Whatever the code in front does, PostgreSQL refuses a claim on two live orders."""
    import asyncpg

    drop = await start_drop(quantity=10, per_buyer_limit=5, price_cents=3_000)
    coupon = await release(client, auth, room_id)
    claim_id = (await claim(client, auth, shop, coupon["id"], "ann")).json()["claim_id"]
    bought = await buy_with(client, auth, shop, drop["id"], "ann", coupon_claim_id=claim_id)
    assert bought.status_code == 201
    async with resources.pool.acquire() as conn:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                """INSERT INTO orders (drop_id, room_id, product_id, buyer_id, quantity,
                                       unit_price_cents, amount_cents, commission_bps,
                                       hold_expires_at, coupon_claim_id, discount_cents)
                   SELECT drop_id, room_id, product_id, buyer_id, 1, 3000, 2000, 0, now(),
                          coupon_claim_id, 1000
                   FROM orders WHERE id = $1""",
                int(bought.json()["order_id"]),
            )
