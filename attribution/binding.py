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
_LAST = _CANDIDATE.format(direction="DESC")
_FIRST = _CANDIDATE.format(direction="ASC")


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

    Idempotent: a second call for the same order keeps the first decision.
    """
    since = placed_at - timedelta(seconds=settings.attribution_window_s)
    query = _LAST if settings.attribution == "last" else _FIRST
    entry = await conn.fetchrow(query, buyer_id, room_id, since, placed_at)
    if entry is None:
        distributor_id, entry_id, rule, self_referral = None, None, "none", False
    else:
        distributor_id, entry_id = entry["distributor_id"], entry["id"]
        rule = settings.attribution
        self_referral = entry["distributor_user_id"] == buyer_id
    await conn.execute(
        """INSERT INTO order_attributions
               (order_id, room_id, buyer_id, distributor_id, entry_id, rule, commission_bps,
                self_referral, decided_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (order_id) DO NOTHING""",
        order_id,
        room_id,
        buyer_id,
        distributor_id,
        entry_id,
        rule,
        commission_bps,
        self_referral,
        placed_at,
    )
    return distributor_id
