"""The ground-truth scenario: several distributors, viewers entering through one link, through two
in sequence, through none; a self-referral; refunds inside the window; an unpaid hold; two
commission rates. Confirmed commission per distributor must equal the hand-computed truth to the
cent, under `last` and under `first`, and every order's trail must name the right click and rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

import attribution
from core.resources import Resources
from tests.attribution.conftest import Auth, People
from tests.attribution.shop import Shop

# Tea: 100.00 at 10%. Silk: 33.33 at 15% (33.33 × 3 × 15% = 14.9985 → 14.99, rounded down).
# Tea samples: 25.00 at tea's 10%, sold by four so one can be refunded alone.
TEA_CENTS, TEA_BPS = 10_000, 1_000
SAMPLE_CENTS = 2_500
SILK_CENTS, SILK_BPS = 3_333, 1_500

# Per rule: distributor → (confirmed, pending, reversed) in cents, worked out by hand below.
TRUTH = {
    "last": {
        # v1 tea 1000
        "dist-a": (1_000, 0, 0),
        # v2 (A then B) silk×3: 9999 × 15% = 1499.85 → 1499
        "dist-b": (1_499, 0, 0),
        # v5 4 tea samples, one (25.00) refunded: 1000 → 750 (250 reversed);
        # v4 (B then C) tea×2 fully refunded: 2000 reversed;
        # v8 (A then C) silk, paid not delivered: 499 pending
        "dist-c": (750, 499, 2_250),
    },
    "first": {
        "dist-a": (2_499, 499, 0),  # v1 1000 + v2 1499 confirmed; v8 499 pending
        "dist-b": (0, 0, 2_000),  # v4 fully refunded
        "dist-c": (750, 0, 250),  # v5
    },
}

# Per rule: distributor → (orders, GMV) over paid, not fully refunded, not self-referred orders.
BOARD = {
    "last": [("dist-c", 2, 7_500 + 3_333), ("dist-a", 1, 10_000), ("dist-b", 1, 9_999)],
    "first": [("dist-a", 3, 10_000 + 9_999 + 3_333), ("dist-c", 1, 7_500)],
}


@pytest.mark.parametrize("rule", ["last", "first"])
async def test_confirmed_commission_matches_ground_truth(
    rule: str,
    resources: Resources,
    client: httpx.AsyncClient,
    auth: Auth,
    people: People,
    invariants: Callable[[], Any],
) -> None:
    shop = Shop(resources).under(attribution=rule)
    room = await shop.room()
    tea_product = await shop.product(TEA_CENTS, TEA_BPS)
    silk_product = await shop.product(SILK_CENTS, SILK_BPS)
    samples_product = await shop.product(SAMPLE_CENTS, TEA_BPS)
    await people.distributor("dist-a", team="red")
    await people.distributor("dist-b", team="red")
    await people.distributor("dist-c", team="blue")
    la = await people.link("dist-a", room)
    lb = await people.link("dist-b", room)
    lc = await people.link("dist-c", room)

    # How each viewer came in (a room runs one drop at a time, so entries come first).
    await people.click("v1", la)  # v1: one link
    await people.click("v2", la)  # v2: two links in sequence, the second through the app
    await people.enter("v2", room, lb)
    await people.enter("v3", room)  # v3: no link, only a plain visit
    await people.click("v4", lb)  # v4: two links
    await people.click("v4", lc)
    await people.click("v5", lc)  # v5: one link
    await people.click("dist-a", la)  # dist-a buys through their own link
    await people.click("v7", lb)  # v7 will hold and never pay
    await people.click("v8", la)  # v8: two links
    await people.click("v8", lc)

    # The tea drop: v1 and v3 pass their window, v4 is refunded in full, v7 never pays.
    tea = await shop.drop(room, tea_product)
    v1 = await shop.buy("v1", tea)
    await shop.deliver_past_window(v1)
    v3 = await shop.buy("v3", tea)
    await shop.deliver_past_window(v3)
    await invariants()
    v4 = await shop.buy("v4", tea, quantity=2)
    await shop.deliver(v4)
    await shop.refund(v4, 2 * TEA_CENTS)
    await invariants()
    v7 = await shop.place("v7", tea)
    await shop.expire(v7)
    await shop.close(tea)

    # The silk drop: v2 passes its window, the self-referral too, v8 is paid, not delivered.
    silk = await shop.drop(room, silk_product)
    v2 = await shop.buy("v2", silk, quantity=3)
    await shop.deliver_past_window(v2)
    v6 = await shop.buy("dist-a", silk)
    await shop.deliver_past_window(v6)
    v8 = await shop.buy("v8", silk)
    await invariants()
    await shop.close(silk)

    # The samples drop: v5 refunds one of four inside the window, then the window passes.
    samples = await shop.drop(room, samples_product)
    v5 = await shop.buy("v5", samples, quantity=4)
    await shop.deliver(v5)
    await shop.refund(v5, SAMPLE_CENTS)
    await shop.window_passes(v5)
    await invariants()

    assert await attribution.settle(resources) == 3, "v1, v2 and v5 pass their window"
    await invariants()

    for user, (confirmed, pending, reversed_) in TRUTH[rule].items():
        money = (await people.dashboard(user))["commission_cents"]
        assert (money["confirmed"], money["pending"], money["reversed"]) == (
            confirmed,
            pending,
            reversed_,
        ), user
    me_a = await people.dashboard("dist-a")
    assert me_a["self_referral_orders"] == 1

    async def trail(order_id: int) -> dict[str, Any]:
        response = await client.get(
            f"/api/orders/{order_id}/attribution", headers=auth("admin-1", "admin")
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def credited(t: dict[str, Any]) -> tuple[str | None, str | None, str, str | None]:
        click = t["click"]
        who = t["distributor"]["user_id"] if t["distributor"] else None
        return who, click and click["link_code"], t["rule"], click and click["source"]

    expected = {
        "last": {
            v1: ("dist-a", la, "last", "click"),
            v2: ("dist-b", lb, "last", "enter"),
            v4: ("dist-c", lc, "last", "click"),
            v8: ("dist-c", lc, "last", "click"),
        },
        "first": {
            v1: ("dist-a", la, "first", "click"),
            v2: ("dist-a", la, "first", "click"),
            v4: ("dist-b", lb, "first", "click"),
            v8: ("dist-a", la, "first", "click"),
        },
    }[rule]
    for order_id, want in expected.items():
        assert credited(await trail(order_id)) == want, order_id
    assert credited(await trail(v3)) == (None, None, "none", None)
    assert credited(await trail(v7))[0] == "dist-b", "the hold was credited, never paid"

    self_referred = await trail(v6)
    assert self_referred["self_referral"] is True
    assert self_referred["distributor"]["user_id"] == "dist-a"
    assert self_referred["commission"]["commission_cents"] == 0
    assert (await trail(v4))["commission"]["state"] == "reversed"
    partial = (await trail(v5))["commission"]
    assert (partial["state"], partial["confirmed_cents"], partial["reversed_cents"]) == (
        "confirmed",
        750,
        250,
    )
    assert (await trail(v8))["commission"]["state"] == "pending"
    assert (await trail(v7))["commission"]["state"] == "none", "an unpaid hold earns nothing"
    silk_bps = (await trail(v2))["commission_bps"]
    assert silk_bps == SILK_BPS and (await trail(v1))["commission_bps"] == TEA_BPS

    board = (await client.get(f"/api/rooms/{room}/leaderboard")).json()
    assert [(d["user_id"], d["orders"], d["gmv_cents"]) for d in board["distributors"]] == BOARD[
        rule
    ]
    teams: dict[str, int] = {}
    for user, _, gmv in BOARD[rule]:
        team = "blue" if user == "dist-c" else "red"
        teams[team] = teams.get(team, 0) + gmv
    assert [(t["team"], t["gmv_cents"]) for t in board["teams"]] == sorted(
        teams.items(), key=lambda kv: -kv[1]
    )
