"""Winners' orders written together (storefront.placing): one refused order never takes the
others of its batch down with it, and winners arriving together share a commit; a start
rehearses an order on every pooled connection and leaves nothing behind."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import asyncpg
import pytest

from core.db import create_pool
from core.resources import Resources
from storefront import Shop
from storefront.buy import placing
from storefront.buy.placing import (
    MAX_BATCH,
    PLACE_ORDERS_SQL,
    OrderRequest,
    Placed,
    PlaceOutcome,
    rehearse_orders,
)
from tests.storefront.conftest import StartDrop


def order(drop_id: int, buyer: str, key: str, *units: int) -> OrderRequest:
    return OrderRequest(drop_id, buyer, key, hashlib.sha256(key.encode()).digest(), list(units))


def kind(result: PlaceOutcome) -> str:
    return "placed" if isinstance(result, Placed) else result.reason


async def written(res: Resources, drop_id: int) -> dict[str, object]:
    async with res.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT
                 (SELECT array_agg(buyer_id ORDER BY buyer_id) FROM orders
                   WHERE drop_id = $1) AS buyers,
                 (SELECT array_agg(unit_no ORDER BY unit_no) FROM stock_claims
                   WHERE drop_id = $1) AS units,
                 (SELECT array_agg(buyer_id || '=' || live_units ORDER BY buyer_id)
                    FROM drop_buyers WHERE drop_id = $1) AS quotas,
                 (SELECT array_agg(key ORDER BY key) FROM idempotency_keys
                   WHERE drop_id = $1) AS keys,
                 (SELECT count(*) FROM order_attributions a JOIN orders o ON o.id = a.order_id
                   WHERE o.drop_id = $1) AS attributions""",
            drop_id,
        )
    return dict(row)


async def test_one_refused_order_leaves_the_rest_of_its_batch_written(
    resources: Resources, shop: Shop, start_drop: StartDrop
) -> None:
    drop_id = int((await start_drop(quantity=5, per_buyer_limit=2))["id"])
    writer = shop.orders
    batches = writer.batches
    results = await asyncio.gather(
        writer.place(order(drop_id, "ana", "k-ana", 1)),
        writer.place(order(drop_id, "ben", "k-ben", 1)),  # ana's unit
        writer.place(order(drop_id, "ana", "k-ana", 2)),  # ana's key again
        writer.place(order(drop_id, "cy", "k-cy", 3, 4, 5)),  # over the limit of 2
        writer.place(order(drop_id, "dee", "k-dee", 3)),
        writer.place(order(drop_id + 1_000_000, "eve", "k-eve", 1)),  # no such drop
    )
    assert writer.batches == batches + 1, "asked together, written together"
    assert [kind(r) for r in results] == [
        "placed",
        "unit_taken",
        "key_taken",
        "over_limit",
        "placed",
        "missing",
    ]
    first = results[0]
    assert isinstance(first, Placed) and first.order_id and first.amount_cents == 9_900
    assert await written(resources, drop_id) == {
        "buyers": ["ana", "dee"],
        "units": [1, 3],
        "quotas": ["ana=1", "dee=1"],
        "keys": ["k-ana", "k-dee"],
        "attributions": 2,
    }


async def test_winners_arriving_together_share_commits(
    resources: Resources, shop: Shop, start_drop: StartDrop
) -> None:
    winners = 3 * MAX_BATCH
    drop_id = int((await start_drop(quantity=winners, per_buyer_limit=1))["id"])
    writer = shop.orders
    batches = writer.batches
    results = await asyncio.gather(
        *(writer.place(order(drop_id, f"w{n}", f"k{n}", n + 1)) for n in range(winners))
    )
    assert [kind(r) for r in results] == ["placed"] * winners
    assert len({r.order_id for r in results if isinstance(r, Placed)}) == winners
    assert batches + 3 <= writer.batches < batches + winners, "batches formed, none too big"
    state = await written(resources, drop_id)
    assert state["units"] == list(range(1, winners + 1))


async def test_a_quiet_drop_writes_each_order_at_once(
    resources: Resources, shop: Shop, start_drop: StartDrop
) -> None:
    drop_id = int((await start_drop(quantity=3, per_buyer_limit=1))["id"])
    writer = shop.orders
    for n in range(3):
        batches = writer.batches
        placed = await asyncio.wait_for(writer.place(order(drop_id, f"q{n}", f"q{n}", n + 1)), 5)
        assert kind(placed) == "placed" and writer.batches == batches + 1


