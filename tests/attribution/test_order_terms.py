"""An order's return window is fixed when it is delivered: a process started later with another
LIVESELL_RETURN_WINDOW_S (an API restarted with a new value, `livesell payouts` run from a shell
with another) moves neither the buyer's right to return it, nor the day its commission is
confirmed, nor the window the order view shows. Also the migration's backfill of orders
delivered before the window was stored."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

import attribution
from core.auth import mint_token
from core.db import MIGRATION_LOCK_ID, migrate, migration_files
from core.resources import Resources, open_resources
from core.settings import load_settings
from tests.attribution.conftest import People
from tests.attribution.shop import Shop
from tests.conftest import TEST_SECRET, Servers

WEEK_S = 604_800
DAY_S = 86_400


@asynccontextmanager
async def _other_process(servers: Servers, return_window_s: int) -> AsyncIterator[Shop]:
    """An API (and `livesell payouts`) configured with another LIVESELL_RETURN_WINDOW_S, on its
    own connections to the same database and Redis."""
    settings = load_settings(
        environ={
            "DATABASE_URL": servers.pg.url,
            "REDIS_URL": servers.valkey.url,
            "LIVESELL_DATA_DIR": str(servers.root / "data"),
            "LIVESELL_SECRET": TEST_SECRET,
            "LIVESELL_DEV": "1",
            "LIVESELL_RETURN_WINDOW_S": str(return_window_s),
        },
        dotenv=None,
    )
    assert settings.return_window_s == return_window_s
    async with open_resources(settings) as res:
        yield Shop(res)


@pytest.fixture
async def one_day(servers: Servers) -> AsyncIterator[Shop]:
    async with _other_process(servers, DAY_S) as shop:
        yield shop


@pytest.fixture
async def thirty_days(servers: Servers) -> AsyncIterator[Shop]:
    async with _other_process(servers, 30 * DAY_S) as shop:
        yield shop


async def _order(shop: Shop, people: People, buyer: str, drop: int, code: str) -> int:
    await people.enter(buyer, await _room_of(shop, drop), code)
    return await shop.buy(buyer, drop)


async def _room_of(shop: Shop, drop: int) -> int:
    async with shop.res.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT room_id FROM drops WHERE id = $1", drop))


def bearer(sub: str, *roles: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(TEST_SECRET, sub, roles or ("viewer",))}


async def _view(shop: Shop, order_id: int) -> dict[str, Any]:
    response = await shop.http.get(f"/api/orders/{order_id}", headers=bearer("admin-1", "admin"))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _refund_by_buyer(shop: Shop, order_id: int, buyer: str) -> tuple[int, str | None]:
    response = await shop.http.post(
        f"/api/orders/{order_id}/refund", json={"quantity": 1}, headers=bearer(buyer)
    )
    code = response.json()["error"]["code"] if response.status_code >= 400 else None
    return response.status_code, code


async def _confirmed(res: Resources) -> set[int]:
    async with res.pool.acquire() as conn:
        rows = await conn.fetch("SELECT order_id FROM ledger_transactions WHERE kind = 'confirm'")
    return {r["order_id"] for r in rows}


async def test_a_shorter_window_set_later_closes_no_open_window(
    shop: Shop, people: People, resources: Resources, one_day: Shop
) -> None:
    """Delivered under 7 days, three days ago: a process now running with a 1-day window still
    lets the buyer return it, does not confirm its commission, and shows the 7-day end."""
    room = await shop.room()
    drop = await shop.drop(room, await shop.product(10_000, 1_000))
    await people.distributor("dist-t")
    code = await people.link("dist-t", room)
    returned = await _order(shop, people, "buyer-r", drop, code)
    settled = await _order(shop, people, "buyer-s", drop, code)
    for order_id in (returned, settled):
        await shop.deliver(order_id, days_ago=3)
    shown = [(await _view(shop, o))["return_window_ends_at"] for o in (returned, settled)]
    async with resources.pool.acquire() as conn:
        windows = await conn.fetch(
            "SELECT return_window_ends_at - delivered_at AS w FROM orders ORDER BY id"
        )
    assert [r["w"] for r in windows] == [timedelta(seconds=WEEK_S)] * 2

    # the other process shows the same terms
    assert [(await _view(one_day, o))["return_window_ends_at"] for o in (returned, settled)] == (
        shown
    )
    # `livesell payouts` under the 1-day setting: nothing is due yet
    assert await attribution.settle(one_day.res) == 0
    assert await _confirmed(resources) == set()
    assert (await attribution.run_payout(one_day.res, created_by="ops")).total_cents == 0
    # the buyer may still return it through the 1-day API
    assert await _refund_by_buyer(one_day, returned, "buyer-r") == (200, None)

    # four more days pass: the 7-day window has ended, for either process
    await shop.time_passes(settled, timedelta(days=4, seconds=1))
    assert await _refund_by_buyer(one_day, settled, "buyer-s") == (409, "return_window_closed")
    assert await attribution.settle(one_day.res) == 1
    assert await _confirmed(resources) == {settled}


async def test_a_longer_window_set_later_reopens_no_closed_window(
    shop: Shop, people: People, resources: Resources, thirty_days: Shop
) -> None:
    """Delivered under 7 days, eight days ago: a process now running with a 30-day window
    neither lets the buyer return it nor holds back its commission, and shows the 7-day end."""
    room = await shop.room()
    drop = await shop.drop(room, await shop.product(10_000, 1_000))
    await people.distributor("dist-u")
    code = await people.link("dist-u", room)
    order_id = await _order(shop, people, "buyer-l", drop, code)
    await shop.deliver(order_id, days_ago=8)
    view = await _view(thirty_days, order_id)
    assert view == await _view(shop, order_id)
    async with resources.pool.acquire() as conn:
        delivered_at = await conn.fetchval(
            "SELECT delivered_at FROM orders WHERE id = $1", order_id
        )
    ends_at = datetime.fromisoformat(view["return_window_ends_at"])
    assert ends_at == delivered_at + timedelta(seconds=WEEK_S)

    assert await _refund_by_buyer(thirty_days, order_id, "buyer-l") == (
        409,
        "return_window_closed",
    )
    assert await attribution.settle(thirty_days.res) == 1
    payout = await attribution.run_payout(thirty_days.res, created_by="ops")
    assert payout.total_cents == 1_000


async def test_the_window_starts_with_the_delivering_process_setting(
    people: People, resources: Resources, one_day: Shop
) -> None:
    """A delivery by a process with a 1-day window fixes a 1-day window."""
    room = await one_day.room()
    drop = await one_day.drop(room, await one_day.product(10_000, 1_000))
    order_id = await one_day.buy("buyer-d", drop)
    await one_day.deliver(order_id)
    async with resources.pool.acquire() as conn:
        window = await conn.fetchval(
            "SELECT return_window_ends_at - delivered_at FROM orders WHERE id = $1", order_id
        )
        assert window == timedelta(days=1)
        # a delivered order without a window (or one ending before its delivery) is refused
        with pytest.raises(asyncpg.CheckViolationError, match="orders_return_window_fixed"):
            await conn.execute(
                "UPDATE orders SET return_window_ends_at = NULL WHERE id = $1", order_id
            )
        with pytest.raises(asyncpg.CheckViolationError, match="orders_return_window_fixed"):
            await conn.execute(
                "UPDATE orders SET return_window_ends_at = delivered_at - interval '1 second'"
                " WHERE id = $1",
                order_id,
            )


@pytest.mark.parametrize("setting", [None, "1209600"])
async def test_the_migration_fixes_windows_of_orders_delivered_before_it(
    servers: Servers, setting: str | None
) -> None:
    """Orders delivered before migration 0012 get delivered_at + 7 days, or + the database's
    livesell.return_window_s when the operator set one before upgrading; others get none."""
    name = f"terms_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(servers.pg.url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        if setting is not None:
            await admin.execute(f"ALTER DATABASE {name} SET livesell.return_window_s = '{setting}'")
        url = servers.pg.url.rsplit("/", 1)[0] + f"/{name}"
        conn = await asyncpg.connect(url)
        try:
            await _migrate_before(conn, 12)
            delivered = await _delivered_order(conn)
            undelivered = await _delivered_order(conn, deliver=False)
            applied = await migrate(conn)
            assert "0012_order_terms.sql" in applied
            rows = {
                r["id"]: r
                for r in await conn.fetch(
                    "SELECT id, delivered_at, return_window_ends_at FROM orders"
                )
            }
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
    window = timedelta(seconds=int(setting or WEEK_S))
    row = rows[delivered]
    assert row["return_window_ends_at"] == row["delivered_at"] + window
    assert rows[undelivered]["return_window_ends_at"] is None


async def _migrate_before(conn: asyncpg.Connection, version: int) -> None:
    """The schema as it was before `version` (as `migrate` would have left it)."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        for number, name, sql in migration_files():
            if number >= version:
                break
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name
                )
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)


