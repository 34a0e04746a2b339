"""Stock announcements: changes of one drop committed while its counts are being read coalesce
into one more announcement, which carries PostgreSQL's counts."""

from __future__ import annotations

import asyncio

from core.events import channel_keys, room_channel
from core.resources import Resources
from storefront.stock import StockAnnouncer
from tests.storefront.conftest import Buy, StartDrop, room_events, stock_truth


async def _stock_events(res: Resources, room_id: str) -> list[dict[str, object]]:
    return [e for e in await room_events(res, room_id) if e["type"] == "stock.changed"]


async def _published(res: Resources, room_id: str) -> int:
    """How many events the room has published (its top offset): a stock announcement replaces
    the previous one among the latest values, so they are counted by offset."""
    return int(await res.redis.hget(f"{{room:{room_id}}}:meta", "s") or 0)  # type: ignore[misc]


async def test_changes_during_a_pass_make_one_more_announcement_with_the_latest_counts(
    resources: Resources, start_drop: StartDrop, buy: Buy
) -> None:
    drop = await start_drop(quantity=5, per_buyer_limit=5)
    assert (await buy(drop["id"], "bob", 2)).status_code == 201
    before = await _published(resources, drop["room_id"])
    announcer = StockAnnouncer(resources)

    first = asyncio.create_task(announcer.changed(int(drop["id"]), sold=True))
    await asyncio.sleep(0)  # its pass is reading the counts now
    for _ in range(3):  # three more sales commit meanwhile: noted, their callers do not wait
        await announcer.changed(int(drop["id"]), sold=True)
    assert not first.done()
    await first
    await resources.after_commit.drain()

    events = await _stock_events(resources, drop["room_id"])
    published = await _published(resources, drop["room_id"]) - before
    assert published == 2, "the pass under way, then one pass for the three noted"
    truth = await stock_truth(resources, drop["id"])
    assert events[-1] == {
        "type": "stock.changed",
        "drop_id": drop["id"],
        "quantity": 5,
        "remaining": 5 - truth["held"] - truth["sold"],
        "sold": truth["sold"],
        "held": truth["held"],
    }
    assert (truth["held"], truth["sold"]) == (2, 0)


async def test_a_noted_sale_that_took_the_last_unit_announces_the_sell_out(
    resources: Resources, start_drop: StartDrop, buy: Buy
) -> None:
    drop = await start_drop(quantity=2, per_buyer_limit=2)
    assert (await buy(drop["id"], "bob", 2)).status_code == 201
    sold_out = [
        e for e in await room_events(resources, drop["room_id"]) if e["type"] == "drop.sold_out"
    ]
    assert len(sold_out) == 1
    async with resources.pool.acquire() as conn:  # as if the sell-out was not announced yet
        await conn.execute("UPDATE drops SET sold_out_at = NULL WHERE id = $1", int(drop["id"]))
    announcer = StockAnnouncer(resources)
    meta = channel_keys(room_channel(drop["room_id"]))[0]
    top_before = int(await resources.redis.hget(meta, "s"))  # type: ignore[misc]

    # a pass for returned units is under way when a sale is noted: the next pass is a sale's
    first = asyncio.create_task(announcer.changed(int(drop["id"]), returned=True))
    await asyncio.sleep(0)
    await announcer.changed(int(drop["id"]), sold=True)
    await first
    await resources.after_commit.drain()

    # two stock.changed and the sell-out went out (three offsets); history keeps the newest
    # stock value only (a latest-value event), then the sell-out
    assert int(await resources.redis.hget(meta, "s")) == top_before + 3  # type: ignore[misc]
    types = [e["type"] for e in await room_events(resources, drop["room_id"])]
    assert types[-2:] == ["stock.changed", "drop.sold_out"]
    assert types.count("drop.sold_out") == 2
