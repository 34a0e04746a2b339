"""The payment state machine through the real routes and the signed webhook: a repeated success
changes nothing, a late failure cannot undo a success, parallel pays charge an order once, and
the database refuses every transition the machine does not have."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from core.resources import Resources
from core.settings import Settings
from storefront import Shop
from tests.storefront.conftest import Auth, Buy, StartDrop
from tests.storefront.payments_fake import HandProvider, deliver, event_body, install


@pytest.fixture
def hand(shop: Shop) -> Iterator[HandProvider]:
    yield from install(shop)


async def _held(buy: Buy, drop_id: str, buyer: str = "bob", quantity: int = 1) -> str:
    response = await buy(drop_id, buyer, quantity)
    assert response.status_code == 201, response.text
    order_id: str = response.json()["order_id"]
    return order_id


async def _pay(client: httpx.AsyncClient, auth: Auth, order_id: str) -> httpx.Response:
    return await client.post(f"/api/orders/{order_id}/pay", headers=auth("bob"))


async def _payments(res: Resources, order_id: str) -> list[dict[str, Any]]:
    async with res.pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT provider_payment_id, status, amount_cents, refunded_cents
               FROM payments WHERE order_id = $1 ORDER BY id""",
            int(order_id),
        )
    return [dict(r) for r in rows]


async def _order(client: httpx.AsyncClient, auth: Auth, order_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/orders/{order_id}", headers=auth("root", "admin"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _paid_by_hand(
    client: httpx.AsyncClient,
    auth: Auth,
    buy: Buy,
    drop_id: str,
    hand: HandProvider,
    secret: str,
    quantity: int = 1,
) -> tuple[str, str]:
    order_id = await _held(buy, drop_id, quantity=quantity)
    started = await _pay(client, auth, order_id)
    assert started.status_code == 200, started.text
    assert started.json()["order_status"] == "held", "the hand provider settles nothing itself"
    payment_id: str = started.json()["payment_id"]
    paid = await deliver(client, secret, event_body(hand, payment_id, "payment.succeeded"))
    assert paid.json()["outcome"] == "paid"
    return order_id, payment_id


async def test_a_second_success_event_for_the_paying_payment_changes_nothing(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    settings: Settings,
    hand: HandProvider,
) -> None:
    drop = await start_drop()
    order_id, payment_id = await _paid_by_hand(client, auth, buy, drop["id"], hand, settings.secret)

    # the same payment's success again, under a new event id
    success = event_body(hand, payment_id, "payment.succeeded")
    again = await deliver(client, settings.secret, success)
    assert again.status_code == 200
    assert again.json() == {"received": True, "duplicate": False, "outcome": "already_settled"}
    assert hand.refunds == [], "nothing goes back to the buyer for news already known"
    order = await _order(client, auth, order_id)
    assert (order["status"], order["refunded_cents"]) == ("paid", 0)

    # the buyer's refund then sends the money back exactly once
    refund = await client.post(f"/api/orders/{order_id}/refund", headers=auth("bob"))
    assert refund.status_code == 200 and refund.json()["status"] == "refunded"
    assert hand.refunds == [(payment_id, order["amount_cents"])]
    assert (await _payments(resources, order_id))[0]["status"] == "refunded"
    again = await client.post(f"/api/orders/{order_id}/refund", headers=auth("root", "admin"))
    assert again.status_code == 409
    assert hand.refunds == [(payment_id, order["amount_cents"])]


