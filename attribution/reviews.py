"""What a payment tells about an order's attribution, and the review queue.

When a credited order is paid, `at_payment` (in the payment's transaction, before the
commission is posted):

- records the payment instrument's fingerprint (when the provider reports one) for the buyer,
  and a `payment` self-referral match when the credited distributor paid with it too: the
  commission is then 0;
- unless `LIVESELL_REVIEW=off`, looks for suspicious attribution and, when it finds any, opens
  a review: the commission is posted as pending but stays `under_review` (it neither confirms
  nor pays) until an admin approves (it goes on as any other) or rejects (it is taken back).

Signals, every threshold a setting (`LIVESELL_REVIEW_*`):

- `device_burst`: the click that bound the order came from a device that clicked the
  distributor's links at least `review_device_clicks` times within `review_window_s` before
  the order. An entry without a device id has no device signal: never flagged for lacking one.
- `address_burst`: the same from one client address, with a threshold far above what carrier
  NAT explains (`review_address_clicks`); a shared address alone is never a self-referral.
- `conversion`: the distributor's buyers per visitor in the room is more than
  `review_conversion_factor` times the rest of the room's, smoothed as (buyers + 1) /
  (visitors + 1), once both sides have at least `review_min_visitors` visitors. The counts
  are the room's as counted at most `review_counts_s` seconds before (`_room_counts`): a
  payment in a big room reads two rows rather than counting every entry of it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from attribution import ledger
from attribution.commissions import LOCKED_ORDER, confirm_order
from attribution.errors import ReviewDecided, ReviewNotFound
from attribution.refresh import mark_dashboard
from attribution.views_admin import ReviewList, ReviewView
from core.db import Conn
from core.events import Outbox
from core.resources import Resources
from core.settings import Settings

Decision = Literal["approve", "reject"]

_FINGERPRINT = """
WITH seen AS (
    INSERT INTO payment_fingerprints (user_id, fingerprint)
    SELECT buyer_id, $2 FROM orders WHERE id = $1
    ON CONFLICT DO NOTHING
)
INSERT INTO self_referral_matches (order_id, reason, detail)
SELECT a.order_id, 'payment', $2
FROM order_attributions a
JOIN distributors d ON d.id = a.distributor_id
JOIN payment_fingerprints f ON f.user_id = d.user_id AND f.fingerprint = $2
WHERE a.order_id = $1 AND d.user_id <> a.buyer_id
ON CONFLICT DO NOTHING
"""

# $1 order, $2 window, $3 device clicks that flag, $4 address clicks that flag: the order's
# entry and its bursts, each counted only up to its threshold (an index range of at most that
# many entries: a busy shared address costs no more than the threshold to judge)
_SIGNALS = """
WITH a AS (
    SELECT a.order_id, a.room_id, a.distributor_id, o.created_at AS placed_at,
           e.device_id, e.client_addr
    FROM order_attributions a
    JOIN orders o ON o.id = a.order_id
    JOIN room_entries e ON e.id = a.entry_id
    WHERE a.order_id = $1
)
SELECT a.room_id, a.distributor_id, a.device_id, a.client_addr,
       (SELECT count(*) FROM (
            SELECT 1 FROM room_entries x
            WHERE x.distributor_id = a.distributor_id AND x.link_id IS NOT NULL
              AND x.device_id = a.device_id
              AND x.created_at > a.placed_at - $2::interval AND x.created_at <= a.placed_at
            LIMIT $3) AS burst
       ) AS device_clicks,
       (SELECT count(*) FROM (
            SELECT 1 FROM room_entries x
            WHERE x.distributor_id = a.distributor_id AND x.link_id IS NOT NULL
              AND x.client_addr = a.client_addr
              AND x.created_at > a.placed_at - $2::interval AND x.created_at <= a.placed_at
            LIMIT $4) AS burst
       ) AS address_clicks
