"""Distributors, tracked links, binding, single-level commissions and their ledger.

An order's attribution is decided when it is created, inside the statement that places it: the
SQL function attribution_credit_order (migration 0008), with the terms `credit_terms` gives.
Storefront then calls two order hooks inside its own transactions; they write attribution's
tables on the same connection and queue dashboard events on the same outbox:

    order_paid      when payment is confirmed: self-referral by payment instrument, the
                    review signals, then post the pending commission
    order_refunded  after `orders.refunded_cents` includes a refund: reverse or claw back

Both are idempotent per (order, event). Before a buy, storefront calls `screen_buyer` with
the request's `device_id`: the buyer's device is recorded, and under
`LIVESELL_SELF_REFERRAL=reject` a buy that would credit the buyer themself is refused.
`settle` confirms commissions whose return window has passed and `refresh_stats` publishes the
dashboards and leaderboards that moved (the worker runs both periodically); `run_payout` pays
approved withdrawals and confirmed balances.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from starlette.routing import BaseRoute

from attribution import commissions, reviews
from attribution.binding import CreditTerms, credit_terms
from attribution.commissions import settle
from attribution.devices import device_id, screen_buyer
from attribution.distributors import become_distributor, create_link, list_links
from attribution.errors import ReferralCodeNotFound
from attribution.payouts import batch_csv, batch_view, distributor_payouts, run_payout
from attribution.referrals import Referral, ReferralCode, lookup_referral_code
from attribution.refresh import REFRESH_INTERVAL_S, refresh_stats
from attribution.reservations import reservation_count, take_reservers
from attribution.stats import dashboard, leaderboard
from attribution.views import (
    DashboardView,
    LeaderboardView,
    LinkList,
    LinkView,
    PayoutBatchView,
    PayoutHistory,
)
from core.db import Conn
from core.events import Outbox
from core.loops import run_periodically
from core.resources import Resources
from core.settings import Settings

__all__ = [
    "CreditTerms",
    "DashboardView",
    "LeaderboardView",
    "LinkList",
    "LinkView",
    "PayoutBatchView",
    "PayoutHistory",
    "Referral",
    "ReferralCode",
    "ReferralCodeNotFound",
    "batch_csv",
    "batch_view",
    "become_distributor",
    "create_link",
    "credit_terms",
    "dashboard",
    "device_id",
    "distributor_payouts",
    "leaderboard",
    "list_links",
    "lookup_referral_code",
    "order_paid",
    "order_refunded",
    "refresh_stats",
    "reservation_count",
    "routes",
    "run_payout",
    "screen_buyer",
    "settle",
    "take_reservers",
    "worker_tasks",
]

SETTLE_INTERVAL_S = 30.0


def routes() -> list[BaseRoute]:
    from attribution.admin import admin_routes
    from attribution.api import attribution_routes

    return attribution_routes() + admin_routes()


def worker_tasks(res: Resources) -> list[Coroutine[Any, Any, None]]:
    """Background loops: confirm commissions once their return window has passed; publish the
    dashboards and leaderboards that moved."""
    return [
        run_periodically("attribution.settle", lambda: settle(res), SETTLE_INTERVAL_S),
        run_periodically("attribution.refresh", lambda: refresh_stats(res), REFRESH_INTERVAL_S),
    ]


async def order_paid(
    conn: Conn,
    outbox: Outbox,
    *,
    order_id: int,
    settings: Settings | None = None,
    payment_fingerprint: str | None = None,
) -> None:
    """In the payment transaction: record the payment instrument (a self-referral when the
    credited distributor paid with it too), open a review when the attribution looks
    suspicious (with `settings`, unless LIVESELL_REVIEW=off), then post the pending
    commission of a credited order."""
    await reviews.at_payment(
        conn, settings, order_id=order_id, payment_fingerprint=payment_fingerprint
    )
    await commissions.order_paid(conn, outbox, order_id=order_id)


async def order_refunded(conn: Conn, outbox: Outbox, *, order_id: int, refund_cents: int) -> None:
    """In the refund transaction, after `orders.refunded_cents` includes this refund: reverse
    (or, once confirmed, claw back) commission pro rata."""
    await commissions.order_refunded(conn, outbox, order_id=order_id, refund_cents=refund_cents)
