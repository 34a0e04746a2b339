"""Promotions end to end, over HTTP only: coupon-discounted orders, a partial refund of one, a
referral code beating an earlier link, a buyer's own code, reservations through a link and a
code that buy after the room goes live; each distributor's pending, confirmed and reversed
commission equals a hand-computed truth to the cent, and the ledger still sums to zero. Then
the pieces alone: codes (unknown, guessed, taken), expiry and refund of a discounted order, the
outbound webhook `room.live` (signed, retried, delivered)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

import attribution
from core import webhooks
from core.resources import Resources
from tests.attribution.conftest import Auth, People
from tests.attribution.shop import HOST, Shop
from tests.attribution.webhook_receiver import Receiver, verify
from tests.conftest import within_one_window


async def _code(people: People, user: str, code: str | None = None) -> str:
    await people.distributor(user)
    response = await people.client.post(
        "/api/distributors/me/codes",
        json={} if code is None else {"code": code},
        headers=people.auth(user, "viewer", "distributor"),
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["code"])


async def _coupon(shop: Shop, room_id: int, **terms: Any) -> str:
    body = {"title": "coupon", "quantity": 10, "claim_duration_s": 600, "valid_s": 3600, **terms}
    coupon = await shop._call("POST", f"/api/rooms/{room_id}/coupons", HOST, "host", json=body)
    return str(coupon["id"])


async def _claim(shop: Shop, coupon_id: str, user: str) -> str:
    response = await shop.http.post(
        f"/api/coupons/{coupon_id}/claim",
        headers={**shop._as(user, "viewer"), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    await shop.storefront.settled()
    return str(response.json()["claim_id"])


async def _buy(shop: Shop, user: str, drop_id: int, quantity: int = 1, **extra: Any) -> int:
    response = await shop.http.post(
        f"/api/drops/{drop_id}/buy",
        json={"quantity": quantity, **extra},
        headers={**shop._as(user, "viewer"), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    order_id = int(response.json()["order_id"])
    await shop.pay(order_id)
    return order_id


async def _trail(shop: Shop, order_id: int) -> dict[str, Any]:
    trail: dict[str, Any] = await shop._call(
        "GET", f"/api/orders/{order_id}/attribution", "admin-1", "admin"
    )
    return trail


async def test_promotions_scenario_to_the_cent(
    shop: Shop, people: People, resources: Resources, invariants: Callable[[], Any]
) -> None:
    room = await shop.room()
    product = await shop.product(price_cents=3_000, commission_bps=1_000)
    drop = await shop.drop(room, product)
    await people.distributor("dana")
    dana_link = await people.link("dana", room)
    eve_code = await _code(people, "eve", "eve001")
    assert eve_code == "EVE001"

    # ann came through dana's link; three units with ¥10 off: 9000 − 1000 = 8000, 800 commission
    await people.click("ann", dana_link)
    coupon = await _coupon(shop, room, amount_off_cents=1_000)
    ann = await _buy(shop, "ann", drop, 3, coupon_claim_id=await _claim(shop, coupon, "ann"))
    assert (await shop._call("GET", f"/api/orders/{ann}", "ann"))["amount_cents"] == 8_000
    # one unit back: floor(8000 × 1 / 3) = 2666 refunded; commission on 5334 is 533, 267 reversed
    await shop._call("POST", f"/api/orders/{ann}/refund", "ann", "viewer", json={"quantity": 1})
    order = await shop._call("GET", f"/api/orders/{ann}", "ann")
    assert (order["refunded_cents"], order["refunded_units"]) == (2_666, 1)
    await shop.deliver(ann)
    await shop.window_passes(ann)
    await attribution.settle(resources)

    # ben clicked dana's link, then typed eve's code (any case) at the buy: eve, rule `code`
    await people.click("ben", dana_link)
    ben = await _buy(shop, "ben", drop, 1, referral_code="eve001")
    trail = await _trail(shop, ben)
    assert trail["rule"] == "code" and trail["distributor"]["user_id"] == "eve"

    # eve buys with her own code: credited, flagged, earns nothing
    own = await _buy(shop, "eve", drop, 1, referral_code=eve_code)
    assert (await _trail(shop, own))["self_referral"] is True

    # a scheduled room: cat reserves through dana's link, dan with eve's code; then it goes live
    later = (await shop._call("POST", "/api/rooms", HOST, "host", json={"title": "later"}))["id"]
    later_link = await people.link("dana", int(later))
    for user, body in (("cat", {"link_code": later_link}), ("dan", {"referral_code": eve_code})):
        reserved = await shop.http.post(
            f"/api/rooms/{later}/reservations", json=body, headers=shop._as(user, "viewer")
        )
        assert reserved.status_code == 201, reserved.text
    snapshot = await shop._call("GET", f"/api/rooms/{later}", "anyone")
    assert snapshot["reservations"] == 2
    await shop._call("POST", f"/api/rooms/{later}/live", HOST, "host")
    later_drop = await shop.drop(int(later), product)
    cat = await _buy(shop, "cat", later_drop)
    dan = await _buy(shop, "dan", later_drop)
    assert (await _trail(shop, cat))["distributor"]["user_id"] == "dana"
    assert (await _trail(shop, dan))["rule"] == "code"
    # cat returns hers before delivery: dana's 300 reversed
    await shop._call("POST", f"/api/orders/{cat}/refund", "cat", "viewer", json={})

    dana = await people.dashboard("dana")
    eve = await people.dashboard("eve")
    truth = {
        "dana": {"pending": 0, "confirmed": 533, "reversed": 267 + 300},
        "eve": {"pending": 300 + 300, "confirmed": 0, "reversed": 0},
    }
    for name, board in (("dana", dana), ("eve", eve)):
        money = board["commission_cents"]
        got = {k: money[k] for k in ("pending", "confirmed", "reversed")}
        assert got == truth[name], (name, board)
    await invariants()


async def test_codes_unknown_guessed_and_taken(
    shop: Shop, people: People, client: httpx.AsyncClient, auth: Auth
) -> None:
    room = await shop.room()
    drop = await shop.drop(room, await shop.product(price_cents=1_000, commission_bps=500))
    anna = await _code(people, "anna")
    assert anna.startswith("ANNA") and len(anna) == 6
    again = await client.post(
        "/api/distributors/me/codes", json={}, headers=auth("anna", "distributor")
    )
    assert again.status_code == 200 and again.json()["code"] == anna
    await people.distributor("bob")
    taken = await client.post(
        "/api/distributors/me/codes", json={"code": anna.lower()},
        headers=auth("bob", "distributor"),
    )  # fmt: skip
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "referral_code_taken"

    await within_one_window(need_s=6)  # every lookup below counts in one window
    unknown = await shop.http.post(
        f"/api/drops/{drop}/buy", json={"referral_code": "NOSUCH1"},
        headers={**shop._as("guesser"), "Idempotency-Key": "g0"},
    )  # fmt: skip
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "referral_code_not_found"
    answers = [
        await shop.http.post(
            f"/api/rooms/{room}/enter",
            json={"referral_code": f"GUESS{n:02d}"},
            headers=shop._as("guesser"),
        )  # fmt: skip
        for n in range(40)
    ]
    codes = [a.json()["error"]["code"] for a in answers]
    assert "rate_limited" in codes and codes[0] == "referral_code_not_found"
    limited = codes.index("rate_limited")
    assert set(codes[limited:]) == {"rate_limited"}
    real = await shop.http.post(
        f"/api/rooms/{room}/enter", json={"referral_code": anna}, headers=shop._as("guesser")
    )
    assert real.status_code == 429, "past the limit a real code tells nothing either"


async def test_an_expired_hold_gives_its_claim_back_and_a_refund_does_not(
    shop: Shop, resources: Resources
) -> None:
    room = await shop.room()
    drop = await shop.drop(room, await shop.product(price_cents=2_000, commission_bps=500))
    coupon = await _coupon(shop, room, percent_off_bps=1_000)
    claim = await _claim(shop, coupon, "ann")
    response = await shop.http.post(
        f"/api/drops/{drop}/buy", json={"coupon_claim_id": claim},
        headers={**shop._as("ann", "viewer"), "Idempotency-Key": "hold-1"},
    )  # fmt: skip
    assert response.json()["amount_cents"] == 1_800
    await shop.expire(int(response.json()["order_id"]))
    mine = await shop._call("GET", "/api/me/coupons", "ann")
    assert [c["claim_id"] for c in mine["claims"]] == [claim], "the claim is usable again"
    paid = await _buy(shop, "ann", drop, 1, coupon_claim_id=claim)
    await shop._call("POST", f"/api/orders/{paid}/refund", "ann", "viewer", json={})
    assert (await shop._call("GET", "/api/me/coupons", "ann"))["claims"] == []


async def test_room_live_reaches_reservers_and_a_signed_retried_webhook(
    shop: Shop, resources: Resources
) -> None:
    receiver = Receiver([500])
    async with receiver as url:
        hook = await shop._call("POST", "/api/admin/webhooks", "admin-1", "admin",
                                json={"url": url, "events": ["room.live"]})  # fmt: skip
        room = (await shop._call("POST", "/api/rooms", HOST, "host", json={"title": "t"}))["id"]
        for user in ("cat", "dan"):
            await shop._call("POST", f"/api/rooms/{room}/reservations", user, "viewer", json={})
        again = await shop.http.post(
            f"/api/rooms/{room}/reservations", json={}, headers=shop._as("cat", "viewer")
        )
        assert again.status_code == 200 and again.json()["reservations"] == 2
        listed = await shop._call("GET", f"/api/rooms/{room}/reservations", HOST, "host")
        assert [r["user_id"] for r in listed["reservers"]] == ["cat", "dan"]
        await shop._call("POST", f"/api/rooms/{room}/live", HOST, "host")
        late = await shop.http.post(
            f"/api/rooms/{room}/reservations", json={}, headers=shop._as("eli", "viewer")
        )
        assert late.status_code == 409 and late.json()["error"]["code"] == "room_not_scheduled"

        for user in ("cat", "dan"):
            entries = await resources.redis.xrange(f"{{user#{user}}}:history")
            events = [msgspec.json.decode(fields[b"d"]) for _, fields in entries]
            assert [e["type"] for e in events] == ["room.live"]

        # first attempt: the app answers 500; the delivery waits with backoff
        assert await webhooks.deliver_due(resources) == 0
        deliveries = await shop._call(
            "GET", f"/api/admin/webhooks/{hook['id']}/deliveries", "admin-1", "admin"
        )
        [delivery] = deliveries["deliveries"]
        assert (delivery["status"], delivery["attempts"]) == ("pending", 1)
        assert delivery["payload"]["reservers"] == ["cat", "dan"]
        assert await webhooks.deliver_due(resources) == 0, "not due again yet"
        await shop._call(
            "POST", f"/api/admin/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry",
            "admin-1", "admin",
        )  # fmt: skip
        assert await webhooks.deliver_due(resources) == 1

    # the same event twice, signed with the endpoint's secret, naming its reservers
    assert len(receiver.received) == 2
    for headers, body in receiver.received:
        assert headers["livesell-event"] == "room.live"
        assert verify(hook["secret"], headers["livesell-signature"], body)
        sent = msgspec.json.decode(body)
        assert sent["type"] == "room.live" and sent["data"]["reservers"] == ["cat", "dan"]
    assert receiver.received[0][1] == receiver.received[1][1]
    async with resources.pool.acquire() as conn:
        status = await conn.fetchval(
            "SELECT status FROM webhook_deliveries WHERE id = $1", int(delivery["id"])
        )
    assert status == "delivered"
