"""An app configured for a real provider the way an operator configures it (environment
variables through load_settings), sharing the test servers, and the money checks its tests run
after every step."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from core.resources import Resources
from core.settings import Settings, load_settings
from livesell.app import create_app
from storefront import Shop
from tests.attribution.conftest import assert_ledger_invariants
from tests.conftest import TEST_SECRET, Servers


def provider_settings(servers: Servers, **payment_env: str) -> Settings:
    environ = {
        "DATABASE_URL": servers.pg.url,
        "REDIS_URL": servers.valkey.url,
        "LIVESELL_DATA_DIR": str(servers.root / "data"),
        "LIVESELL_SECRET": TEST_SECRET,
        "LIVESELL_DEV": "0",
        **payment_env,
    }
    return load_settings(environ=environ, dotenv=None)


@dataclass(frozen=True)
class ProviderApp:
    """The app's resources, its shop (whose `payments` is the configured provider) and a
    client of it."""

    res: Resources
    shop: Shop
    http: httpx.AsyncClient


@asynccontextmanager
async def provider_client(resources: Resources, settings: Settings) -> AsyncIterator[ProviderApp]:
    """An app with `settings`, on the test servers' connections."""
    res = dataclasses.replace(resources, settings=settings)
    shop = Shop(res)
    transport = httpx.ASGITransport(app=create_app(settings, res, shop), raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://livesell.test") as http:
            yield ProviderApp(res, shop, http)
            await shop.settled()
    finally:
        await shop.aclose()


async def money_is_straight(res: Resources, returned_at_provider: int) -> None:
    """What the orders say was refunded is what the payments took back, every cent of it has a
    refund request, the provider holds exactly the requests that did not fail, the payment
    state machine allows one live attempt per order and agrees with each order's status, and
    the ledger's invariants hold (every transaction balances, balances shown are the entries')."""
    await assert_ledger_invariants(res)
    async with res.pool.acquire() as conn:
        # an order is paid (or delivered, or refunded after paying) exactly when one of its
        # payments succeeded, and a held or expired order has none; its refunded cents are
        # that payment's
        disagreeing = await conn.fetch(
            """SELECT o.id, o.status, o.refunded_cents, p.status AS payment,
                      p.refunded_cents AS taken_back
               FROM orders AS o
               LEFT JOIN payments AS p
                 ON p.order_id = o.id AND p.status IN ('succeeded', 'refunded')
               WHERE (o.paid_at IS NULL) <> (p.id IS NULL)
                  OR (p.id IS NOT NULL AND p.refunded_cents <> o.refunded_cents)
                  OR (o.status IN ('held', 'expired') AND p.id IS NOT NULL)
                  OR (p.status = 'refunded' AND o.status <> 'refunded')"""
        )
        assert disagreeing == [], [dict(r) for r in disagreeing]
        orders = await conn.fetchval(
            "SELECT coalesce(sum(refunded_cents), 0) FROM orders WHERE paid_at IS NOT NULL"
        )
        payments = await conn.fetch(
            """SELECT p.id, p.status, p.refunded_cents,
                      (SELECT coalesce(sum(amount_cents), 0) FROM payment_refunds r
                       WHERE r.payment_id = p.id) AS requested,
                      (SELECT coalesce(sum(amount_cents), 0) FROM payment_refunds r
                       WHERE r.payment_id = p.id AND r.status <> 'failed') AS not_failed
               FROM payments AS p"""
        )
        live = await conn.fetchval(
            """SELECT count(*) FROM (SELECT order_id FROM payments
               WHERE status IN ('pending', 'succeeded') GROUP BY order_id HAVING count(*) > 1) x"""
        )
        unbalanced = await conn.fetch(
            "SELECT transaction_id FROM ledger_entries GROUP BY transaction_id"
            " HAVING sum(amount_cents) <> 0"
        )
    assert orders == sum(p["refunded_cents"] for p in payments), payments
    for p in payments:
        assert p["requested"] == p["refunded_cents"], dict(p)
    assert returned_at_provider == sum(p["not_failed"] for p in payments), payments
    assert live == 0 and unbalanced == []
