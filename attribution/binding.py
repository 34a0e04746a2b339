"""Which distributor an order credits: decided once, when the order is created.

The decision is the SQL function `attribution_credit_order` (migration 0008): the buyer's link
entry into the room within the window before the order, the newest under the `last` rule, the
oldest under `first`; only entries made by the identified buyer bind (anonymous clicks count as
visits). `credit_order` runs it on its own; storefront's statement that places an order runs it
inside, with the terms `credit_terms` gives, so that an order and its attribution are one
round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from core.db import Conn
from core.settings import Settings


@dataclass(frozen=True, slots=True)
class CreditTerms:
    """What `attribution_credit_order` needs besides the order: the rule and the window."""

    rule: str
    window: timedelta


def credit_terms(settings: Settings) -> CreditTerms:
    return CreditTerms(settings.attribution, timedelta(seconds=settings.attribution_window_s))


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
    terms = credit_terms(settings)
    credited: int | None = await conn.fetchval(
        "SELECT attribution_credit_order($1, $2, $3, $4, $5, $6, $7)",
        buyer_id,
        room_id,
        placed_at - terms.window,
        placed_at,
        order_id,
        terms.rule,
        commission_bps,
    )
    return credited
