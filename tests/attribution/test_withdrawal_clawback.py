"""A clawback after a payout leaves the distributor owing: no withdrawal is accepted until later
commissions have made the hole good, and then only what is above it."""

from __future__ import annotations

import attribution
from core.resources import Resources
from tests.attribution.shop import Shop
from tests.attribution.test_integrity import bought, call, click, distributor, link, world


async def _withdraw(shop: Shop, cents: int, expect: int) -> dict[str, object]:
    body = await call(shop, "POST", "/api/distributors/me/withdrawals", "dist-a", "distributor",
                      json={"amount_cents": cents}, expect=expect)  # fmt: skip
    return body  # type: ignore[no-any-return]


async def test_a_negative_balance_after_a_clawback_blocks_withdrawals(resources: Resources) -> None:
    shop = Shop(resources).under(withdrawal_min_cents=100)
    room, _, drop = await world(shop)  # 100.00 a unit at 10%: 10.00 commission a unit
    await distributor(shop, "dist-a")
    code = await link(shop, "dist-a", room)
    await click(shop, "v1", code)
    first = await bought(shop, "v1", drop, quantity=2)  # 20.00 commission
    await shop.deliver_past_window(first)
    await attribution.settle(shop.res)

    # the whole 20.00 is withdrawn and paid
    asked = await _withdraw(shop, 2_000, expect=201)
    await call(shop, "POST", f"/api/admin/withdrawals/{asked['id']}", "admin-1", "admin",
               json={"decision": "approve"})  # fmt: skip
    await call(shop, "POST", "/api/admin/payouts", "admin-1", "admin", expect=201)
    # then both units come back: 20.00 is clawed back from a balance of 0
    await shop.refund(first, 20_000, by_admin=True)
    mine = await call(shop, "GET", "/api/distributors/me/withdrawals", "dist-a", "distributor")
    assert (mine["balance_cents"], mine["available_cents"]) == (-2_000, 0)

    refused = await _withdraw(shop, 100, expect=409)
    assert refused["error"] == {
        "code": "insufficient_balance",
        "message": "not enough confirmed balance for this withdrawal",
        "available_cents": 0,
        "balance_cents": -2_000,
    }

    # one unit more confirms (10.00): still 10.00 short, still nothing to withdraw
    await click(shop, "v2", code)
    second = await bought(shop, "v2", drop)
    await shop.deliver_past_window(second)
    await attribution.settle(shop.res)
    refused = await _withdraw(shop, 100, expect=409)
    assert refused["error"]["balance_cents"] == -1_000  # type: ignore[index]

    # three units more (30.00): -10.00 + 30.00 = 20.00, and exactly that may be withdrawn
    await click(shop, "v3", code)
    third = await bought(shop, "v3", drop, quantity=3)
    await shop.deliver_past_window(third)
    await attribution.settle(shop.res)
    refused = await _withdraw(shop, 2_001, expect=409)
    assert refused["error"]["available_cents"] == 2_000  # type: ignore[index]
    await _withdraw(shop, 2_000, expect=201)
    mine = await call(shop, "GET", "/api/distributors/me/withdrawals", "dist-a", "distributor")
    assert (mine["balance_cents"], mine["reserved_cents"], mine["available_cents"]) == (
        2_000, 2_000, 0,
    )  # fmt: skip
    assert [w["status"] for w in mine["withdrawals"]] == ["requested", "paid"]


async def test_an_approved_withdrawal_a_clawback_no_longer_covers_waits(
    resources: Resources,
) -> None:
    """Approved, then half clawed back before the payout batch: the batch does not pay money
    the distributor no longer has; the withdrawal waits, approved, until later commissions
    cover it, and a later batch pays it."""
    shop = Shop(resources).under(withdrawal_min_cents=100)
    room, _, drop = await world(shop)  # 10.00 commission a unit
    await distributor(shop, "dist-a")
    code = await link(shop, "dist-a", room)
    await click(shop, "v1", code)
    first = await bought(shop, "v1", drop, quantity=2)  # 20.00 commission
    await shop.deliver_past_window(first)
    await attribution.settle(shop.res)

    asked = await _withdraw(shop, 2_000, expect=201)
    await call(shop, "POST", f"/api/admin/withdrawals/{asked['id']}", "admin-1", "admin",
               json={"decision": "approve"})  # fmt: skip
    await shop.refund(first, 10_000, by_admin=True)  # one unit back: 10.00 clawed back
    batch = await call(shop, "POST", "/api/admin/payouts", "admin-1", "admin", expect=200)
    assert (batch["id"], batch["total_cents"]) == (None, 0), batch  # nothing to pay
    mine = await call(shop, "GET", "/api/distributors/me/withdrawals", "dist-a", "distributor")
    assert (mine["balance_cents"], mine["reserved_cents"], mine["available_cents"]) == (
        1_000, 2_000, 0,
    )  # fmt: skip
    assert [w["status"] for w in mine["withdrawals"]] == ["approved"]

    # one more unit confirms: 20.00 again, and the next batch pays the withdrawal, net of fees
    await click(shop, "v2", code)
    second = await bought(shop, "v2", drop)
    await shop.deliver_past_window(second)
    await attribution.settle(shop.res)
    batch = await call(shop, "POST", "/api/admin/payouts", "admin-1", "admin", expect=201)
    assert batch["total_cents"] == asked["net_cents"], batch
    mine = await call(shop, "GET", "/api/distributors/me/withdrawals", "dist-a", "distributor")
    assert (mine["balance_cents"], mine["reserved_cents"]) == (0, 0)
    assert [w["status"] for w in mine["withdrawals"]] == ["paid"]
