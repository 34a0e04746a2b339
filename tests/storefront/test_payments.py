"""Paying, the signed webhook, late payments on expired holds, delivery and refunds."""

from __future__ import annotations

import time
from typing import Any

import httpx
import msgspec
import pytest

from core.resources import Resources
from core.settings import Settings
from storefront import Shop
from storefront.payments import SIGNATURE_HEADER, sign, webhook_key
from storefront.worker import run_expiry
from tests.storefront.conftest import HOST, Auth, Buy, StartDrop, room_events, stock_truth


async def _held_order(buy: Buy, drop_id: str, buyer: str = "bob", quantity: int = 1) -> str:
    response = await buy(drop_id, buyer, quantity)
    assert response.status_code == 201, response.text
    order_id: str = response.json()["order_id"]
    return order_id


async def _payment_for(res: Resources, order_id: str) -> dict[str, Any]:
    """Start a payment the way a real provider integration would: a pending payment row whose
    outcome arrives later through the webhook (the test plays the provider)."""
    async with res.pool.acquire() as conn:
        row = await conn.fetchrow(
            """INSERT INTO payments (order_id, provider, provider_payment_id, amount_cents)
               SELECT id, 'simulated', 'pay-' || id, amount_cents FROM orders WHERE id = $1
               RETURNING provider_payment_id, amount_cents""",
            int(order_id),
        )
    return dict(row)


def _event(order_id: str, payment: dict[str, Any], event_id: str = "evt-1") -> bytes:
    return msgspec.json.encode(
        {
            "id": event_id,
            "provider": "simulated",
            "type": "payment.succeeded",
            "created": int(time.time()),
            "data": {
                "payment_id": payment["provider_payment_id"],
                "order_id": order_id,
                "amount_cents": payment["amount_cents"],
            },
        }
    )


async def _webhook(client: httpx.AsyncClient, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    return await client.post("/api/payments/webhook", content=body, headers=headers)


async def _order(client: httpx.AsyncClient, auth: Auth, order_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/orders/{order_id}", headers=auth("root", "admin"))
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def _webhook_endpoint(client: httpx.AsyncClient, auth: Auth) -> str:
    """An outbound webhook endpoint for the order events (nothing listens: the outbox is read)."""
    response = await client.post(
        "/api/admin/webhooks",
        json={"url": "http://127.0.0.1:9/hooks", "events": ["order.paid", "order.refunded"]},
        headers=auth("root", "admin"),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _outbound(client: httpx.AsyncClient, auth: Auth, endpoint: str) -> list[tuple[str, str]]:
    """The outbound deliveries written for `endpoint`: (event, order id), oldest first."""
    response = await client.get(
        f"/api/admin/webhooks/{endpoint}/deliveries", headers=auth("root", "admin")
    )
    return [(d["event"], d["payload"]["order_id"]) for d in reversed(response.json()["deliveries"])]


async def test_pay_marks_paid_and_the_room_sees_a_masked_ticker(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=3)
    order_id = await _held_order(buy, drop["id"], buyer="alice", quantity=2)
    paid = await client.post(f"/api/orders/{order_id}/pay", headers=auth("alice", "viewer"))
    assert paid.status_code == 200, paid.text
    assert paid.json()["order_status"] == "paid"
    order = await _order(client, auth, order_id)
    assert order["status"] == "paid" and order["paid_at"]
    truth = await stock_truth(resources, drop["id"])
    assert (truth["sold"], truth["held"]) == (2, 0)

    events = await room_events(resources, drop["room_id"])
    ticker = [e for e in events if e["type"] == "order.placed"]
    assert ticker == [
        {
            "type": "order.placed",
            "drop_id": drop["id"],
            "product_id": drop["product_id"],
            "buyer": "a***e",
            "quantity": 2,
            "placed_at": ticker[0]["placed_at"],
        }
    ]
    again = await client.post(f"/api/orders/{order_id}/pay", headers=auth("alice", "viewer"))
    assert again.status_code == 409 and again.json()["error"]["status"] == "paid"


async def test_only_the_buyer_pays_and_sees_the_order(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy
) -> None:
    drop = await start_drop()
    order_id = await _held_order(buy, drop["id"], buyer="bob")
    for who in (auth("mallory", "viewer"), auth(HOST, "host")):
        assert (await client.get(f"/api/orders/{order_id}", headers=who)).status_code == 404
        assert (await client.post(f"/api/orders/{order_id}/pay", headers=who)).status_code == 404
    assert (await client.get("/api/orders/424242", headers=auth("bob"))).status_code == 404
    assert (await client.get(f"/api/orders/{order_id}")).status_code == 401


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "missing"),
        ("t=1,v1=abc", "stale"),
        ("garbage", "malformed"),
        ("wrong-key", "mismatch"),
        ("tampered", "mismatch"),
    ],
)
async def test_unsigned_or_wrongly_signed_webhooks_are_rejected(
    client: httpx.AsyncClient,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    settings: Settings,
    signature: str | None,
    reason: str,
) -> None:
    drop = await start_drop()
    order_id = await _held_order(buy, drop["id"])
    body = _event(order_id, await _payment_for(resources, order_id))
    if signature == "wrong-key":
        signature = sign(webhook_key("another secret"), body)
    elif signature == "tampered":
        signature = sign(webhook_key(settings.secret), body.replace(b"evt-1", b"evt-2"))
    response = await _webhook(client, body, signature)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert response.json()["error"]["reason"] == reason
    async with resources.pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM orders") == "held"
        assert await conn.fetchval("SELECT count(*) FROM payment_events") == 0


