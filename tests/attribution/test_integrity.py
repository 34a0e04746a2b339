"""Integrity and money operations through HTTP, against a hand-computed truth: self-referral by
device and payment instrument (flagged at 0, or refused), the review queue, commission rules
changing only later orders, and withdrawals that never overdraw, fees to the cent."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import msgspec
import pytest

import attribution
from core.auth import mint_token
from core.resources import Resources
from storefront.payments import SIGNATURE_HEADER, sign, webhook_key
from tests.attribution.shop import Shop
from tests.storefront.payments_fake import HandProvider

TEA_CENTS, TEA_BPS = 10_000, 1_000  # 100.00 at 10%: 10.00 a unit


def headers(shop: Shop, user: str | None, *roles: str, device: str | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    if user is not None:
        token = mint_token(shop.settings.secret, user, roles or ("viewer",))
        out["Authorization"] = f"Bearer {token}"
    if device is not None:
        out["X-Device-Id"] = device
    return out


async def call(shop: Shop, method: str, path: str, user: str | None, *roles: str,
               device: str | None = None, expect: int = 200, **kw: Any) -> Any:  # fmt: skip
    response = await shop.http.request(
        method, path, headers=headers(shop, user, *roles, device=device), **kw
    )
    assert response.status_code == expect, f"{method} {path}: {response.text}"
    return response.json()


async def distributor(shop: Shop, user: str, device: str | None = None) -> str:
    body = await call(shop, "POST", "/api/distributors", user, "viewer", "distributor",
                      device=device, json={}, expect=201)  # fmt: skip
    return str(body["id"])


async def link(shop: Shop, user: str, room: int) -> str:
    body = await call(shop, "POST", "/api/links", user, "viewer", "distributor",
                      json={"room_id": str(room)}, expect=201)  # fmt: skip
    return str(body["code"])


async def click(shop: Shop, user: str | None, code: str, device: str | None = None) -> None:
    response = await shop.http.get(f"/l/{code}", headers=headers(shop, user, device=device))
    assert response.status_code == 302, response.text
    shop.http.cookies.clear()  # every anonymous click a new browser


async def buy(shop: Shop, buyer: str, drop: int, *, quantity: int = 1,
              device: str | None = None, expect: int = 201) -> httpx.Response:  # fmt: skip
    h = {**headers(shop, buyer, device=device), "Idempotency-Key": uuid.uuid4().hex}
    body = {"quantity": quantity}
    response = await shop.http.post(f"/api/drops/{drop}/buy", json=body, headers=h)
    assert response.status_code == expect, response.text
    return response


async def bought(shop: Shop, buyer: str, drop: int, *, quantity: int = 1,
                 device: str | None = None) -> int:  # fmt: skip
    order = int((await buy(shop, buyer, drop, quantity=quantity, device=device)).json()["order_id"])
    await shop.pay(order)
    return order


async def trail(shop: Shop, order: int) -> Any:
    return await call(shop, "GET", f"/api/orders/{order}/attribution", "admin-1", "admin")


async def money(shop: Shop, user: str) -> dict[str, int]:
    body = await call(shop, "GET", "/api/distributors/me", user, "distributor")
    return {**body["commission_cents"], "balance": body["balance_cents"]}


async def world(shop: Shop) -> tuple[int, int, int]:
    room = await shop.room()
    tea = await shop.product(TEA_CENTS, TEA_BPS)
    return room, tea, await shop.drop(room, tea)


async def test_same_device_self_referral_is_flagged_and_earns_nothing(resources: Resources) -> None:
    shop = Shop(resources)
    room, _, drop = await world(shop)
    await distributor(shop, "dist-a", device="phone-of-a")
    code = await link(shop, "dist-a", room)
    # the distributor's second account, on the distributor's own phone
    await click(shop, "alt-of-a", code, device="phone-of-a")
    own = await bought(shop, "alt-of-a", drop, device="phone-of-a")
    # a real buyer on their own phone, and one whose app sends no device id
    await click(shop, "v1", code, device="phone-of-v1")
    real = await bought(shop, "v1", drop, device="phone-of-v1")
    await click(shop, "v2", code)
    unknown = await bought(shop, "v2", drop)
    for order in (own, real, unknown):
        await shop.deliver_past_window(order)
    await attribution.settle(shop.res)

    flagged = await trail(shop, own)
    assert flagged["self_referral"] is True
    assert flagged["self_referral_reasons"] == ["device"]
    assert flagged["commission"]["commission_cents"] == 0
    for order in (real, unknown):
        clean = await trail(shop, order)
        assert clean["self_referral"] is False and clean["self_referral_reasons"] == []
        assert clean["commission"]["confirmed_cents"] == 1_000
    # truth: two real orders at 10.00 each; the self-referral earns nothing
    assert (await money(shop, "dist-a"))["confirmed"] == 2_000


async def test_reject_policy_refuses_a_self_referred_buy(resources: Resources) -> None:
    shop = Shop(resources).under(self_referral="reject")
    room, _, drop = await world(shop)
    await distributor(shop, "dist-a", device="phone-of-a")
    code = await link(shop, "dist-a", room)
    await click(shop, "dist-a", code)  # their own link, their own account
    refused = await buy(shop, "dist-a", drop, expect=422)
    assert refused.json()["error"]["code"] == "self_referral"
    await click(shop, "alt-of-a", code, device="phone-of-a")
    refused = await buy(shop, "alt-of-a", drop, device="phone-of-a", expect=422)
    assert refused.json()["error"]["code"] == "self_referral"
    # a shared address alone is no proof: everyone here comes from one test address
    await click(shop, "v1", code, device="phone-of-v1")
    await buy(shop, "v1", drop, device="phone-of-v1")


async def test_a_payment_instrument_shared_with_the_distributor_is_a_self_referral(
    resources: Resources,
) -> None:
    shop = Shop(resources)
    provider = HandProvider()
    shop.storefront.payments = provider
    room, _, drop = await world(shop)
    await distributor(shop, "dist-a")
    code = await link(shop, "dist-a", room)

    async def pay_with(order: int, buyer: str, fingerprint: str) -> None:
        await call(shop, "POST", f"/api/orders/{order}/pay", buyer, "viewer", expect=200)
        payment_id, checkout = provider.started[-1]
        body = msgspec.json.encode({
            "id": f"evt-{order}", "provider": provider.name, "type": "payment.succeeded",
            "created": int(time.time()),
            "data": {"payment_id": payment_id, "order_id": str(order),
                     "amount_cents": checkout.amount_cents, "fingerprint": fingerprint},
        })  # fmt: skip
        signature = sign(webhook_key(shop.settings.secret), body)
        response = await shop.http.post(
            "/api/payments/webhook", content=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
        )  # fmt: skip
        assert response.status_code == 200, response.text

    # the distributor pays for something of their own with card X
    mine = int((await buy(shop, "dist-a", drop)).json()["order_id"])
    await pay_with(mine, "dist-a", "card-X")
    # an order credited to them is paid with card X too; another with card Y
    await click(shop, "alt-of-a", code)
    alt = int((await buy(shop, "alt-of-a", drop)).json()["order_id"])
    await pay_with(alt, "alt-of-a", "card-X")
    await click(shop, "v1", code)
    real = int((await buy(shop, "v1", drop)).json()["order_id"])
    await pay_with(real, "v1", "card-Y")

    flagged = await trail(shop, alt)
    assert flagged["self_referral_reasons"] == ["payment"]
    assert flagged["commission"]["commission_cents"] == 0
    assert (await trail(shop, real))["commission"]["commission_cents"] == 1_000
    assert (await money(shop, "dist-a"))["pending"] == 1_000


async def _burst(shop: Shop, code: str, device: str, clicks: int) -> None:
    for _ in range(clicks):
        await click(shop, None, code, device=device)


async def test_click_bursts_hold_commission_under_review_until_an_admin_decides(
    resources: Resources,
) -> None:
    shop = Shop(resources).under(review_device_clicks=5)
    room, _, drop = await world(shop)
    await distributor(shop, "dist-a")
    code = await link(shop, "dist-a", room)
    orders = {}
    for buyer, device in (("b1", "farm-1"), ("b2", "farm-2")):
        await _burst(shop, code, device, 4)  # four anonymous clicks, then the buyer's: five
        await click(shop, buyer, code, device=device)
        orders[buyer] = await bought(shop, buyer, drop, device=device)
    await click(shop, "b3", code, device="phone-3")
    orders["b3"] = await bought(shop, "b3", drop, device="phone-3")
    await click(shop, "b4", code)  # no device id: judged on what is known
    orders["b4"] = await bought(shop, "b4", drop)
    for order in orders.values():
        await shop.deliver_past_window(order)
    await attribution.settle(shop.res)

    queue = await call(shop, "GET", "/api/admin/reviews", "admin-1", "admin")
    held = {r["order_id"]: r for r in queue["reviews"]}
    assert set(held) == {str(orders["b1"]), str(orders["b2"])}
    assert all(r["reasons"] == ["device_burst"] for r in held.values())
    assert all(r["commission_cents"] == 1_000 for r in held.values())
    assert (await trail(shop, orders["b1"]))["commission"]["state"] == "under_review"
    # truth: b3 and b4 confirm; b1 and b2 wait
    assert await money(shop, "dist-a") == {
        "pending": 2_000, "confirmed": 2_000, "paid": 0, "reversed": 0, "balance": 2_000,
    }  # fmt: skip
    # nothing under review is paid
    batch = await call(shop, "POST", "/api/admin/payouts", "admin-1", "admin", expect=201)
    assert batch["total_cents"] == 2_000

    approved = await call(shop, "POST", f"/api/admin/reviews/{orders['b1']}", "admin-1", "admin",
                          json={"decision": "approve", "note": "known customer"})  # fmt: skip
    assert approved["status"] == "approved" and approved["decided_by"] == "admin-1"
    rejected = await call(shop, "POST", f"/api/admin/reviews/{orders['b2']}", "admin-1", "admin",
                          json={"decision": "reject", "note": "click farm"})  # fmt: skip
    assert rejected["status"] == "rejected"
    again = await call(shop, "POST", f"/api/admin/reviews/{orders['b2']}", "admin-1", "admin",
                       json={"decision": "approve"}, expect=409)  # fmt: skip
    assert again["error"]["code"] == "review_decided"
    # truth: b1 confirms (10.00 more), b2's 10.00 is taken back
    assert await money(shop, "dist-a") == {
        "pending": 0, "confirmed": 3_000, "paid": 2_000, "reversed": 1_000, "balance": 1_000,
    }  # fmt: skip
    b2 = await trail(shop, orders["b2"])
    assert b2["commission"]["state"] == "reversed"
    assert b2["review"] == {"status": "rejected", "reasons": ["device_burst"],
                            "decided_by": "admin-1", "note": "click farm"}  # fmt: skip
    assert [p["note"] for p in b2["postings"] if p["kind"] == "review"] == ["rejected: click farm"]
    b1 = await trail(shop, orders["b1"])
    assert [p["kind"] for p in b1["postings"]] == ["accrue", "review", "confirm"]
    assert b1["commission"]["confirmed_cents"] == 1_000


async def test_review_off_turns_the_heuristics_off(resources: Resources) -> None:
    shop = Shop(resources).under(review_device_clicks=5, review=False)
    room, _, drop = await world(shop)
    await distributor(shop, "dist-a")
    code = await link(shop, "dist-a", room)
    await _burst(shop, code, "farm-1", 4)
    await click(shop, "b1", code, device="farm-1")
    order = await bought(shop, "b1", drop, device="farm-1")
    assert (await call(shop, "GET", "/api/admin/reviews", "admin-1", "admin"))["reviews"] == []
    assert (await trail(shop, order))["commission"]["state"] == "pending"


async def test_overrides_and_tiers_change_only_later_orders(resources: Resources) -> None:
    shop = Shop(resources)
    room, tea, drop = await world(shop)
    a = await distributor(shop, "dist-a")
    await distributor(shop, "dist-b")
    code_a, code_b = await link(shop, "dist-a", room), await link(shop, "dist-b", room)

    async def order_through(code: str, buyer: str, quantity: int = 1) -> int:
        await click(shop, buyer, code)
        return await bought(shop, buyer, drop, quantity=quantity)

    o1 = await order_through(code_a, "v1")  # product's 10%: 1000
    await call(shop, "PUT", f"/api/admin/distributors/{a}/rates", "admin-1", "admin",
               json={"commission_bps": 2_000})  # fmt: skip
    o2 = await order_through(code_a, "v2")  # a's 20% for everything: 2000
    await call(shop, "PUT", f"/api/admin/distributors/{a}/rates", "admin-1", "admin",
               json={"product_id": str(tea), "commission_cents": 1_500})  # fmt: skip
    o3 = await order_through(code_a, "v3", quantity=2)  # 15.00 a unit on tea: 3000
    await call(shop, "PUT", "/api/admin/tiers", "admin-1", "admin",
               json={"tiers": [{"name": "gold", "min_confirmed_gmv_cents": 20_000,
                                "bonus_bps": 500}]})  # fmt: skip
    o4 = await order_through(code_a, "v4")  # a has no confirmed sales yet: 1500
    for order in (o1, o2):
        await shop.deliver_past_window(order)
    assert await attribution.settle(shop.res) == 2  # a's confirmed sales: 200.00, gold
    o5 = await order_through(code_a, "v5")  # 1500 + 5% of 100.00: 2000
    o6 = await order_through(code_b, "v6")  # b's own rate is untouched: 1000

    truth = {o1: 1_000, o2: 2_000, o3: 3_000, o4: 1_500, o5: 2_000, o6: 1_000}
    for order, cents in truth.items():
        assert (await trail(shop, order))["commission"]["commission_cents"] == cents, order
    gold = (await trail(shop, o5))["terms"]
    assert gold == {
        "source": "distributor_product", "base_bps": 0, "commission_cents_per_unit": 1_500,
        "tier": "gold", "bonus_bps": 500,
    }  # fmt: skip
    # a rule changed after an order never changes it
    await call(shop, "PUT", f"/api/admin/distributors/{a}/rates", "admin-1", "admin",
               json={"commission_bps": 0})  # fmt: skip
    await call(shop, "PUT", f"/api/admin/products/{tea}/commission", "admin-1", "admin",
               json={"commission_cents": 1})  # fmt: skip
    await shop.refund(o3, TEA_CENTS, by_admin=True)  # one of two units back
    assert (await trail(shop, o3))["commission"]["pending_cents"] == 1_500


async def test_twenty_concurrent_withdrawals_never_overdraw(resources: Resources) -> None:
    shop = Shop(resources).under(
        withdrawal_min_cents=1_000, withdrawal_fee_cents=100, withdrawal_fee_bps=50
    )
    room = await shop.room()
    big = await shop.product(100_000, TEA_BPS)  # 1000.00 at 10%: 100.00
    drop = await shop.drop(room, big)
    await distributor(shop, "dist-a")
    code = await link(shop, "dist-a", room)
    await click(shop, "v1", code)
    order = await bought(shop, "v1", drop)
    await shop.deliver_past_window(order)
    await attribution.settle(shop.res)
    assert (await money(shop, "dist-a"))["balance"] == 10_000

    async def ask(cents: int) -> httpx.Response:
        return await shop.http.post(
            "/api/distributors/me/withdrawals", json={"amount_cents": cents},
            headers=headers(shop, "dist-a", "distributor"),
        )  # fmt: skip

    answers = await asyncio.gather(*(ask(1_000) for _ in range(20)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] * 10 + [409] * 10
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {
        "insufficient_balance"
    }
    mine = await call(shop, "GET", "/api/distributors/me/withdrawals", "dist-a", "distributor")
    assert (mine["reserved_cents"], mine["available_cents"]) == (10_000, 0)
    # fees to the cent: 1.00 + 0.5% of 10.00 (0.05) = 1.05; 8.95 paid out
    assert {w["fee_cents"] for w in mine["withdrawals"]} == {105}
    assert {w["net_cents"] for w in mine["withdrawals"]} == {895}
    small = await ask(999)
    assert small.status_code == 422 and small.json()["error"]["code"] == "withdrawal_below_minimum"

    ids = [w["id"] for w in mine["withdrawals"]]
    for wid in ids[:3]:
        await call(shop, "POST", f"/api/admin/withdrawals/{wid}", "admin-1", "admin",
                   json={"decision": "approve"})  # fmt: skip
    await call(shop, "POST", f"/api/admin/withdrawals/{ids[3]}", "admin-1", "admin",
               json={"decision": "reject", "note": "bank details wrong"})  # fmt: skip
    batch = await call(shop, "POST", "/api/admin/payouts", "admin-1", "admin", expect=201)
    # three withdrawals (8.95 each) and the 10.00 the rejection set free
    assert batch["total_cents"] == 3 * 895 + 1_000
    mine = await call(shop, "GET", "/api/distributors/me/withdrawals", "dist-a", "distributor")
    by_status: dict[str, int] = {}
    for w in mine["withdrawals"]:
        by_status[w["status"]] = by_status.get(w["status"], 0) + 1
    assert by_status == {"paid": 3, "rejected": 1, "requested": 6}
    assert (mine["balance_cents"], mine["reserved_cents"]) == (6_000, 6_000)
    async with resources.pool.acquire() as conn:
        fees = await conn.fetchval(
            """SELECT sum(e.amount_cents) FROM ledger_entries e
               JOIN ledger_accounts a ON a.id = e.account_id AND a.kind = 'withdrawal_fees'"""
        )
    assert fees == 3 * 105


ADMIN_ROUTES = [
    ("GET", "/api/admin/reviews", None),
    ("POST", "/api/admin/reviews/1", {"decision": "approve"}),
    ("PUT", "/api/admin/distributors/1/rates", {"commission_bps": 100}),
    ("GET", "/api/admin/distributors/1/rates", None),
    ("PUT", "/api/admin/products/1/commission", {"commission_bps": 100}),
    ("GET", "/api/admin/tiers", None),
    ("PUT", "/api/admin/tiers", {"tiers": []}),
    ("GET", "/api/admin/withdrawals", None),
    ("POST", "/api/admin/withdrawals/1", {"decision": "approve"}),
    ("GET", "/api/admin/community", None),
    ("GET", "/api/admin/rooms/1/funnel", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
@pytest.mark.parametrize("roles", [(), ("viewer",), ("host",), ("distributor",),
                                   ("viewer", "host", "distributor")])  # fmt: skip
async def test_admin_routes_refuse_every_other_role(
    resources: Resources, method: str, path: str, body: Any, roles: tuple[str, ...]
) -> None:
    shop = Shop(resources)
    who = headers(shop, "someone", *roles) if roles else {}
    response = await shop.http.request(method, path, json=body, headers=who)
    assert response.status_code == (403 if roles else 401), response.text
    admin = await shop.http.request(method, path, json=body, headers=headers(shop, "a", "admin"))
    assert admin.status_code not in (401, 403), admin.text


async def _conversion_room(shop: Shop) -> dict[str, int]:
    """A room where dist-a's three visitors all buy, and dist-b's seven bring one buyer."""
    room, _, drop = await world(shop)
    await distributor(shop, "dist-a")
    await distributor(shop, "dist-b")
    code_a, code_b = await link(shop, "dist-a", room), await link(shop, "dist-b", room)
    for _ in range(6):
        await click(shop, None, code_b)
    await click(shop, "bx", code_b)
    orders = {"bx": await bought(shop, "bx", drop)}
    for buyer in ("a1", "a2", "a3"):
        await click(shop, buyer, code_a)
    for buyer in ("a1", "a2", "a3"):
        orders[buyer] = await bought(shop, buyer, drop)
    return orders


async def test_conversion_far_above_the_rooms_holds_commission_under_review(
    resources: Resources,
) -> None:
    """dist-a: 3 visitors, and after its second sale 2 buyers; the rest of the room: 7 visitors,
    1 buyer. Flagged when buyers × (rest's visitors + 1) > 2 × (rest's buyers + 1) × visitors:
    a1 1 × 8 = 8 ≤ 12, a2 16 > 12, a3 24 > 12; bx (1 of 7, against 0 of 3): 4 ≤ 14."""
    shop = Shop(resources).under(
        review_conversion_factor=2, review_min_visitors=3, review_counts_s=0
    )
    orders = await _conversion_room(shop)
    queue = await call(shop, "GET", "/api/admin/reviews", "admin-1", "admin")
    held = {r["order_id"]: r for r in queue["reviews"]}
    assert set(held) == {str(orders["a2"]), str(orders["a3"])}
    assert all(r["reasons"] == ["conversion"] for r in held.values())
    a3 = held[str(orders["a3"])]["signals"]
    assert (a3["visitors"], a3["room_visitors"], a3["buyers"], a3["room_buyers"]) == (3, 7, 3, 1)


async def test_a_room_is_counted_once_per_interval_not_once_per_payment(
    resources: Resources,
) -> None:
    shop = Shop(resources).under(review_min_visitors=3, review_counts_s=3600)
    orders = await _conversion_room(shop)
    async with resources.pool.acquire() as conn:
        counted = await conn.fetchrow(
            "SELECT r.counted_at, r.visitors, r.buyers FROM review_room_counts r"
            " JOIN order_attributions a ON a.room_id = r.room_id WHERE a.order_id = $1",
            orders["a3"],
        )
    # counted by the first payment (bx's: 7 visitors, its own purchase), then only read
    assert counted is not None and (counted["visitors"], counted["buyers"]) == (7, 1)
