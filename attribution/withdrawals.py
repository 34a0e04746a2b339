"""Withdrawals (提现): a distributor asks for part of their confirmed balance; an admin approves
or rejects; a payout batch pays the approved ones.

    requested ──approve──▶ approved ──payout batch──▶ paid
        └──────reject────▶ rejected

A batch pays an approved withdrawal only while the payable balance covers it (`covered`): one
clawed back below it after approval waits for a later batch.

A request reserves its amount in `withdrawal_reserves` with one guarded UPDATE: it succeeds only
while reserved + amount ≤ the payable balance (and the balance is not negative: a clawback must
be made good first). Concurrent requests queue on that row, and each re-checks the guard against
what the one before it reserved, so together they can never reserve more than the balance. A
rejection gives the reservation back; paying posts a `withdrawal` ledger transaction (payable −
amount; the platform's payouts + net, withdrawal_fees + fee) and releases it.

The fee is `LIVESELL_WITHDRAWAL_FEE_CENTS` plus `LIVESELL_WITHDRAWAL_FEE_BPS` of the amount,
rounded to the nearest cent (halves up), and is taken from the amount: the distributor receives
amount − fee.
"""

from __future__ import annotations

from typing import Any, Literal

from attribution import ledger
from attribution.errors import (
    InsufficientBalance,
    WithdrawalDecided,
    WithdrawalNotFound,
    WithdrawalTooSmall,
)
from attribution.refresh import mark_dashboard
from attribution.views_admin import WithdrawalList, WithdrawalView
from core import webhooks
from core.db import Conn
from core.settings import Settings

Decision = Literal["approve", "reject"]

_PAYABLE = """
SELECT coalesce(sum(e.amount_cents), 0)::bigint
FROM ledger_accounts a JOIN ledger_entries e ON e.account_id = a.id
WHERE a.distributor_id = $1 AND a.kind = 'payable'
"""

# $1 distributor, $2 amount, $3 fee. The guard is re-checked against the row's latest version
# when another request updated it first (READ COMMITTED re-evaluates the WHERE clause).
_RESERVE = f"""
WITH balance AS ({_PAYABLE}), reserved AS (
    UPDATE withdrawal_reserves r SET reserved_cents = r.reserved_cents + $2
    FROM balance b(payable)
    WHERE r.distributor_id = $1 AND b.payable >= 0 AND r.reserved_cents + $2 <= b.payable
    RETURNING r.distributor_id
)
INSERT INTO withdrawals (distributor_id, amount_cents, fee_cents)
SELECT distributor_id, $2, $3 FROM reserved
RETURNING *
"""


def fee_of(amount_cents: int, settings: Settings) -> int:
    return settings.withdrawal_fee_cents + (amount_cents * settings.withdrawal_fee_bps + 5_000) // (
        10_000
    )


def _view(r: Any) -> WithdrawalView:
    return WithdrawalView(
        id=str(r["id"]),
        distributor_id=str(r["distributor_id"]),
        amount_cents=int(r["amount_cents"]),
        fee_cents=int(r["fee_cents"]),
        net_cents=int(r["amount_cents"]) - int(r["fee_cents"]),
        status=r["status"],
        requested_at=r["requested_at"],
        decided_at=r["decided_at"],
        decided_by=r["decided_by"],
        note=r["note"],
        paid_at=r["paid_at"],
        payout_batch_id=None if r["payout_batch_id"] is None else str(r["payout_batch_id"]),
    )


async def _balances(conn: Conn, distributor_id: int) -> tuple[int, int]:
    payable = int(await conn.fetchval(_PAYABLE, distributor_id))
    reserved = await conn.fetchval(
        "SELECT reserved_cents FROM withdrawal_reserves WHERE distributor_id = $1", distributor_id
    )
    return payable, int(reserved or 0)


async def request_withdrawal(
    conn: Conn, settings: Settings, distributor_id: int, amount_cents: int
) -> WithdrawalView:
    if amount_cents < settings.withdrawal_min_cents:
        raise WithdrawalTooSmall(settings.withdrawal_min_cents)
    fee = fee_of(amount_cents, settings)
    if fee >= amount_cents:
        raise WithdrawalTooSmall(fee + 1)
    await conn.execute(
        "INSERT INTO withdrawal_reserves (distributor_id) VALUES ($1) ON CONFLICT DO NOTHING",
        distributor_id,
    )
    row = await conn.fetchrow(_RESERVE, distributor_id, amount_cents, fee)
    if row is None:
        payable, reserved = await _balances(conn, distributor_id)
        raise InsufficientBalance(max(0, payable - reserved), payable)
    await mark_dashboard(conn, distributor_id)
    return _view(row)


