"""The commission lifecycle of an order: accrue when paid, reverse or claw back on refund,
confirm once the order's return window has passed (`orders.return_window_ends_at`, fixed when
the order was delivered: this process's `return_window_s` plays no part).

Every step locks the order's attribution row first, so a refund and a settlement racing on the
same order serialise; every posting carries an idempotency key, so replays post nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import asyncpg

from attribution import ledger
from attribution.events import (
    CommissionConfirmed,
    CommissionPending,
    CommissionReversed,
)
from attribution.refresh import mark, mark_dashboard
from core import webhooks
from core.db import Conn
from core.events import Outbox
from core.resources import Resources

log = logging.getLogger("livesell.attribution")

SETTLE_BATCH = 200

LOCKED_ORDER = """
SELECT a.order_id, a.room_id, a.distributor_id, a.commission_bps,
       a.self_referral OR EXISTS (SELECT 1 FROM self_referral_matches m
                                  WHERE m.order_id = a.order_id) AS self_referral,
       coalesce(t.commission_cents, 0) AS per_unit_cents, r.status AS review,
       o.amount_cents, o.refunded_cents, o.quantity, o.refunded_units, o.delivered_at,
       o.return_window_ends_at, o.buyer_id, o.created_at AS placed_at,
       d.id, d.user_id, d.team, d.created_at
FROM order_attributions a
JOIN orders o ON o.id = a.order_id
LEFT JOIN distributors d ON d.id = a.distributor_id
LEFT JOIN order_commission_terms t ON t.order_id = a.order_id
LEFT JOIN order_reviews r ON r.order_id = a.order_id
WHERE a.order_id = $1
FOR UPDATE OF a
"""


def commission_of(
    amount_cents: int,
    commission_bps: int,
    self_referral: bool,
    *,
    units: int = 0,
    per_unit_cents: int = 0,
) -> int:
    """Rate × amount, rounded down to the cent, plus a fixed amount per unit; never more than
    the amount. Self-referred orders earn nothing."""
    if self_referral or amount_cents <= 0:
        return 0
    earned = amount_cents * commission_bps // 10_000 + per_unit_cents * max(units, 0)
    return min(earned, amount_cents)


def order_commission(row: asyncpg.Record, *, refunded_cents: int | None = None) -> int:
    """What a locked order (`LOCKED_ORDER`) earns net of its refunds: 0 when self-referred or
    rejected in review."""
    refunded = row["refunded_cents"] if refunded_cents is None else refunded_cents
    units = row["quantity"] - row["refunded_units"]
    return commission_of(
        row["amount_cents"] - refunded,
        row["commission_bps"],
        row["self_referral"] or row["review"] == "rejected",
        units=units,
        per_unit_cents=row["per_unit_cents"],
    )


async def _mark(conn: Conn, row: asyncpg.Record) -> None:
    """The distributor's dashboard moved; so did the room's leaderboard, unless self-referred."""
    await mark(
        conn,
        dashboard=row["distributor_id"],
        leaderboard=None if row["self_referral"] else row["room_id"],
    )


async def order_paid(conn: Conn, outbox: Outbox, *, order_id: int) -> None:
    """Post the pending commission of a credited order (once, however often called)."""
    row = await conn.fetchrow(LOCKED_ORDER, order_id)
    if row is None or row["distributor_id"] is None:
        return
    commission = order_commission(row)
    posted = await ledger.post(
        conn,
        kind="accrue",
        key=f"order:{order_id}:accrue",
        distributor_id=row["distributor_id"],
        order_id=order_id,
        entries={"pending": commission, "commission_expense": -commission},
    )
    if posted is None:
        return
    outbox.dashboard(
        row["user_id"],
        CommissionPending(
            order_id=str(order_id),
            room_id=str(row["room_id"]),
            amount_cents=row["amount_cents"],
            commission_bps=row["commission_bps"],
            commission_cents=commission,
            self_referral=row["self_referral"],
        ),
    )
    await _mark(conn, row)


async def order_refunded(conn: Conn, outbox: Outbox, *, order_id: int, refund_cents: int) -> None:
    """Reverse commission pro rata for a refund; after confirmation, claw it back instead.

    Call after `orders.refunded_cents` includes this refund: the cumulative refunded amount is
    the refund's identity, so replaying the same refund posts nothing.
    """
    row = await conn.fetchrow(LOCKED_ORDER, order_id)
    if row is None or row["distributor_id"] is None:
        return
    cumulative = row["refunded_cents"]
    if refund_cents > cumulative:
        raise RuntimeError(
            f"order {order_id}: order_refunded must run after orders.refunded_cents "
            f"includes the refund ({refund_cents} > {cumulative})"
        )
    if cumulative <= 0:
        return
    balances = await ledger.order_balances(conn, order_id)
    accrued = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ledger_transactions WHERE order_id = $1 AND kind = 'accrue')",
        order_id,
    )
    if not accrued:
        return  # never paid: nothing was credited, so nothing to take back
    confirmed = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ledger_transactions"
        " WHERE order_id = $1 AND kind = 'confirm')",
        order_id,
    )
    still_owed = (
        balances["accrue"] + balances["reverse"] + balances["clawback"] + balances["review"]
    )
    target = order_commission(row, refunded_cents=cumulative)
    taken = max(0, still_owed - target)
    source: ledger.AccountKind = "payable" if confirmed else "pending"
    posted = await ledger.post(
        conn,
        kind="clawback" if confirmed else "reverse",
        key=f"order:{order_id}:refund:{cumulative}",
        distributor_id=row["distributor_id"],
        order_id=order_id,
        refunded_total_cents=cumulative,
        entries={source: -taken, "commission_expense": taken},
    )
    if posted is None:
        return
    outbox.dashboard(
        row["user_id"],
        CommissionReversed(
            order_id=str(order_id),
            refund_cents=refund_cents,
            reversed_cents=taken,
            clawback=bool(confirmed),
        ),
    )
    await _mark(conn, row)


async def confirm_order(
    conn: Conn, outbox: Outbox, order_id: int, now: datetime
) -> asyncpg.Record | None:
    """Move the order's outstanding pending commission to payable, if its return window had
    ended by `now`.

    Returns the credited distributor's row when something was confirmed."""
    row = await conn.fetchrow(LOCKED_ORDER, order_id)
    if row is None or row["distributor_id"] is None:
        return None
    ends_at = row["return_window_ends_at"]
    if ends_at is None or ends_at > now:
        return None
    if row["review"] in ("open", "rejected"):
        return None  # under review: nothing confirms until an admin approves
    outstanding = (await ledger.order_balances(conn, order_id))["pending"]
    if outstanding <= 0:
        return None
    posted = await ledger.post(
        conn,
        kind="confirm",
        key=f"order:{order_id}:confirm",
        distributor_id=row["distributor_id"],
        order_id=order_id,
        entries={"pending": -outstanding, "payable": outstanding},
    )
    if posted is None:
        return None
    outbox.dashboard(
        row["user_id"], CommissionConfirmed(order_id=str(order_id), commission_cents=outstanding)
    )
    await webhooks.enqueue(
        conn,
        "commission.confirmed",
        f"commission.confirmed:{order_id}",
        {
            "order_id": str(order_id),
            "room_id": str(row["room_id"]),
            "distributor_id": str(row["distributor_id"]),
            "distributor_user_id": row["user_id"],
            "commission_cents": outstanding,
            "return_window_ended_at": ends_at,
        },
    )
    await mark_dashboard(conn, row["distributor_id"])
    return row


