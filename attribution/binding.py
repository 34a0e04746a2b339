"""Which distributor an order credits: decided once, when the order is created."""

from __future__ import annotations

from datetime import datetime, timedelta

from attribution.sql import Conn
from core.settings import Settings

# The buyer's link entries into the room within the window before the order, oldest or newest
# first. Only entries made by the identified buyer bind (anonymous clicks count as visits).
_CANDIDATE = """
SELECT e.id, e.distributor_id, d.user_id AS distributor_user_id
FROM room_entries e JOIN distributors d ON d.id = e.distributor_id
WHERE e.user_id = $1 AND e.room_id = $2 AND e.link_id IS NOT NULL
  AND e.created_at > $3 AND e.created_at <= $4
ORDER BY e.created_at {direction}, e.id {direction}
LIMIT 1
"""

# Decide and store in one statement: the candidate entry (if any) and the attribution row.
# $1 buyer, $2 room, $3 window start, $4 order time (the decision time), $5 order, $6 the rule
# in force, $7 the order's commission rate.
_CREDIT = """
WITH entry AS ({candidate})
INSERT INTO order_attributions
    (order_id, room_id, buyer_id, distributor_id, entry_id, rule, commission_bps, self_referral,
     decided_at)
SELECT $5, $2, $1, entry.distributor_id, entry.id,
       CASE WHEN entry.id IS NULL THEN 'none' ELSE $6 END, $7,
       coalesce(entry.distributor_user_id = $1, false), $4
FROM (VALUES (1)) AS one LEFT JOIN entry ON true
ON CONFLICT (order_id) DO NOTHING
RETURNING distributor_id
"""
_CREDIT_LAST = _CREDIT.format(candidate=_CANDIDATE.format(direction="DESC"))
_CREDIT_FIRST = _CREDIT.format(candidate=_CANDIDATE.format(direction="ASC"))


async def credit_order(
    conn: Conn,
    settings: Settings,
    *,
    order_id: int,
    room_id: int,
    buyer_id: str,
    commission_bps: int,
    placed_at: datetime,
) -> int | None:
    """Snapshot the order's attribution; returns the credited distributor id (None: no credit).

    Idempotent: a second call for the same order keeps (and returns) the first decision.
    """
    since = placed_at - timedelta(seconds=settings.attribution_window_s)
    query = _CREDIT_LAST if settings.attribution == "last" else _CREDIT_FIRST
    row = await conn.fetchrow(
        query, buyer_id, room_id, since, placed_at, order_id, settings.attribution, commission_bps
    )
    if row is None:  # decided before
        return await conn.fetchval(
            "SELECT distributor_id FROM order_attributions WHERE order_id = $1", order_id
        )
    return row["distributor_id"]