async def my_withdrawals(
    conn: Conn, settings: Settings, distributor_id: int, limit: int = 50
) -> WithdrawalList:
    payable, reserved = await _balances(conn, distributor_id)
    rows = await conn.fetch(
        "SELECT * FROM withdrawals WHERE distributor_id = $1 ORDER BY id DESC LIMIT $2",
        distributor_id,
        limit,
    )
    return WithdrawalList(
        balance_cents=payable,
        reserved_cents=reserved,
        available_cents=max(0, payable - reserved),
        minimum_cents=settings.withdrawal_min_cents,
        fee_cents=settings.withdrawal_fee_cents,
        fee_bps=settings.withdrawal_fee_bps,
        withdrawals=[_view(r) for r in rows],
    )


async def list_withdrawals(conn: Conn, status: str, limit: int) -> list[WithdrawalView]:
    rows = await conn.fetch(
        "SELECT * FROM withdrawals WHERE status = $1 ORDER BY id LIMIT $2", status, limit
    )
    return [_view(r) for r in rows]


async def decide(
    conn: Conn, withdrawal_id: int, decision: Decision, note: str | None, admin: str
) -> WithdrawalView:
    """requested → approved, or → rejected (its reservation given back)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM withdrawals WHERE id = $1 FOR UPDATE", withdrawal_id
        )
        if row is None:
            raise WithdrawalNotFound(withdrawal_id)
        if row["status"] != "requested":
            raise WithdrawalDecided(withdrawal_id, row["status"])
        if decision == "reject":
            await conn.execute(
                """UPDATE withdrawal_reserves SET reserved_cents = reserved_cents - $2
                   WHERE distributor_id = $1""",
                row["distributor_id"],
                row["amount_cents"],
            )
        updated = await conn.fetchrow(
            """UPDATE withdrawals SET status = $2, decided_at = now(), decided_by = $3, note = $4
               WHERE id = $1 RETURNING *""",
            withdrawal_id,
            "approved" if decision == "approve" else "rejected",
            admin,
            note,
        )
        await mark_dashboard(conn, row["distributor_id"])
    return _view(updated)


async def approved_withdrawals(conn: Conn) -> list[Any]:
    """Inside a payout batch's transaction: the approved withdrawals it is to pay, locked."""
    return await conn.fetch(
        "SELECT * FROM withdrawals WHERE status = 'approved' ORDER BY id FOR UPDATE"
    )


async def covered(conn: Conn, rows: list[Any]) -> list[Any]:
    """Of the approved withdrawals `rows` (oldest first), those their distributor's payable
    balance still covers. A clawback after approval can leave a withdrawal uncovered: it is not
    paid with money the distributor no longer has, and waits, approved and reserved, for a batch
    after later commissions have made the balance good."""
    balances: dict[int, int] = {}
    payable: list[Any] = []
    for row in rows:
        distributor_id = int(row["distributor_id"])
        if distributor_id not in balances:
            balances[distributor_id] = int(await conn.fetchval(_PAYABLE, distributor_id))
        if balances[distributor_id] >= int(row["amount_cents"]):
            balances[distributor_id] -= int(row["amount_cents"])
            payable.append(row)
    return payable


def net_of(row: Any) -> int:
    return int(row["amount_cents"]) - int(row["fee_cents"])


async def pay_approved(conn: Conn, batch_id: int, rows: list[Any]) -> None:
    """Inside the payout batch's transaction: pay the approved withdrawals `rows`."""
    if rows:
        await conn.execute(
            "INSERT INTO ledger_accounts (distributor_id, kind) VALUES (NULL, 'withdrawal_fees') "
            "ON CONFLICT DO NOTHING"
        )
    for r in rows:
        amount, fee = int(r["amount_cents"]), int(r["fee_cents"])
        await ledger.post(
            conn,
            kind="withdrawal",
            key=f"withdrawal:{r['id']}",
            distributor_id=r["distributor_id"],
            entries={"payable": -amount, "payouts": amount - fee, "withdrawal_fees": fee},
        )
        await conn.execute(
            """UPDATE withdrawal_reserves SET reserved_cents = reserved_cents - $2
               WHERE distributor_id = $1""",
            r["distributor_id"],
            amount,
        )
        paid = await conn.fetchrow(
            """UPDATE withdrawals SET status = 'paid', paid_at = now(), payout_batch_id = $2
               WHERE id = $1
               RETURNING paid_at,
                         (SELECT user_id FROM distributors d WHERE d.id = distributor_id)""",
            r["id"],
            batch_id,
        )
        assert paid is not None
        await webhooks.enqueue(
            conn,
            "withdrawal.paid",
            f"withdrawal.paid:{r['id']}",
            {
                "withdrawal_id": str(r["id"]),
                "distributor_id": str(r["distributor_id"]),
                "distributor_user_id": paid["user_id"],
                "amount_cents": amount,
                "fee_cents": fee,
                "net_cents": amount - fee,
                "payout_batch_id": str(batch_id),
                "paid_at": paid["paid_at"],
            },
        )
        await mark_dashboard(conn, r["distributor_id"])


async def reserved_by_distributor(conn: Conn) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT distributor_id, reserved_cents FROM withdrawal_reserves WHERE reserved_cents > 0"
    )
    return {int(r["distributor_id"]): int(r["reserved_cents"]) for r in rows}
