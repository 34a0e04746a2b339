"""The double-entry commission ledger: open accounts, post balanced transactions, read balances.

Balances are never stored: an account's balance is the sum of its entries. The database refuses
unbalanced transactions, edits and deletions (see migration 0005); a posting is one call of the
`ledger_post` SQL function (migration 0007).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from core.db import Conn

TransactionKind = Literal[
    "accrue", "reverse", "confirm", "payout", "clawback", "review", "withdrawal"
]
AccountKind = Literal["pending", "payable", "commission_expense", "payouts", "withdrawal_fees"]


async def post(
    conn: Conn,
    *,
    kind: TransactionKind,
    key: str,
    distributor_id: int,
    entries: dict[AccountKind, int],
    order_id: int | None = None,
    payout_batch_id: int | None = None,
    refunded_total_cents: int | None = None,
) -> int | None:
    """Record one business event with its entries; None when `key` was already posted.

    Zero amounts are left out; a transaction with no entries still records that the event
    happened (a self-referred order's zero commission), so replays stay no-ops.
    """
    if sum(entries.values()) != 0:
        raise ValueError(f"unbalanced {kind} posting {entries}")
    moving = {k: v for k, v in entries.items() if v != 0}
    # one round trip: the transaction, its accounts opened if need be, its entries
    transaction_id = await conn.fetchval(
        "SELECT ledger_post($1, $2, $3, $4, $5, $6, $7::text[], $8::bigint[])",
        kind,
        key,
        distributor_id,
        order_id,
        payout_batch_id,
        refunded_total_cents,
        list(moving),
        list(moving.values()),
    )
    return None if transaction_id is None else int(transaction_id)


async def order_balances(conn: Conn, order_id: int) -> dict[str, int]:
    """What the ledger holds for one order: `pending`, `payable` and the sum per kind."""
    rows = await conn.fetch(
        """SELECT t.kind, a.kind AS account, sum(e.amount_cents) AS cents
           FROM ledger_transactions t
           JOIN ledger_entries e ON e.transaction_id = t.id
           JOIN ledger_accounts a ON a.id = e.account_id AND a.distributor_id IS NOT NULL
           WHERE t.order_id = $1
           GROUP BY t.kind, a.kind""",
        order_id,
    )
    out = dict.fromkeys(
        ("pending", "payable", "accrue", "reverse", "confirm", "clawback", "review"), 0
    )
    for r in rows:
        out[r["account"]] += int(r["cents"])
        if r["kind"] == "confirm":
            if r["account"] == "payable":
                out["confirm"] += int(r["cents"])
        else:
            out[r["kind"]] += int(r["cents"])
    return out


# One distributor's sums per (transaction kind, account kind); `fold_balances` reads them.
DISTRIBUTOR_SUMS = """
SELECT t.kind, a.kind AS account, sum(e.amount_cents)::bigint AS cents
FROM ledger_accounts a
JOIN ledger_entries e ON e.account_id = a.id
JOIN ledger_transactions t ON t.id = e.transaction_id
WHERE a.distributor_id = $1
GROUP BY t.kind, a.kind
"""


def fold_balances(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Account balances (`pending`, `payable`) and lifetime totals by transaction kind."""
    out = dict.fromkeys(
        ("pending", "payable", "accrued", "reversed", "confirmed", "clawed_back", "paid"), 0
    )
    for r in rows:
        cents = int(r["cents"])
        out[r["account"]] += cents
        match r["kind"], r["account"]:
            case "accrue", _:
                out["accrued"] += cents
            case "reverse" | "review", _:
                out["reversed"] -= cents
            case "confirm", "payable":
                out["confirmed"] += cents
            case "clawback", _:
                out["clawed_back"] -= cents
            case "payout" | "withdrawal", _:
                out["paid"] -= cents
    return out