async def test_a_late_failure_event_cannot_undo_a_success(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    settings: Settings,
    hand: HandProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    drop = await start_drop(quantity=3, per_buyer_limit=3)
    order_id, payment_id = await _paid_by_hand(
        client, auth, buy, drop["id"], hand, settings.secret, quantity=3
    )

    with caplog.at_level(logging.WARNING, logger="livesell.storefront.billing"):
        failure = event_body(hand, payment_id, "payment.failed")
        late = await deliver(client, settings.secret, failure)
    assert late.status_code == 200
    assert late.json()["outcome"] == "contradicts_final_state"
    assert any(
        payment_id in r.getMessage() and "not applied" in r.getMessage() for r in caplog.records
    ), "the contradiction is reported"
    assert [p["status"] for p in await _payments(resources, order_id)] == ["succeeded"]
    async with resources.pool.acquire() as conn:
        recorded = await conn.fetchval(
            "SELECT outcome FROM payment_events WHERE event_type = 'payment.failed'"
        )
    assert recorded == "contradicts_final_state"

    partial = await client.post(
        f"/api/orders/{order_id}/refund", json={"quantity": 1}, headers=auth("bob")
    )
    assert partial.status_code == 200, partial.text
    unit = partial.json()["refunded_cents"]
    assert hand.refunds == [(payment_id, unit)], "the refund reaches the provider"
    [payment] = await _payments(resources, order_id)
    assert (payment["status"], payment["refunded_cents"]) == ("succeeded", unit)


async def test_a_failure_then_a_success_for_a_failed_payment_is_not_applied(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    settings: Settings,
    hand: HandProvider,
) -> None:
    drop = await start_drop()
    order_id = await _held(buy, drop["id"])
    payment_id = (await _pay(client, auth, order_id)).json()["payment_id"]
    failed = await deliver(client, settings.secret, event_body(hand, payment_id, "payment.failed"))
    assert failed.json()["outcome"] == "failed"
    late = await deliver(client, settings.secret, event_body(hand, payment_id, "payment.succeeded"))
    assert late.json()["outcome"] == "contradicts_final_state"
    assert (await _order(client, auth, order_id))["status"] == "held"

    # a failed attempt is over: the buyer may pay again, with a new payment
    retry = await _pay(client, auth, order_id)
    assert retry.status_code == 200 and retry.json()["payment_id"] != payment_id
    paid = await deliver(
        client, settings.secret, event_body(hand, retry.json()["payment_id"], "payment.succeeded")
    )
    assert paid.json()["outcome"] == "paid"
    assert [p["status"] for p in await _payments(resources, order_id)] == ["failed", "succeeded"]


async def test_parallel_pays_start_one_payment(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    hand: HandProvider,
) -> None:
    drop = await start_drop(quantity=6, per_buyer_limit=6)
    orders = [await _held(buy, drop["id"]) for _ in range(6)]
    answers = await asyncio.gather(
        *(_pay(client, auth, order_id) for order_id in orders for _ in range(50))
    )
    for order_id in orders:
        mine = [a for a in answers if a.json().get("order_id") == order_id]
        assert len(mine) == 50 and {a.status_code for a in mine} == {200}
        assert len({a.json()["payment_id"] for a in mine}) == 1, "every pay gets the same attempt"
        assert len(await _payments(resources, order_id)) == 1
    assert len(hand.started) == 6, "the provider was asked once per order"


async def test_parallel_pays_with_a_provider_that_settles_at_once_charge_once(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=6, per_buyer_limit=6)
    orders = [await _held(buy, drop["id"]) for _ in range(6)]
    answers = await asyncio.gather(
        *(_pay(client, auth, order_id) for order_id in orders for _ in range(50))
    )
    assert {a.status_code for a in answers} <= {200, 409}
    for order_id in orders:
        payments = await _payments(resources, order_id)
        assert [p["status"] for p in payments] == ["succeeded"], payments
        assert (await _order(client, auth, order_id))["status"] == "paid"


async def test_a_provider_that_refuses_to_start_leaves_the_order_payable(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    hand: HandProvider,
) -> None:
    drop = await start_drop()
    order_id = await _held(buy, drop["id"])
    hand.refuse_next_start = True
    refused = await _pay(client, auth, order_id)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "provider_unavailable"
    assert [p["status"] for p in await _payments(resources, order_id)] == ["failed"]
    again = await _pay(client, auth, order_id)
    assert again.status_code == 200
    assert [p["status"] for p in await _payments(resources, order_id)] == ["failed", "pending"]


@pytest.mark.parametrize(
    ("setup", "change"),
    [
        ("succeeded", "status = 'pending'"),
        ("succeeded", "status = 'failed'"),
        ("failed", "status = 'succeeded'"),
        ("refunded", "status = 'succeeded'"),
        ("pending", "status = 'refunded', refunded_cents = amount_cents"),
        ("succeeded", "amount_cents = amount_cents + 1"),
        ("succeeded", "refunded_cents = amount_cents + 1"),
    ],
)
async def test_the_database_refuses_transitions_outside_the_machine(
    start_drop: StartDrop, buy: Buy, resources: Resources, setup: str, change: str
) -> None:
    drop = await start_drop()
    order_id = int(await _held(buy, drop["id"]))
    async with resources.pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO payments (order_id, provider, provider_payment_id, amount_cents)
               SELECT id, 'hand', 'p-1', amount_cents FROM orders WHERE id = $1""",
            order_id,
        )
        steps = {
            "pending": [],
            "succeeded": ["status = 'succeeded', settled_at = now()"],
            "failed": ["status = 'failed', settled_at = now()"],
            "refunded": [
                "status = 'succeeded', settled_at = now()",
                "status = 'refunded', refunded_cents = amount_cents",
            ],
        }[setup]
        for step in steps:
            await conn.execute(f"UPDATE payments SET {step}")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(f"UPDATE payments SET {change}")
        # and one order has one live attempt
        if setup in ("pending", "succeeded"):
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    """INSERT INTO payments (order_id, provider, provider_payment_id, amount_cents)
                       VALUES ($1, 'hand', 'p-2', 1)""",
                    order_id,
                )


async def test_refunds_complete_on_the_providers_signed_refund_event(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    settings: Settings,
    hand: HandProvider,
) -> None:
    drop = await start_drop()
    order_id, payment_id = await _paid_by_hand(client, auth, buy, drop["id"], hand, settings.secret)
    assert (
        await client.post(f"/api/orders/{order_id}/refund", headers=auth("bob"))
    ).status_code == 200
    (request,) = hand.refund_requests
    assert (request.payment_id, request.amount_cents) == (payment_id, 9_900)

    def refund_event(kind: str, cents: int, event_id: str) -> bytes:
        return msgspec.json.encode(
            {
                "id": event_id,
                "provider": "hand",
                "type": kind,
                "created": int(time.time()),
                "data": {
                    "payment_id": payment_id,
                    "order_id": order_id,
                    "amount_cents": cents,
                    "refund_id": request.refund_id,
                },
            }
        )

    wrong = await deliver(client, settings.secret, refund_event("refund.succeeded", 1, "r-0"))
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "payment_mismatch"
    # an order id past 32 bits names no refund of ours either (not a value PostgreSQL refuses)
    far = msgspec.json.decode(refund_event("refund.succeeded", 9_900, "r-far"))
    far["data"]["order_id"] = "657608385424621508"
    far_off = await deliver(client, settings.secret, msgspec.json.encode(far))
    assert far_off.status_code == 422 and far_off.json()["error"]["code"] == "payment_mismatch"
    done = refund_event("refund.succeeded", 9_900, "r-1")
    assert (await deliver(client, settings.secret, done)).json()["outcome"] == "refund_succeeded"
    assert (await deliver(client, settings.secret, done)).json()["duplicate"] is True
    late = await deliver(client, settings.secret, refund_event("refund.failed", 9_900, "r-2"))
    assert late.json()["outcome"] == "contradicts_final_state"
    async with resources.pool.acquire() as conn:
        status = await conn.fetchval("SELECT status FROM payment_refunds")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE payment_refunds SET status = 'requested'")
    assert status == "succeeded"


async def test_the_simulated_provider_completes_refunds_at_once(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop()
    order_id = await _held(buy, drop["id"])
    assert (await _pay(client, auth, order_id)).json()["order_status"] == "paid"
    assert (
        await client.post(f"/api/orders/{order_id}/refund", headers=auth("bob"))
    ).status_code == 200
    async with resources.pool.acquire() as conn:
        rows = await conn.fetch("SELECT status, amount_cents FROM payment_refunds")
    assert [tuple(r) for r in rows] == [("succeeded", 9_900)]


async def test_a_refund_the_provider_did_not_take_stays_requested_under_its_id(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    settings: Settings,
    resources: Resources,
    hand: HandProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    drop = await start_drop()
    order_id, payment_id = await _paid_by_hand(client, auth, buy, drop["id"], hand, settings.secret)
    hand.refuse_next_refund = True
    with caplog.at_level(logging.ERROR, logger="livesell.storefront.refunds"):
        refunded = await client.post(f"/api/orders/{order_id}/refund", headers=auth("bob"))
    # the buyer's refund stands; the money is owed at the provider, under the request's id
    assert refunded.status_code == 200 and refunded.json()["status"] == "refunded"
    assert hand.refund_requests == []
    async with resources.pool.acquire() as conn:
        request = await conn.fetchrow("SELECT refund_id, status, amount_cents FROM payment_refunds")
    assert (request["status"], request["amount_cents"]) == ("requested", 9_900)
    assert any(
        request["refund_id"] in r.getMessage() and payment_id in r.getMessage()
        for r in caplog.records
    )
    assert (await _payments(resources, order_id))[0]["status"] == "refunded"