# Orders whose return window has passed while commission is still pending on them.
_DUE = """
SELECT o.id
FROM ledger_transactions t
JOIN orders o ON o.id = t.order_id
WHERE t.kind = 'accrue' AND o.return_window_ends_at <= $1
  AND NOT EXISTS (
      SELECT 1 FROM order_reviews r WHERE r.order_id = o.id AND r.status <> 'approved')
  AND NOT EXISTS (
      SELECT 1 FROM ledger_transactions c WHERE c.order_id = o.id AND c.kind = 'confirm')
  AND (SELECT coalesce(sum(e.amount_cents), 0)
       FROM ledger_transactions x
       JOIN ledger_entries e ON e.transaction_id = x.id
       JOIN ledger_accounts a ON a.id = e.account_id AND a.kind = 'pending'
       WHERE x.order_id = o.id) > 0
ORDER BY o.return_window_ends_at, o.id
LIMIT $2
"""


async def settle(res: Resources, now: datetime | None = None) -> int:
    """Confirm every commission whose order's return window had ended by `now` (default: the
    present); returns how many.

    Safe to run repeatedly and from several workers at once: each order is confirmed in its own
    transaction under its row lock, and the confirm posting is unique per order.
    """
    now = now or datetime.now(UTC)
    confirmed = 0
    while True:
        async with res.pool.acquire() as conn:
            due = [r["id"] for r in await conn.fetch(_DUE, now, SETTLE_BATCH)]
        progressed = 0
        for order_id in due:
            outbox = Outbox()
            async with res.pool.acquire() as conn:
                async with conn.transaction():
                    row = await confirm_order(conn, outbox, order_id, now)
            await outbox.flush(res.publisher)
            progressed += row is not None
        confirmed += progressed
        if len(due) < SETTLE_BATCH or progressed == 0:
            break
    if confirmed:
        log.info("settled %d commissions", confirmed)
    return confirmed
