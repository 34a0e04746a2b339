"""Stripe through the official SDK against a local Stripe (tests/storefront/fake_stripe.py): a
PaymentIntent per payment, webhook events verified by the SDK, refunds sent under livesell's
refund id and completed by Stripe's event; replays, duplicates, out-of-order events and bad
signatures change nothing, and the money agrees everywhere after every step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from core.resources import Resources
from storefront.payments import ProviderRefund
from tests.attribution.conftest import People
from tests.conftest import Servers
from tests.storefront.conftest import Auth, Buy, StartDrop
from tests.storefront.fake_stripe import PUBLISHABLE_KEY, SECRET_KEY, Delivery, FakeStripe
from tests.storefront.provider_app import (
    ProviderApp,
    money_is_straight,
    provider_client,
    provider_settings,
)

WEBHOOK = "/api/payments/stripe/webhook"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStripe]:
    stripe = FakeStripe()
    stripe.start()
    yield stripe
    stripe.stop()


@pytest.fixture
async def paying(
    servers: Servers, resources: Resources, fake: FakeStripe
) -> AsyncIterator[ProviderApp]:
    # the steps of docs/payments.md, "Stripe", with the fake's address as the API base
    fake.reset()
    settings = provider_settings(
        servers,
        LIVESELL_PAYMENTS="stripe",
        LIVESELL_STRIPE_SECRET_KEY=SECRET_KEY,
        LIVESELL_STRIPE_WEBHOOK_SECRET=fake.webhook_secret,
        LIVESELL_STRIPE_PUBLISHABLE_KEY=PUBLISHABLE_KEY,
        LIVESELL_STRIPE_API_BASE=fake.api_base,
    )
    async with provider_client(resources, settings) as opened:
        yield opened


async def _deliver(http: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
    return await http.post(WEBHOOK, content=delivery.body, headers=delivery.headers)


async def _order(http: httpx.AsyncClient, auth: Auth, order_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (
        await http.get(f"/api/orders/{order_id}", headers=auth("root", "admin"))
    ).json()
    return body


async def _paid_order(
    paying: ProviderApp, fake: FakeStripe, auth: Auth, buy: Buy, drop: str
) -> tuple[str, dict[str, Any]]:
    http = paying.http
    order_id = (await buy(drop, "bob")).json()["order_id"]
    started = await http.post(f"/api/orders/{order_id}/pay", headers=auth("bob"))
    assert started.status_code == 200, started.text
    paid = await _deliver(http, fake.confirm(_intent_of(fake, started.json())["id"]))
    assert paid.json()["outcome"] == "paid", paid.text
    return order_id, started.json()


def _intent_of(fake: FakeStripe, started: dict[str, Any]) -> dict[str, Any]:
    return next(i for i in fake.intents.values() if i["client_secret"] == started["client_secret"])


async def test_first_paid_order_and_refund_round_trip(
    paying: ProviderApp,
    fake: FakeStripe,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
) -> None:
    res, http = paying.res, paying.http
    drop = await start_drop()
    order_id = (await buy(drop["id"], "bob")).json()["order_id"]

    started = await http.post(f"/api/orders/{order_id}/pay", headers=auth("bob"))
    assert started.status_code == 200, started.text
    body = started.json()
    assert (body["provider"], body["flow"], body["order_status"]) == ("stripe", "stripe", "held")
    assert body["publishable_key"] == PUBLISHABLE_KEY
    intent = _intent_of(fake, body)
    assert intent["metadata"] == {"livesell_payment_id": body["payment_id"], "order_id": order_id}
    assert intent["amount"] == 9_900

    again = await http.post(f"/api/orders/{order_id}/pay", headers=auth("bob"))
    assert again.json()["client_secret"] == body["client_secret"], "the same PaymentIntent"
    assert len(fake.intents) == 1

    # a declined card leaves the PaymentIntent open: nothing changes, the buyer tries again
    declined = await _deliver(http, fake.decline(intent["id"]))
    assert declined.json()["outcome"] == "ignored"
    assert (await _order(http, auth, order_id))["status"] == "held"

    paid = fake.confirm(intent["id"])
    assert (await _deliver(http, paid)).json()["outcome"] == "paid"
    replay = await _deliver(http, paid)
    assert replay.json() == {"received": True, "duplicate": True, "outcome": "paid"}
    # an older decline delivered late cannot undo the success; a cancel contradicts it
    assert (await _deliver(http, fake.decline(intent["id"]))).json()["outcome"] == "ignored"
    late_cancel = await _deliver(
        http, fake.event("payment_intent.canceled", {**intent, "status": "canceled"})
    )
    assert late_cancel.json()["outcome"] == "contradicts_final_state"
    assert (await _order(http, auth, order_id))["status"] == "paid"
    await money_is_straight(res, fake.refunded_cents())

    refund = await http.post(f"/api/orders/{order_id}/refund", headers=auth("bob"))
    assert refund.status_code == 200 and refund.json()["status"] == "refunded"
    (stripe_refund,) = fake.refunds.values()
    assert (stripe_refund["payment_intent"], stripe_refund["amount"]) == (intent["id"], 9_900)
    async with res.pool.acquire() as conn:
        request = await conn.fetchrow("SELECT * FROM payment_refunds")
    assert request["status"] == "requested"
    assert stripe_refund["metadata"]["livesell_refund_id"] == request["refund_id"]
    await money_is_straight(res, fake.refunded_cents())

    # Stripe's refund.updated events: one still pending (ignored), then the final one, twice
    assert (await _deliver(http, fake.event("refund.updated", dict(stripe_refund)))).json()[
        "outcome"
    ] == "ignored"
    done = fake.settle_refund(stripe_refund["id"])
    assert (await _deliver(http, done)).json()["outcome"] == "refund_succeeded"
    assert (await _deliver(http, done)).json()["duplicate"] is True
    failed_late = await _deliver(http, fake.settle_refund(stripe_refund["id"], "failed"))
    assert failed_late.json()["outcome"] == "contradicts_final_state"
    async with res.pool.acquire() as conn:
        request = await conn.fetchrow("SELECT * FROM payment_refunds")
    assert (request["status"], request["provider_refund_id"]) == ("succeeded", stripe_refund["id"])
    await money_is_straight(res, fake.refunded_cents())


async def test_a_refund_sent_twice_returns_the_money_once(
    paying: ProviderApp,
    fake: FakeStripe,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
) -> None:
    res, http = paying.res, paying.http
    drop = await start_drop()
    order_id, _ = await _paid_order(paying, fake, auth, buy, drop["id"])
    before = fake.refunded_cents()
    refund = await http.post(
        f"/api/orders/{order_id}/refund", json={"quantity": 1}, headers=auth("bob")
    )
    assert refund.status_code == 200
    # an operator sending the same request again (its refund id is the idempotency key)
    async with res.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT r.refund_id, r.amount_cents, p.provider_payment_id, p.provider_reference,
                      p.order_id, p.amount_cents AS total
               FROM payment_refunds r JOIN payments p ON p.id = r.payment_id"""
        )
    assert paying.shop.payments is not None
    await paying.shop.payments.refund(
        ProviderRefund(
            refund_id=row["refund_id"],
            provider="stripe",
            payment_id=row["provider_payment_id"],
            reference=row["provider_reference"],
            order_id=row["order_id"],
            amount_cents=row["amount_cents"],
            payment_amount_cents=row["total"],
        )
    )
    assert fake.refunded_cents() - before == 9_900 and len(fake.refunds) == 1
    await money_is_straight(res, fake.refunded_cents())