async def test_webhook_is_idempotent_by_event_id(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    settings: Settings,
) -> None:
    drop = await start_drop()
    order_id = await _held_order(buy, drop["id"])
    body = _event(order_id, await _payment_for(resources, order_id))
    key = webhook_key(settings.secret)
    first = await _webhook(client, body, sign(key, body))
    assert first.status_code == 200 and first.json() == {
        "received": True,
        "duplicate": False,
        "outcome": "paid",
    }
    replay = await _webhook(client, body, sign(key, body))
    assert replay.json() == {"received": True, "duplicate": True, "outcome": "paid"}
    events = await room_events(resources, drop["room_id"])
    assert sum(e["type"] == "order.placed" for e in events) == 1
    assert (await _order(client, auth, order_id))["status"] == "paid"


async def test_webhook_amount_mismatch_is_refused(
    client: httpx.AsyncClient,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    settings: Settings,
) -> None:
    drop = await start_drop()
    order_id = await _held_order(buy, drop["id"])
    payment = await _payment_for(resources, order_id)
    body = _event(order_id, {**payment, "amount_cents": 1})
    response = await _webhook(client, body, sign(webhook_key(settings.secret), body))
    assert response.status_code == 422
    async with resources.pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM orders") == "held"


async def _expire(shop: Shop, order_id: str) -> None:
    async with shop.res.pool.acquire() as conn:
        await conn.execute(
            "UPDATE orders SET hold_expires_at = now() - interval '1 second' WHERE id = $1",
            int(order_id),
        )
    await run_expiry(shop)


async def test_late_payment_reclaims_a_free_unit(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    settings: Settings,
    shop: Shop,
) -> None:
    endpoint = await _webhook_endpoint(client, auth)
    drop = await start_drop(quantity=2)
    order_id = await _held_order(buy, drop["id"])
    payment = await _payment_for(resources, order_id)
    await _expire(shop, order_id)
    assert (await _order(client, auth, order_id))["status"] == "expired"

    body = _event(order_id, payment)
    response = await _webhook(client, body, sign(webhook_key(settings.secret), body))
    assert response.json()["outcome"] == "paid_after_expiry"
    order = await _order(client, auth, order_id)
    assert order["status"] == "paid"
    truth = await stock_truth(resources, drop["id"])
    assert (truth["sold"], truth["held"]) == (1, 0)
    # the gate knows: one unit left, not two
    assert (await buy(drop["id"], "carol", 2)).json()["error"]["code"] == "sold_out"
    assert (await buy(drop["id"], "carol", 1)).status_code == 201
    assert await _outbound(client, auth, endpoint) == [("order.paid", order_id)]


async def test_late_payment_with_no_stock_left_is_refunded(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    settings: Settings,
    shop: Shop,
) -> None:
    endpoint = await _webhook_endpoint(client, auth)
    drop = await start_drop(quantity=1)
    order_id = await _held_order(buy, drop["id"])
    payment = await _payment_for(resources, order_id)
    await _expire(shop, order_id)
    assert (await buy(drop["id"], "carol")).status_code == 201, "the unit went to someone else"

    body = _event(order_id, payment)
    response = await _webhook(client, body, sign(webhook_key(settings.secret), body))
    assert response.json()["outcome"] == "refunded_no_stock"
    order = await _order(client, auth, order_id)
    assert order["status"] == "refunded"
    assert order["refunded_cents"] == order["amount_cents"]
    assert "no stock" in order["refund_reason"]
    truth = await stock_truth(resources, drop["id"])
    assert (truth["held"], truth["sold"]) == (1, 0), "carol keeps her unit; nothing oversold"
    # expired straight to refunded: the app hears of the refund, of no payment kept
    assert await _outbound(client, auth, endpoint) == [("order.refunded", order_id)]