async def test_a_batch_that_fails_fails_each_of_its_orders_and_the_next_one_proceeds(
    resources: Resources, shop: Shop, start_drop: StartDrop, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop_id = int((await start_drop(quantity=3, per_buyer_limit=1))["id"])
    writer = shop.orders
    write = writer._write
    failures = [ConnectionResetError("PostgreSQL went away")]

    async def flaky(orders: list[OrderRequest]) -> list[PlaceOutcome]:
        if failures:
            raise failures.pop()
        return await write(orders)

    monkeypatch.setattr(writer, "_write", flaky)
    outcomes = await asyncio.gather(
        writer.place(order(drop_id, "fa", "fa", 1)),
        writer.place(order(drop_id, "fb", "fb", 2)),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [ConnectionResetError, ConnectionResetError]
    placed = await asyncio.wait_for(writer.place(order(drop_id, "fc", "fc", 3)), 5)
    assert kind(placed) == "placed"
    assert (await written(resources, drop_id))["buyers"] == ["fc"]


async def test_a_batch_rolled_back_by_a_deadlock_is_written_again(
    resources: Resources, shop: Shop, start_drop: StartDrop
) -> None:
    """A real deadlock: another transaction holds buyer "dy"'s quota row and then asks for
    "dx"'s, which the batch holds; PostgreSQL rolls the batch back (it waited first, so its
    deadlock check runs first), the other transaction ends, and the batch is written again."""
    drop_id = int((await start_drop(quantity=4, per_buyer_limit=2))["id"])
    writer = shop.orders
    other = await asyncpg.connect(resources.settings.database_url)
    try:
        upsert = """INSERT INTO drop_buyers (drop_id, buyer_id, per_buyer_limit, live_units)
                    VALUES ($1, $2, 2, 0) ON CONFLICT (drop_id, buyer_id) DO NOTHING"""
        transaction = other.transaction()
        await transaction.start()
        await other.execute("SET LOCAL deadlock_timeout = '30s'")
        await other.execute(upsert, drop_id, "dy")
        batch = asyncio.create_task(
            writer._write([order(drop_id, "dy", "k-dy", 1), order(drop_id, "dx", "k-dx", 2)])
        )
        await asyncio.sleep(0.3)  # the batch holds dx's row and waits for dy's
        await asyncio.wait_for(other.execute(upsert, drop_id, "dx"), 10)  # freed by the deadlock
        await transaction.rollback()
        results = await asyncio.wait_for(batch, 10)
    finally:
        await other.close()
    assert [kind(r) for r in results] == ["placed", "placed"], "in the order given"
    state = await written(resources, drop_id)
    assert state["buyers"] == ["dx", "dy"] and state["quotas"] == ["dx=1", "dy=1"]


REHEARSAL_TABLES = (
    "products",
    "rooms",
    "drops",
    "drop_units",
    "orders",
    "stock_claims",
    "drop_buyers",
    "idempotency_keys",
    "order_attributions",
)


async def test_every_free_connection_rehearses_an_order_and_nothing_is_left_behind(
    resources: Resources,
) -> None:
    pool = resources.pool
    size = pool.get_size()

    assert await rehearse_orders(resources) == size

    async with pool.acquire() as conn:
        for table in REHEARSAL_TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        # no sequence moved: a fresh database's first order, claim, room, product and drop
        # are still number 1
        used = await conn.fetch(
            """SELECT sequencename FROM pg_sequences
               WHERE schemaname = 'public' AND last_value IS NOT NULL"""
        )
        assert used == []
        for sequence in ("orders_id_seq", "stock_claims_id_seq", "rooms_id_seq"):
            assert await conn.fetchval(f"SELECT nextval('{sequence}')") == 1, sequence
    # each connection has the order statement prepared (and its backend has planned it)
    held = [await pool.acquire() for _ in range(size)]
    try:
        for conn in held:
            prepared = await conn.fetchval(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1",
                PLACE_ORDERS_SQL,
            )
            assert prepared == 1
    finally:
        for conn in held:
            await pool.release(conn)


async def test_a_rehearsal_skips_connections_others_hold(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(placing, "REHEARSAL_WAIT_S", 0.2)
    assert resources.settings.database_url
    # a server's pool: all its connections open from the start
    pool = await create_pool(resources.settings.database_url, min_size=3, max_size=3)
    try:
        own = dataclasses.replace(resources, pool=pool)
        async with pool.acquire():
            assert await rehearse_orders(own) == 2
        assert await rehearse_orders(own) == 3
    finally:
        await pool.close()
