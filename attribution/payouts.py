"""Payout batches: pay the approved withdrawals, then every positive payable balance not set
aside for withdrawals, net of clawbacks; export as CSV.

A distributor whose payable balance is negative (a clawback after an earlier payout) is left out;
their next confirmed commissions fill the hole before anything is paid again.
"""

from __future__ import annotations

import csv
import io

from attribution import ledger, withdrawals
from attribution.errors import PayoutNotFound
from attribution.refresh import mark_dashboard
from attribution.views import PayoutBatchView, PayoutHistory, PayoutItem, PayoutRecord
from core.db import Conn
from core.resources import Resources

# Any fixed 64-bit number: payout batches are created one at a time, cluster-wide.
PAYOUT_LOCK_ID = 7_411_502_906_005

_PAYABLE = """
SELECT d.id, d.user_id, d.team, d.created_at, sum(e.amount_cents)::bigint AS balance_cents
FROM ledger_accounts a
JOIN ledger_entries e ON e.account_id = a.id
JOIN distributors d ON d.id = a.distributor_id
WHERE a.kind = 'payable'
GROUP BY d.id
HAVING sum(e.amount_cents) > 0
ORDER BY d.id
"""


async def run_payout(res: Resources, *, created_by: str) -> PayoutBatchView:
    """Create a payout batch paying every positive payable balance.

    Repeating it right away pays nothing (the balances are zero), and two runs never overlap:
    the second waits for the first and then finds nothing to pay.
    """
    async with res.pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PAYOUT_LOCK_ID)
            approved = await withdrawals.covered(conn, await withdrawals.approved_withdrawals(conn))
            reserved = await withdrawals.reserved_by_distributor(conn)
            sweep = [
                (row, int(row["balance_cents"]) - reserved.get(row["id"], 0))
                for row in await conn.fetch(_PAYABLE)
            ]
            sweep = [(row, amount) for row, amount in sweep if amount > 0]
            if not sweep and not approved:
                return PayoutBatchView(
                    id=None, created_at=None, created_by=created_by, total_cents=0, items=[]
                )
            batch = await conn.fetchrow(
                """INSERT INTO payout_batches (created_by, total_cents, items)
                   VALUES ($1, $2, $3) RETURNING id""",
                created_by,
                sum(amount for _, amount in sweep) + sum(map(withdrawals.net_of, approved)),
                len(sweep) + len(approved),
            )
            assert batch is not None
            await withdrawals.pay_approved(conn, batch["id"], approved)
            for row, amount in sweep:
                await ledger.post(
                    conn,
                    kind="payout",
                    key=f"payout:{batch['id']}:{row['id']}",
                    distributor_id=row["id"],
                    payout_batch_id=batch["id"],
                    entries={"payable": -amount, "payouts": amount},
                )
                await mark_dashboard(conn, row["id"])
            view = await batch_view(conn, batch["id"])
    return view


async def batch_view(conn: Conn, batch_id: int) -> PayoutBatchView:
    batch = await conn.fetchrow("SELECT * FROM payout_batches WHERE id = $1", batch_id)
    if batch is None:
        raise PayoutNotFound(batch_id)
    items = await conn.fetch(
        """SELECT d.id, d.user_id, d.team, -e.amount_cents AS amount_cents
           FROM ledger_transactions t
           JOIN ledger_entries e ON e.transaction_id = t.id
           JOIN ledger_accounts a ON a.id = e.account_id AND a.kind = 'payable'
           JOIN distributors d ON d.id = t.distributor_id
           WHERE t.payout_batch_id = $1
           UNION ALL
           SELECT d.id, d.user_id, d.team, w.amount_cents - w.fee_cents
           FROM withdrawals w JOIN distributors d ON d.id = w.distributor_id
           WHERE w.payout_batch_id = $1
           ORDER BY 1""",
        batch_id,
    )
    return PayoutBatchView(
        id=str(batch_id),
        created_at=batch["created_at"],
        created_by=batch["created_by"],
        total_cents=int(batch["total_cents"]),
        items=[
            PayoutItem(
                distributor_id=str(r["id"]),
                user_id=r["user_id"],
                team=r["team"],
                amount_cents=int(r["amount_cents"]),
            )
            for r in items
        ],
    )


async def distributor_payouts(
    conn: Conn, distributor_id: int, *, limit: int, before: int | None = None
) -> PayoutHistory:
    """What `distributor_id` was paid, batch by batch, newest first: at most `limit` payouts
    from batches older than `before` when given."""
    rows = await conn.fetch(
        """SELECT t.payout_batch_id, b.created_at, -e.amount_cents AS amount_cents
           FROM ledger_transactions t
           JOIN payout_batches b ON b.id = t.payout_batch_id
           JOIN ledger_entries e ON e.transaction_id = t.id
           JOIN ledger_accounts a ON a.id = e.account_id AND a.kind = 'payable'
           WHERE t.distributor_id = $1 AND t.kind = 'payout'
             AND ($2::bigint IS NULL OR t.payout_batch_id < $2)
           ORDER BY t.payout_batch_id DESC
           LIMIT $3""",
        distributor_id,
        before,
        limit + 1,
    )
    payouts = [
        PayoutRecord(
            batch_id=str(r["payout_batch_id"]),
            amount_cents=int(r["amount_cents"]),
            created_at=r["created_at"],
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return PayoutHistory(payouts=payouts, next_before=payouts[-1].batch_id if more else None)


def _cell(value: str) -> str:
    # spreadsheet formula injection: a user id like "=HYPERLINK(...)" must stay text
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def batch_csv(batch: PayoutBatchView) -> str:
    """The batch as CSV for the finance team: one row per distributor paid."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["batch_id", "created_at", "distributor_id", "user_id", "team",
                     "amount_cents", "amount"])  # fmt: skip
    for item in batch.items:
        writer.writerow(
            [
                batch.id,
                batch.created_at.isoformat() if batch.created_at else "",
                item.distributor_id,
                _cell(item.user_id),
                _cell(item.team or ""),
                item.amount_cents,
                f"{item.amount_cents // 100}.{item.amount_cents % 100:02d}",
            ]
        )
    return out.getvalue()