async def test_expiry_returns_stock_and_viewers_see_it(
    client: httpx.AsyncClient, start_drop: StartDrop, buy: Buy, resources: Resources, shop: Shop
) -> None:
    drop = await start_drop(quantity=2, per_buyer_limit=2)
    order_id = await _held_order(buy, drop["id"], quantity=2)
    assert (await buy(drop["id"], "carol")).json()["error"]["code"] == "sold_out"
    events = await room_events(resources, drop["room_id"])
    assert any(e["type"] == "drop.sold_out" for e in events)

    await _expire(shop, order_id)
    events = await room_events(resources, drop["room_id"])
    last_stock = [e for e in events if e["type"] == "stock.changed"][-1]
    assert last_stock == {
        "type": "stock.changed",
        "drop_id": drop["id"],
        "quantity": 2,
        "remaining": 2,
        "sold": 0,
        "held": 0,
    }
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (view["status"], view["remaining"]) == ("live", 2)
    assert (await buy(drop["id"], "carol", 2)).status_code == 201
    # the expired buyer's quota was returned too
    assert (await buy(drop["id"], "bob")).json()["error"]["code"] == "sold_out"


async def _paid_order(
    client: httpx.AsyncClient, auth: Auth, buy: Buy, drop_id: str, quantity: int = 1
) -> str:
    order_id = await _held_order(buy, drop_id, quantity=quantity)
    paid = await client.post(f"/api/orders/{order_id}/pay", headers=auth("bob"))
    assert paid.json()["order_status"] == "paid"
    return order_id


async def test_deliver_then_refund_within_and_after_the_window(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=4, per_buyer_limit=4)
    order_id = await _paid_order(client, auth, buy, drop["id"], quantity=3)
    # only the room's host (or an admin) delivers
    other_host = await client.post(f"/api/orders/{order_id}/deliver", headers=auth("zed", "host"))
    assert other_host.status_code == 403
    delivered = await client.post(f"/api/orders/{order_id}/deliver", headers=auth(HOST, "host"))
    assert delivered.status_code == 200 and delivered.json()["status"] == "delivered"
    assert delivered.json()["return_window_ends_at"]

    partial = await client.post(
        f"/api/orders/{order_id}/refund", json={"quantity": 1}, headers=auth("bob")
    )
    assert partial.status_code == 200, partial.text
    assert partial.json()["status"] == "delivered"
    assert (partial.json()["refunded_units"], partial.json()["refunded_cents"]) == (1, 9_900)
    # the refunded unit is back on sale while the drop is live
    truth = await stock_truth(resources, drop["id"])
    assert (truth["sold"], truth["held"]) == (2, 0)
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert view["remaining"] == 2

    too_many = await client.post(
        f"/api/orders/{order_id}/refund", json={"quantity": 3}, headers=auth("bob")
    )
    assert too_many.status_code == 422 and too_many.json()["error"]["refundable_units"] == 2

    async with resources.pool.acquire() as conn:
        await conn.execute(
            """UPDATE orders SET delivered_at = delivered_at - interval '8 days',
                                 return_window_ends_at = return_window_ends_at - interval '8 days'
               WHERE id = $1""",
            int(order_id),
        )
    late = await client.post(f"/api/orders/{order_id}/refund", headers=auth("bob"))
    assert late.status_code == 409 and late.json()["error"]["code"] == "return_window_closed"
    by_admin = await client.post(f"/api/orders/{order_id}/refund", headers=auth("root", "admin"))
    assert by_admin.status_code == 200 and by_admin.json()["status"] == "refunded"
    assert by_admin.json()["refunded_cents"] == by_admin.json()["amount_cents"]
    again = await client.post(f"/api/orders/{order_id}/refund", headers=auth("root", "admin"))
    assert again.status_code == 409


async def test_refund_of_a_held_order_and_by_a_stranger_is_refused(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy
) -> None:
    drop = await start_drop()
    order_id = await _held_order(buy, drop["id"])
    held = await client.post(f"/api/orders/{order_id}/refund", headers=auth("bob"))
    assert held.status_code == 409 and held.json()["error"]["status"] == "held"
    stranger = await client.post(f"/api/orders/{order_id}/refund", headers=auth("mallory"))
    assert stranger.status_code == 404
    deliver_held = await client.post(f"/api/orders/{order_id}/deliver", headers=auth(HOST, "host"))
    assert deliver_held.status_code == 409