FROM a
"""

# $1 room: count it again (migration 0022 says what each count is), after its distributor rows
# are deleted (one statement could not delete and insert the same keys). Each visitor's and
# each buyer's set of distributors, once; then per distributor how many it brought, and alone.
_RECOUNT = """
WITH v AS (
    SELECT visitor, array_agg(DISTINCT coalesce(distributor_id, 0)) AS ds
    FROM room_entries WHERE room_id = $1 GROUP BY visitor
), b AS (
    SELECT o.buyer_id, array_agg(DISTINCT coalesce(y.distributor_id, 0)) AS ds
    FROM order_attributions y JOIN orders o ON o.id = y.order_id
    WHERE y.room_id = $1 AND o.paid_at IS NOT NULL GROUP BY o.buyer_id
), vd AS (
    SELECT d, count(*) AS n, count(*) FILTER (WHERE cardinality(ds) = 1) AS only_n
    FROM v, unnest(ds) AS d GROUP BY d
), bd AS (
    SELECT d, count(*) AS n, count(*) FILTER (WHERE cardinality(ds) = 1) AS only_n
    FROM b, unnest(ds) AS d GROUP BY d
), room AS (
    INSERT INTO review_room_counts (room_id, counted_at, visitors, buyers)
    VALUES ($1, now(), (SELECT count(*) FROM v), (SELECT count(*) FROM b))
    ON CONFLICT (room_id) DO UPDATE
        SET counted_at = EXCLUDED.counted_at, visitors = EXCLUDED.visitors,
            buyers = EXCLUDED.buyers
    RETURNING room_id
)
INSERT INTO review_distributor_counts
    (room_id, distributor_id, visitors, only_visitors, buyers, only_buyers)
SELECT (SELECT room_id FROM room), coalesce(vd.d, bd.d), coalesce(vd.n, 0),
       coalesce(vd.only_n, 0), coalesce(bd.n, 0), coalesce(bd.only_n, 0)
FROM vd FULL JOIN bd ON bd.d = vd.d
"""

# $1 room, $2 distributor: what the conversion signal compares
_COUNTS = """
SELECT coalesce(d.visitors, 0) AS visitors,
       r.visitors - coalesce(d.only_visitors, 0) AS room_visitors,
       coalesce(d.buyers, 0) AS buyers,
       r.buyers - coalesce(d.only_buyers, 0) AS room_buyers