async def _delivered_order(conn: asyncpg.Connection, *, deliver: bool = True) -> int:
    """A paid order (delivered ten days ago when `deliver`), written as the old schema held it."""
    product = await conn.fetchval(
        """INSERT INTO products (sku, title, price_cents, commission_bps, created_by)
           VALUES ($1, 'p', 100, 1000, 'h') RETURNING id""",
        uuid.uuid4().hex,
    )
    room = await conn.fetchval("INSERT INTO rooms (host_id, title) VALUES ('h', 'r') RETURNING id")
    drop = await conn.fetchval(
        """INSERT INTO drops (room_id, product_id, price_cents, quantity, per_buyer_limit,
                              starts_at, ends_at, created_by)
           VALUES ($1, $2, 100, 1, 1, now() - interval '11 days', now() - interval '10 days',
                   'h') RETURNING id""",
        room,
        product,
    )
    return int(
        await conn.fetchval(
            """INSERT INTO orders (drop_id, room_id, product_id, buyer_id, quantity,
                                   unit_price_cents, amount_cents, commission_bps, status,
                                   hold_expires_at, created_at, paid_at, delivered_at)
               VALUES ($1, $2, $3, 'b', 1, 100, 100, 1000, $4, now() - interval '10 days',
                       now() - interval '11 days', now() - interval '11 days',
                       CASE WHEN $5 THEN now() - interval '10 days' END)
               RETURNING id""",
            drop,
            room,
            product,
            "delivered" if deliver else "paid",
            deliver,
        )
    )