async def test_bad_stale_and_missing_signatures_are_refused(
    paying: ProviderApp,
    fake: FakeStripe,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
) -> None:
    res, http = paying.res, paying.http
    drop = await start_drop()
    order_id = (await buy(drop["id"], "bob")).json()["order_id"]
    started = (await http.post(f"/api/orders/{order_id}/pay", headers=auth("bob"))).json()
    intent = _intent_of(fake, started)

    forged = fake.confirm(intent["id"], secret="whsec_not_the_endpoints")
    stale = fake.confirm(intent["id"], at=1_000_000)
    tampered = fake.confirm(intent["id"])
    tampered.body = tampered.body.replace(b'"amount": 9900', b'"amount": 1')
    unsigned = Delivery({"Content-Type": "application/json"}, fake.confirm(intent["id"]).body)
    for delivery, reason in (
        (forged, "mismatch"),
        (stale, "stale"),
        (tampered, "mismatch"),
        (unsigned, "missing"),
    ):
        refused = await _deliver(http, delivery)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "invalid_signature"
        assert refused.json()["error"]["reason"] == reason
    assert (await _order(http, auth, order_id))["status"] == "held"
    async with res.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM payment_events") == 0


async def test_duplicate_deliveries_at_once_settle_once(
    paying: ProviderApp,
    fake: FakeStripe,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
) -> None:
    res, http = paying.res, paying.http
    drop = await start_drop()
    order_id = (await buy(drop["id"], "bob")).json()["order_id"]
    started = (await http.post(f"/api/orders/{order_id}/pay", headers=auth("bob"))).json()
    paid = fake.confirm(_intent_of(fake, started)["id"])
    answers = await asyncio.gather(*(_deliver(http, paid) for _ in range(8)))
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 7
    assert (await _order(http, auth, order_id))["status"] == "paid"
    await money_is_straight(res, fake.refunded_cents())


