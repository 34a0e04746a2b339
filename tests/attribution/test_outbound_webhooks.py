"""Outbound webhooks for an order's and a distributor's money facts, each driven over HTTP (the
worker's steps called as the worker calls them) and received, signed, by a real local HTTP
endpoint: `order.paid`, `order.refunded` (one per refund), `order.delivered`,
`commission.confirmed`, `withdrawal.paid`. Each delivery row is written in the fact's own
transaction (there before any worker runs; none for a refused change), and a delivery the app
refuses is retried with backoff until it is delivered."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import attribution
from core import webhooks
from core.resources import Resources
from tests.attribution.conftest import People
from tests.attribution.shop import HOST, Shop
from tests.attribution.webhook_receiver import Receiver, signed_events

ADMIN = ("admin-1", "admin")


async def _endpoint(shop: Shop, url: str, *events: str) -> dict[str, Any]:
    hook: dict[str, Any] = await shop._call(
        "POST", "/api/admin/webhooks", *ADMIN, json={"url": url, "events": list(events)}
    )
    return hook


async def _deliveries(shop: Shop, hook: dict[str, Any]) -> list[dict[str, Any]]:
    listed = await shop._call("GET", f"/api/admin/webhooks/{hook['id']}/deliveries", *ADMIN)
    return list(reversed(listed["deliveries"]))  # oldest first


async def test_order_paid_is_written_with_the_payment_and_delivered_signed(
    shop: Shop, resources: Resources
) -> None:
    receiver = Receiver([])
    async with receiver as url:
        hook = await _endpoint(shop, url, "order.paid")
        room = await shop.room()
        drop = await shop.drop(room, await shop.product(price_cents=2_500, commission_bps=0))
        body = {"title": "¥5 off", "amount_off_cents": 500, "quantity": 5,
                "claim_duration_s": 600, "valid_s": 3600}  # fmt: skip
        coupon = await shop._call("POST", f"/api/rooms/{room}/coupons", HOST, "host", json=body)
        claimed = await shop.http.post(
            f"/api/coupons/{coupon['id']}/claim",
            headers={**shop._as("ann", "viewer"), "Idempotency-Key": uuid.uuid4().hex},
        )
        claim = claimed.json()["claim_id"]
        await shop.storefront.settled()
        held = await shop.http.post(
            f"/api/drops/{drop}/buy", json={"quantity": 1, "coupon_claim_id": claim},
            headers={**shop._as("ann", "viewer"), "Idempotency-Key": uuid.uuid4().hex},
        )  # fmt: skip
        order = int(held.json()["order_id"])
        assert await _deliveries(shop, hook) == [], "a held order is not paid"
        await shop.pay(order)
        # durable before any worker runs: the row came with the payment's commit
        [pending] = await _deliveries(shop, hook)
        assert (pending["event"], pending["status"]) == ("order.paid", "pending")
        assert await webhooks.deliver_due(resources) == 1
        assert await webhooks.deliver_due(resources) == 0, "delivered once"

    [event] = signed_events(receiver, hook["secret"])
    assert (event["type"], event["id"]) == ("order.paid", f"order.paid:{order}")
    data = event["data"]
    assert data["order_id"] == str(order) and data["buyer_id"] == "ann"
    assert (data["amount_cents"], data["discount_cents"], data["unit_price_cents"]) == (
        2_000,
        500,
        2_500,
    )
    assert data["coupon_claim_id"] == claim and data["status"] == "paid"
    assert data["paid_at"] is not None


async def test_order_refunded_once_per_refund_and_never_for_a_refused_one(
    shop: Shop, resources: Resources
) -> None:
    receiver = Receiver([])
    async with receiver as url:
        hook = await _endpoint(shop, url, "order.refunded")
        room = await shop.room()
        drop = await shop.drop(room, await shop.product(price_cents=1_000, commission_bps=0))
        order = await shop.buy("ann", drop, 3)
        await shop._call("POST", f"/api/orders/{order}/refund", "ann", "viewer",
                         json={"quantity": 1})  # fmt: skip
        too_many = await shop.http.post(
            f"/api/orders/{order}/refund", json={"quantity": 3}, headers=shop._as("ann")
        )
        assert too_many.json()["error"]["code"] == "refund_too_large"
        await shop._call("POST", f"/api/orders/{order}/refund", "ann", "viewer", json={})
        assert [d["event"] for d in await _deliveries(shop, hook)] == ["order.refunded"] * 2
        assert await webhooks.deliver_due(resources) == 2

    first, last = signed_events(receiver, hook["secret"])
    assert first["id"] != last["id"]
    got = [
        (e["data"]["refund_units"], e["data"]["refund_cents"], e["data"]["refunded_units"],
         e["data"]["refunded_cents"], e["data"]["status"])
        for e in (first, last)
    ]  # fmt: skip
    assert got == [(1, 1_000, 1, 1_000, "paid"), (2, 2_000, 3, 3_000, "refunded")]
    assert first["data"]["reason"] == "buyer request"


async def test_order_delivered_carries_the_return_window(shop: Shop, resources: Resources) -> None:
    receiver = Receiver([])
    async with receiver as url:
        hook = await _endpoint(shop, url, "order.delivered", "order.paid")
        room = await shop.room()
        drop = await shop.drop(room, await shop.product(price_cents=1_000, commission_bps=0))
        order = await shop.buy("ann", drop)
        await shop._call("POST", f"/api/orders/{order}/deliver", HOST, "host")
        again = await shop.http.post(f"/api/orders/{order}/deliver", headers=shop._as(HOST, "host"))
        assert again.status_code == 409, "delivered once"
        assert await webhooks.deliver_due(resources) == 2

    paid, delivered = signed_events(receiver, hook["secret"])
    assert (paid["type"], delivered["type"]) == ("order.paid", "order.delivered")
    assert delivered["id"] == f"order.delivered:{order}"
    data = delivered["data"]
    assert data["status"] == "delivered" and data["delivered_at"] is not None
    order_view = await shop._call("GET", f"/api/orders/{order}", *ADMIN)
    assert data["return_window_ends_at"] == order_view["return_window_ends_at"]


async def test_commission_confirmed_when_the_return_window_ends(
    shop: Shop, people: People, resources: Resources
) -> None:
    receiver = Receiver([])
    async with receiver as url:
        hook = await _endpoint(shop, url, "commission.confirmed")
        room = await shop.room()
        drop = await shop.drop(room, await shop.product(price_cents=3_000, commission_bps=1_000))
        await people.distributor("dana")
        await people.click("ann", await people.link("dana", room))
        order = await shop.buy("ann", drop)
        await shop.deliver(order)
        await attribution.settle(resources)
        assert await _deliveries(shop, hook) == [], "inside the return window: pending"
        await shop.window_passes(order)
        assert await attribution.settle(resources) == 1
        assert await attribution.settle(resources) == 0
        assert await webhooks.deliver_due(resources) == 1

    [event] = signed_events(receiver, hook["secret"])
    assert event["id"] == f"commission.confirmed:{order}"
    data = event["data"]
    assert (data["order_id"], data["distributor_user_id"], data["commission_cents"]) == (
        str(order),
        "dana",
        300,
    )
    assert data["room_id"] == str(room)


async def test_withdrawal_paid_in_the_payout_batch(resources: Resources, people: People) -> None:
    shop = Shop(resources).under(
        withdrawal_min_cents=1_000, withdrawal_fee_cents=100, withdrawal_fee_bps=0
    )
    receiver = Receiver([])
    async with receiver as url:
        hook = await _endpoint(shop, url, "withdrawal.paid")
        room = await shop.room()
        drop = await shop.drop(room, await shop.product(price_cents=100_000, commission_bps=1_000))
        distributor = await people.distributor("dana")
        await people.click("ann", await people.link("dana", room))
        order = await shop.buy("ann", drop)
        await shop.deliver_past_window(order)
        await attribution.settle(resources)
        asked = await shop._call("POST", "/api/distributors/me/withdrawals", "dana",
                                 "distributor", json={"amount_cents": 5_000})  # fmt: skip
        await shop._call("POST", f"/api/admin/withdrawals/{asked['id']}", *ADMIN,
                         json={"decision": "approve"})  # fmt: skip
        assert await _deliveries(shop, hook) == [], "approved is not paid"
        batch = await shop._call("POST", "/api/admin/payouts", *ADMIN)
        assert await webhooks.deliver_due(resources) == 1

    [event] = signed_events(receiver, hook["secret"])
    assert event["id"] == f"withdrawal.paid:{asked['id']}"
    data = event["data"]
    assert (data["amount_cents"], data["fee_cents"], data["net_cents"]) == (5_000, 100, 4_900)
    assert data["payout_batch_id"] == batch["id"] and data["paid_at"] is not None
    assert (data["distributor_id"], data["distributor_user_id"]) == (distributor, "dana")


async def test_a_refused_delivery_is_retried_with_backoff_until_delivered(
    shop: Shop, resources: Resources
) -> None:
    receiver = Receiver([500, 503])
    async with receiver as url:
        hook = await _endpoint(shop, url, "order.paid")
        room = await shop.room()
        drop = await shop.drop(room, await shop.product(price_cents=1_000, commission_bps=0))
        order = await shop.buy("ann", drop)
        waits = []
        for attempt in (1, 2):
            assert await webhooks.deliver_due(resources) == 0, f"answered 5xx at {attempt}"
            assert await webhooks.deliver_due(resources) == 0, "not due again yet"
            async with resources.pool.acquire() as conn:
                waits.append(
                    await conn.fetchval(
                        "SELECT next_attempt_at - last_attempt FROM webhook_deliveries, "
                        "LATERAL (SELECT now() AS last_attempt) t"
                    )
                )
                # the backoff passes (only time is simulated)
                await conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
        [pending] = await _deliveries(shop, hook)
        assert (pending["status"], pending["attempts"], pending["last_status"]) == (
            "pending",
            2,
            503,
        )
        assert await webhooks.deliver_due(resources) == 1

    assert len(receiver.received) == 3
    assert len({body for _, body in receiver.received}) == 1, "the same event each time"
    [delivered] = await _deliveries(shop, hook)
    assert (delivered["status"], delivered["attempts"]) == ("delivered", 3)
    assert signed_events(receiver, hook["secret"])[0]["id"] == f"order.paid:{order}"
    # 10 s after the first refusal, 20 s after the second (less the moments the test took)
    assert timedelta(seconds=9) < waits[0] <= timedelta(seconds=10)
    assert timedelta(seconds=19) < waits[1] <= timedelta(seconds=20)