FROM review_room_counts r
LEFT JOIN review_distributor_counts d ON d.room_id = r.room_id AND d.distributor_id = $2
WHERE r.room_id = $1
"""

# the advisory lock class of "counting a room again" (its object: the room id, folded to 31 bits)
_RECOUNT_LOCK = 0x5245


async def _room_counts(
    conn: Conn, room_id: int, distributor_id: int, max_age_s: int
) -> dict[str, int]:
    """The conversion signal's counts for this distributor in this room, counted again when
    older than `max_age_s` by the one payment that takes the room's lock (the others read what
    is there: a few seconds behind, never a queue); zeros while nobody has counted it yet."""
    stale = await conn.fetchval(
        "SELECT counted_at < now() - make_interval(secs => $2) FROM review_room_counts"
        " WHERE room_id = $1",
        room_id,
        max_age_s,
    )
    if stale is not False and await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock($1, $2)", _RECOUNT_LOCK, room_id % 2_147_483_647
    ):
        await conn.execute("DELETE FROM review_distributor_counts WHERE room_id = $1", room_id)
        await conn.execute(_RECOUNT, room_id)
    row = await conn.fetchrow(_COUNTS, room_id, distributor_id)
    if row is None:
        return {"visitors": 0, "room_visitors": 0, "buyers": 0, "room_buyers": 0}
    return {name: int(value) for name, value in row.items()}


def review_reasons(signals: dict[str, Any], settings: Settings) -> list[str]:
    """Which signals pass their thresholds (sans-I/O: `signals` is one row of `_SIGNALS` with
    the room's counts)."""
    reasons = []
    if signals["device_id"] is not None and signals["device_clicks"] >= (
        settings.review_device_clicks
    ):
        reasons.append("device_burst")
    if signals["client_addr"] is not None and signals["address_clicks"] >= (
        settings.review_address_clicks
    ):
        reasons.append("address_burst")
    visitors, room_visitors = signals["visitors"], signals["room_visitors"]
    enough = min(visitors, room_visitors) >= settings.review_min_visitors
    if enough and signals["buyers"] * (room_visitors + 1) > (
        settings.review_conversion_factor * (signals["room_buyers"] + 1) * visitors
    ):
        reasons.append("conversion")
    return reasons


async def at_payment(
    conn: Conn, settings: Settings | None, *, order_id: int, payment_fingerprint: str | None
) -> None:
    """In the payment's transaction, before the commission posts: self-referral by payment
    instrument, then the review signals (see the module's docstring)."""
    if payment_fingerprint:
        await conn.execute(_FINGERPRINT, order_id, payment_fingerprint)
    if settings is None or not settings.review:
        return
    row = await conn.fetchrow(
        _SIGNALS,
        order_id,
        timedelta(seconds=settings.review_window_s),
        settings.review_device_clicks,
        settings.review_address_clicks,
    )
    if row is None:
        return  # credits nobody
    self_referred = await conn.fetchval(
        """SELECT a.self_referral OR EXISTS (SELECT 1 FROM self_referral_matches m
                                             WHERE m.order_id = a.order_id)
           FROM order_attributions a WHERE a.order_id = $1""",
        order_id,
    )
    if self_referred:
        return  # earns nothing anyway: nothing to review
    signals = dict(row)
    signals.update(
        await _room_counts(
            conn, signals.pop("room_id"), signals["distributor_id"], settings.review_counts_s
        )
    )
    reasons = review_reasons(signals, settings)
    if not reasons:
        return
    await conn.execute(
        """INSERT INTO order_reviews (order_id, distributor_id, reasons, signals)
           VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (order_id) DO NOTHING""",
        order_id,
        signals.pop("distributor_id"),
        reasons,
        msgspec.json.encode(signals).decode(),
    )


_REVIEWS = """
SELECT r.order_id, r.distributor_id, d.user_id AS distributor_user_id, r.reasons, r.signals,
       r.status, r.flagged_at, r.decided_at, r.decided_by, r.note,
       o.room_id, o.buyer_id, o.amount_cents,
       coalesce((SELECT sum(e.amount_cents) FROM ledger_transactions t
                 JOIN ledger_entries e ON e.transaction_id = t.id
                 JOIN ledger_accounts ac ON ac.id = e.account_id AND ac.kind = 'pending'
                 WHERE t.order_id = r.order_id), 0)::bigint AS pending_cents
FROM order_reviews r
JOIN orders o ON o.id = r.order_id
JOIN distributors d ON d.id = r.distributor_id
"""


def _view(r: Any) -> ReviewView:
    return ReviewView(
        order_id=str(r["order_id"]),
        room_id=str(r["room_id"]),
        buyer_id=r["buyer_id"],
        distributor_id=str(r["distributor_id"]),
        distributor_user_id=r["distributor_user_id"],
        amount_cents=int(r["amount_cents"]),
        commission_cents=int(r["pending_cents"]),
        reasons=list(r["reasons"]),
        signals=msgspec.json.decode(r["signals"]),
        status=r["status"],
        flagged_at=r["flagged_at"],
        decided_at=r["decided_at"],
        decided_by=r["decided_by"],
        note=r["note"],
    )


async def list_reviews(conn: Conn, status: str, limit: int) -> ReviewList:
    rows = await conn.fetch(
        _REVIEWS + " WHERE r.status = $1 ORDER BY r.flagged_at, r.order_id LIMIT $2",
        status,
        limit,
    )
    return ReviewList(reviews=[_view(r) for r in rows])


async def decide(
    res: Resources, *, order_id: int, decision: Decision, note: str | None, admin: str
) -> ReviewView:
    """An admin's decision on a flagged order, final. Approve: the commission goes on as any
    other (and confirms now if its return window has passed). Reject: the commission still
    pending is taken back. The decision and its note are in the ledger and the audit trail."""
    outbox = Outbox()
    now = datetime.now(UTC)
    async with res.pool.acquire() as conn, conn.transaction():
        # the attribution row first: the lock every commission step takes
        order = await conn.fetchrow(LOCKED_ORDER, order_id)
        review = await conn.fetchrow(
            "SELECT status FROM order_reviews WHERE order_id = $1 FOR UPDATE", order_id
        )
        if order is None or review is None:
            raise ReviewNotFound(order_id)
        if review["status"] != "open":
            raise ReviewDecided(order_id, review["status"])
        status = "approved" if decision == "approve" else "rejected"
        await conn.execute(
            """UPDATE order_reviews SET status = $2, decided_at = $3, decided_by = $4, note = $5
               WHERE order_id = $1""",
            order_id,
            status,
            now,
            admin,
            note,
        )
        taken = 0
        if decision == "reject":
            taken = max(0, (await ledger.order_balances(conn, order_id))["pending"])
        txn = await ledger.post(
            conn,
            kind="review",
            key=f"order:{order_id}:review",
            distributor_id=order["distributor_id"],
            order_id=order_id,
            entries={"pending": -taken, "commission_expense": taken},
        )
        if txn is not None:
            await conn.execute(
                "INSERT INTO ledger_notes (transaction_id, author, note) VALUES ($1, $2, $3)",
                txn,
                admin,
                f"{status}: {note}" if note else status,
            )
        if decision == "approve":
            await confirm_order(conn, outbox, order_id, now)
        await mark_dashboard(conn, order["distributor_id"])
        row = await conn.fetchrow(_REVIEWS + " WHERE r.order_id = $1", order_id)
    await outbox.flush(res.publisher)
    return _view(row)