async def test_the_route_of_a_provider_not_configured_is_not_found(
    client: httpx.AsyncClient, fake: FakeStripe
) -> None:
    # unsigned: refused for that before anything else
    unsigned = await client.post(WEBHOOK, json={"id": "evt_x"})
    assert unsigned.status_code == 400 and unsigned.json()["error"]["reason"] == "missing"
    refused = await _deliver(client, fake.event("payment_intent.succeeded", {"id": "pi_x"}))
    assert refused.status_code == 404 and refused.json()["error"]["code"] == (
        "provider_not_configured"
    )


async def test_the_viewer_page_may_load_stripe_js_only_when_stripe_takes_payments(
    paying: ProviderApp, client: httpx.AsyncClient, room_id: int
) -> None:
    page = await paying.http.get(f"/r/{room_id}")
    assert page.status_code == 200
    with_stripe = page.headers["Content-Security-Policy"]
    assert "script-src 'self' https://js.stripe.com;" in with_stripe
    assert "connect-src 'self' https://api.stripe.com" in with_stripe
    assert "frame-src https://js.stripe.com" in with_stripe
    without = await client.get(f"/r/{room_id}")
    assert without.status_code == 200
    assert "stripe.com" not in without.headers["Content-Security-Policy"]


async def test_news_out_of_order_keeps_money_commission_and_states_straight(
    paying: ProviderApp,
    fake: FakeStripe,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    room_id: int,
) -> None:
    """A distributor's buyer pays for two units and returns them one at a time; Stripe's events
    arrive late, twice and in the wrong order, and after every step the money, the commission
    and the payment state machine agree."""
    res, http = paying.res, paying.http
    people = People(http, auth)
    await people.distributor("dana")
    await people.enter("bob", room_id, await people.link("dana", room_id))
    drop = await start_drop()
    order_id = (await buy(drop["id"], "bob", 2)).json()["order_id"]
    started = (await http.post(f"/api/orders/{order_id}/pay", headers=auth("bob"))).json()
    intent = _intent_of(fake, started)
    paid = fake.confirm(intent["id"])
    assert (await _deliver(http, paid)).json()["outcome"] == "paid"
    assert (await people.dashboard("dana"))["commission_cents"]["pending"] == 2_970
    await money_is_straight(res, fake.refunded_cents())

    for _ in range(2):
        refund = await http.post(
            f"/api/orders/{order_id}/refund", json={"quantity": 1}, headers=auth("bob")
        )
        assert refund.status_code == 200, refund.text
        await money_is_straight(res, fake.refunded_cents())
    first, second = fake.refunds  # in the order livesell asked for them
    assert fake.refunded_cents() == 19_800
    assert (await _order(http, auth, order_id))["status"] == "refunded"
    assert (await people.dashboard("dana"))["commission_cents"]["pending"] == 0

    # the second refund's event first, then the first's (twice at once), then the payment's
    # events again: each settles once, and nothing moves backwards
    assert (await _deliver(http, fake.settle_refund(second))).json()["outcome"] == (
        "refund_succeeded"
    )
    await money_is_straight(res, fake.refunded_cents())
    done = fake.settle_refund(first)
    answers = await asyncio.gather(_deliver(http, done), _deliver(http, done))
    assert sorted(a.json()["duplicate"] for a in answers) == [False, True]
    assert {a.json()["outcome"] for a in answers} == {"refund_succeeded"}
    await money_is_straight(res, fake.refunded_cents())
    assert (await _deliver(http, paid)).json()["duplicate"] is True
    assert (await _deliver(http, fake.confirm(intent["id"]))).json()["outcome"] == (
        "already_settled"
    )
    canceled = await _deliver(http, fake.cancel(intent["id"]))
    assert canceled.json()["outcome"] == "contradicts_final_state"
    failed = await _deliver(http, fake.settle_refund(first, "failed"))
    assert failed.json()["outcome"] == "contradicts_final_state"
    async with res.pool.acquire() as conn:
        states = await conn.fetch(
            "SELECT p.status, r.status AS refund FROM payments p JOIN payment_refunds r"
            " ON r.payment_id = p.id"
        )
    assert [tuple(s) for s in states] == [("refunded", "succeeded")] * 2
    assert (await _order(http, auth, order_id))["status"] == "refunded"
    assert (await people.dashboard("dana"))["commission_cents"]["pending"] == 0
    await money_is_straight(res, fake.refunded_cents())
