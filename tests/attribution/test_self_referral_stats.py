"""Dashboards, room leaderboards and the operator's community analytics agree on what a
self-referral is: an order matched on account, device or payment instrument counts in none of
their orders and GMV, however late the match was found."""

from __future__ import annotations

import time

import msgspec

from core.resources import Resources
from storefront.payments import SIGNATURE_HEADER, sign, webhook_key
from tests.attribution.shop import Shop
from tests.attribution.test_integrity import buy, call, click, distributor, link, world
from tests.storefront.payments_fake import HandProvider


async def _pay_with(shop: Shop, provider: HandProvider, order: int, buyer: str,
                    fingerprint: str) -> None:  # fmt: skip
    """The buyer pays; the provider's signed webhook names the instrument's fingerprint."""
    await call(shop, "POST", f"/api/orders/{order}/pay", buyer, "viewer", expect=200)
    payment_id, checkout = provider.started[-1]
    body = msgspec.json.encode({
        "id": f"evt-{order}", "provider": provider.name, "type": "payment.succeeded",
        "created": int(time.time()),
        "data": {"payment_id": payment_id, "order_id": str(order),
                 "amount_cents": checkout.amount_cents, "fingerprint": fingerprint},
    })  # fmt: skip
    response = await shop.http.post(
        "/api/payments/webhook", content=body,
        headers={"Content-Type": "application/json",
                 SIGNATURE_HEADER: sign(webhook_key(shop.settings.secret), body)},
    )  # fmt: skip
    assert response.status_code == 200, response.text


async def test_an_order_matched_by_payment_instrument_counts_in_no_gmv(
    resources: Resources,
) -> None:
    shop = Shop(resources)
    provider = HandProvider()
    shop.storefront.payments = provider
    room, _, drop = await world(shop)  # 100.00 a unit
    await distributor(shop, "dist-a")
    code = await link(shop, "dist-a", room)

    # the distributor pays for something of their own with card X (no link: credits nobody)
    mine = int((await buy(shop, "dist-a", drop)).json()["order_id"])
    await _pay_with(shop, provider, mine, "dist-a", "card-X")
    # their second account buys two units through their link and pays with the same card X:
    # a self-referral found only at payment
    await click(shop, "alt-of-a", code)
    alt = int((await buy(shop, "alt-of-a", drop, quantity=2)).json()["order_id"])
    await _pay_with(shop, provider, alt, "alt-of-a", "card-X")
    # a real buyer, one unit, card Y
    await click(shop, "v1", code)
    real = int((await buy(shop, "v1", drop)).json()["order_id"])
    await _pay_with(shop, provider, real, "v1", "card-Y")
    assert (await call(shop, "GET", f"/api/orders/{alt}/attribution", "admin-1", "admin"))[
        "self_referral_reasons"
    ] == ["payment"]

    # truth: one credited order (v1's, 100.00, one buyer); alt's 200.00 is a self-referral
    me = await call(shop, "GET", "/api/distributors/me", "dist-a", "distributor")
    assert (me["orders"], me["buyers"], me["gmv_cents"]) == (1, 1, 10_000)
    assert me["self_referral_orders"] == 1
    assert me["community"]["per_buyer_value_cents"] == 10_000
    board = await call(shop, "GET", f"/api/rooms/{room}/leaderboard", None)
    assert [(d["user_id"], d["orders"], d["gmv_cents"]) for d in board["distributors"]] == [
        ("dist-a", 1, 10_000)
    ]
    community = await call(shop, "GET", "/api/admin/community", "admin-1", "admin")
    assert [(d["name"], d["orders"], d["gmv_cents"]) for d in community["distributors"]] == [
        ("dist-a", 1, 10_000)
    ]
