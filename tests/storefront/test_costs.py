"""What one buy, one refusal and one payment cost Redis, counted by the server itself (`INFO
commandstats` before and after, on every primary of a cluster). docs/scaling.md quotes these
counts; the bounds here keep them from growing unnoticed."""

from __future__ import annotations

from collections import Counter

import httpx

from core.resources import Resources
from storefront import Shop
from tests.storefront.conftest import Auth, Buy, StartDrop, redis_calls


async def _counted(res: Resources, shop: Shop, action: object) -> Counter[str]:
    await shop.settled()
    before = await redis_calls(res)
    await action  # type: ignore[misc]
    await shop.settled()
    after = await redis_calls(res)
    return Counter({k: after[k] - before[k] for k in after if after[k] > before[k]})


async def test_what_a_buy_a_refusal_and_a_payment_cost_redis(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    shop: Shop,
) -> None:
    drop = await start_drop(quantity=3, per_buyer_limit=1)
    await buy(drop["id"], "warm")  # the first buy of a drop in a process is not the common one

    bought: list[httpx.Response] = []

    async def one_buy() -> None:
        bought.append(await buy(drop["id"], "ann"))

    won = await _counted(resources, shop, one_buy())
    assert bought[0].status_code == 201, bought[0].text
    order_id = bought[0].json()["order_id"]
    await buy(drop["id"], "bob")  # the last unit: sold out from here on
    await buy(drop["id"], "cat")  # refused by the gate; the refusal's snapshot is read
    refused = await _counted(resources, shop, buy(drop["id"], "dan"))

    async def pay() -> None:
        paid = await client.post(f"/api/orders/{order_id}/pay", headers=auth("ann", "viewer"))
        assert paid.status_code == 200, paid.text

    paying = await _counted(resources, shop, pay())
    print(f"\nRedis calls: buy {dict(won)}; refusal {dict(refused)}; pay {dict(paying)}")
    # commandstats counts the commands scripts run too: the script calls are the round trips
    # a winner: the rate limit, the gate's acquire and commit, the room's event (4 scripts)
    assert won["evalsha"] <= 4 and sum(won.values()) <= 32, won
    # a loser after a sell-out: nothing at all (refused from this process's snapshot)
    assert sum(refused.values()) == 0, refused
    # a payment: its events on the room's channel and the buyer's order (2 scripts)
    assert paying["evalsha"] <= 2 and sum(paying.values()) <= 20, paying
