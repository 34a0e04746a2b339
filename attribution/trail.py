"""The audit trail of one order's attribution: which click, which rule, which rate, what moved."""

from __future__ import annotations

from attribution.views import (
    AttributionTrail,
    ClickRef,
    CommissionTerms,
    CommissionTrail,
    DistributorRef,
    Posting,
    ReviewRef,
)
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
SELECT t.kind, t.created_at, min(n.note) AS note,
       coalesce(sum(e.amount_cents) FILTER (WHERE a.kind = 'pending'), 0)::bigint AS pending,
       coalesce(sum(e.amount_cents) FILTER (WHERE a.kind = 'payable'), 0)::bigint AS payable
FROM ledger_transactions t
LEFT JOIN ledger_entries e ON e.transaction_id = t.id
LEFT JOIN ledger_accounts a ON a.id = e.account_id
LEFT JOIN ledger_notes n ON n.transaction_id = t.id
WHERE t.order_id = $1
GROUP BY t.id
ORDER BY t.id
"""


_EXTRA = """
SELECT (SELECT coalesce(array_agg(reason ORDER BY reason), '{}') FROM self_referral_matches
        WHERE order_id = $1) AS reasons,
       r.status AS review_status, r.reasons AS review_reasons, r.decided_by, r.note AS review_note,
       t.source, t.base_bps, t.commission_cents AS per_unit, t.tier, t.bonus_bps
FROM (VALUES (1)) AS one
LEFT JOIN order_reviews r ON r.order_id = $1
LEFT JOIN order_commission_terms t ON t.order_id = $1
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
            note=p["note"],
        )
        for p in await conn.fetch(_POSTINGS, order_id)
    ]
    commission = sum(p.pending_cents for p in postings if p.kind == "accrue")
    reversed_ = -sum(p.pending_cents for p in postings if p.kind == "reverse")
    confirmed = sum(p.payable_cents for p in postings if p.kind == "confirm")
    clawed_back = -sum(p.payable_cents for p in postings if p.kind == "clawback")
    pending = sum(p.pending_cents for p in postings)
    extra = await conn.fetchrow(_EXTRA, order_id)
    assert extra is not None
    review = None
    if extra["review_status"] is not None:
        review = ReviewRef(
            status=extra["review_status"],
            reasons=list(extra["review_reasons"]),
            decided_by=extra["decided_by"],
            note=extra["review_note"],
        )
    terms = None
    if extra["source"] is not None:
        terms = CommissionTerms(
            source=extra["source"],
            base_bps=extra["base_bps"],
            commission_cents_per_unit=int(extra["per_unit"]),
            tier=extra["tier"],
            bonus_bps=extra["bonus_bps"],
        )
    if commission == 0:
        state = "none"
    elif pending > 0 and review is not None and review.status == "open":
        state = "under_review"
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
        self_referral=row["self_referral"] or bool(extra["reasons"]),
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
        self_referral_reasons=list(extra["reasons"]),
        terms=terms,
        review=review,
    )
