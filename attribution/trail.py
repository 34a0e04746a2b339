"""The audit trail of one order's attribution: which click, which rule, which rate, what moved."""

from __future__ import annotations

from attribution.views import AttributionTrail, ClickRef, CommissionTrail, DistributorRef, Posting
from core.auth import Principal
from core.db import Conn
from core.errors import OrderNotFound

_SNAPSHOT = """
SELECT a.order_id, a.room_id, a.buyer_id, a.distributor_id, a.entry_id, a.rule,
       a.commission_bps, a.self_referral, a.decided_at,
       d.user_id AS distributor_user_id, d.team,
       e.created_at AS entry_at, e.source, l.code
FROM order_attributions a
LEFT JOIN distributors d ON d.id = a.distributor_id
LEFT JOIN room_entries e ON e.id = a.entry_id
LEFT JOIN links l ON l.id = e.link_id
WHERE a.order_id = $1
"""

_POSTINGS = """
SELECT t.kind, t.created_at,
       coalesce(sum(e.amount_cents) FILTER (WHERE a.kind = 'pending'), 0)::bigint AS pending,
       coalesce(sum(e.amount_cents) FILTER (WHERE a.kind = 'payable'), 0)::bigint AS payable
FROM ledger_transactions t
LEFT JOIN ledger_entries e ON e.transaction_id = t.id
LEFT JOIN ledger_accounts a ON a.id = e.account_id
WHERE t.order_id = $1
GROUP BY t.id
ORDER BY t.id
"""


async def order_trail(conn: Conn, order_id: int, caller: Principal) -> AttributionTrail:
    """The trail, for the buyer, the credited distributor and admins; anyone else gets 404."""
    row = await conn.fetchrow(_SNAPSHOT, order_id)
    if row is None:
        raise OrderNotFound(order_id)
    visible = (
        caller.is_admin
        or caller.user_id == row["buyer_id"]
        or caller.user_id == row["distributor_user_id"]
    )
    if not visible:
        raise OrderNotFound(order_id)
    postings = [
        Posting(
            kind=p["kind"],
            pending_cents=int(p["pending"]),
            payable_cents=int(p["payable"]),
            at=p["created_at"],
        )
        for p in await conn.fetch(_POSTINGS, order_id)
    ]
    commission = sum(p.pending_cents for p in postings if p.kind == "accrue")
    reversed_ = -sum(p.pending_cents for p in postings if p.kind == "reverse")
    confirmed = sum(p.payable_cents for p in postings if p.kind == "confirm")
    clawed_back = -sum(p.payable_cents for p in postings if p.kind == "clawback")
    pending = sum(p.pending_cents for p in postings)
    if commission == 0:
        state = "none"
    elif pending > 0:
        state = "pending"
    elif confirmed - clawed_back > 0:
        state = "confirmed"
    else:
        state = "reversed"
    distributor = None
    if row["distributor_id"] is not None:
        distributor = DistributorRef(
            id=str(row["distributor_id"]), user_id=row["distributor_user_id"], team=row["team"]
        )
    click = None
    if row["entry_id"] is not None:
        click = ClickRef(
            id=str(row["entry_id"]), at=row["entry_at"], link_code=row["code"], source=row["source"]
        )
    return AttributionTrail(
        order_id=str(order_id),
        room_id=str(row["room_id"]),
        buyer_id=row["buyer_id"],
        rule=row["rule"],
        distributor=distributor,
        click=click,
        commission_bps=row["commission_bps"],
        self_referral=row["self_referral"],
        decided_at=row["decided_at"],
        commission=CommissionTrail(
            state=state,  # type: ignore[arg-type]
            commission_cents=commission,
            reversed_cents=reversed_,
            confirmed_cents=confirmed,
            clawed_back_cents=clawed_back,
            pending_cents=pending,
        ),
        postings=postings,
    )
