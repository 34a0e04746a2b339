"""Operator analytics (社群运营): a community's buyers and what they are worth, and a room's
funnel from viewers to refunds.

PostgreSQL adds up integers in one round trip; the ratios are derived here from those integers
(`community_from_totals`, sans-I/O), so any computation from the same history must agree to the
cent. "Orders" are paid orders (paid_at set) with paid_at in [from, to); with a team, only those
credited to the team's distributors (not self-referred). Money is net of refunds.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from attribution.stats import SELF_REFERRED
from attribution.views_admin import Cohort, CommunityView, Contribution, FunnelView
from core.db import Conn

# $1 team (NULL: everyone), $2 from (NULL: the beginning), $3 to (NULL: now and later)
_COMMUNITY = f"""
WITH credited AS (
    SELECT a.order_id, d.id AS distributor_id, d.user_id, d.team
    FROM order_attributions a
    JOIN distributors d ON d.id = a.distributor_id
    WHERE NOT {SELF_REFERRED}
), sel AS (
    SELECT o.id, o.buyer_id, o.paid_at, o.amount_cents - o.refunded_cents AS net_cents,
           o.refunded_cents, c.distributor_id, c.user_id, c.team
    FROM orders o
    LEFT JOIN credited c ON c.order_id = o.id
    WHERE o.paid_at IS NOT NULL
      AND ($2::timestamptz IS NULL OR o.paid_at >= $2)
      AND ($3::timestamptz IS NULL OR o.paid_at < $3)
      AND ($1::text IS NULL OR c.team = $1)
), per_buyer AS (
    SELECT buyer_id, count(*) AS orders, sum(net_cents) AS gmv_cents,
           min(paid_at) AS first_at, max(paid_at) AS last_at
    FROM sel GROUP BY buyer_id
), cohorts AS (
    SELECT to_char(first_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month, count(*) AS buyers,
           sum(orders)::bigint AS orders, sum(gmv_cents)::bigint AS gmv_cents
    FROM per_buyer GROUP BY 1
), per_distributor AS (
    SELECT distributor_id, min(user_id) AS name, count(*) AS orders,
           count(DISTINCT buyer_id) AS buyers, sum(net_cents)::bigint AS gmv_cents
    FROM sel WHERE distributor_id IS NOT NULL GROUP BY distributor_id
), per_team AS (
    SELECT team AS name, count(*) AS orders, count(DISTINCT buyer_id) AS buyers,
           sum(net_cents)::bigint AS gmv_cents
    FROM sel WHERE distributor_id IS NOT NULL GROUP BY team
)
SELECT
    (SELECT count(*) FROM distributors WHERE $1::text IS NULL OR team = $1) AS members,
    (SELECT count(*) FROM sel) AS orders,
    (SELECT coalesce(sum(net_cents), 0)::bigint FROM sel) AS gmv_cents,
    (SELECT coalesce(sum(refunded_cents), 0)::bigint FROM sel) AS refunded_cents,
    (SELECT count(*) FROM per_buyer) AS buyers,
    (SELECT count(*) FROM per_buyer WHERE orders >= 2) AS repeat_buyers,
    (SELECT coalesce(sum(orders - 1), 0)::bigint FROM per_buyer) AS gaps,
    (SELECT coalesce(sum((extract(epoch FROM last_at - first_at) * 1000000)::bigint), 0)::bigint
     FROM per_buyer) AS gap_us,
    (SELECT coalesce(json_agg(cohorts ORDER BY month), '[]') FROM cohorts) AS cohorts,
    (SELECT coalesce(json_agg(per_distributor ORDER BY gmv_cents DESC, distributor_id), '[]')
     FROM per_distributor) AS distributors,
    (SELECT coalesce(json_agg(per_team ORDER BY gmv_cents DESC, name NULLS LAST), '[]')
     FROM per_team) AS teams
"""


def community_from_totals(team: str | None, totals: Mapping[str, Any]) -> CommunityView:
    """The community view from its integer totals (`_COMMUNITY`'s row, cohorts and
    contributions already decoded into lists of dicts)."""
    buyers, orders, gmv = int(totals["buyers"]), int(totals["orders"]), int(totals["gmv_cents"])
    gaps, gap_us = int(totals["gaps"]), int(totals["gap_us"])

    def share(cents: int) -> int:
        return cents * 10_000 // gmv if gmv > 0 else 0

    return CommunityView(
        team=team,
        members=int(totals["members"]),
        buyers=buyers,
        orders=orders,
        gmv_cents=gmv,
        refunded_cents=int(totals["refunded_cents"]),
        repeat_buyers=int(totals["repeat_buyers"]),
        repeat_purchase_rate_bps=int(totals["repeat_buyers"]) * 10_000 // buyers if buyers else 0,
        purchase_frequency=round(orders / buyers, 3) if buyers else 0.0,
        average_order_value_cents=gmv // orders if orders else 0,
        avg_repurchase_gap_s=gap_us // (gaps * 1_000_000) if gaps else None,
        gmv_per_buyer_cents=gmv // buyers if buyers else 0,
        cohorts=[
            Cohort(
                month=c["month"],
                buyers=int(c["buyers"]),
                orders=int(c["orders"]),
                gmv_cents=int(c["gmv_cents"]),
                ltv_cents=int(c["gmv_cents"]) // int(c["buyers"]),
            )
            for c in totals["cohorts"]
        ],
        distributors=[
            Contribution(
                id=str(d["distributor_id"]),
                name=d["name"],
                orders=int(d["orders"]),
                buyers=int(d["buyers"]),
                gmv_cents=int(d["gmv_cents"]),
                share_bps=share(int(d["gmv_cents"])),
            )
            for d in totals["distributors"]
        ],
        teams=[
            Contribution(
                id=None,
                name=t["name"],
                orders=int(t["orders"]),
                buyers=int(t["buyers"]),
                gmv_cents=int(t["gmv_cents"]),
                share_bps=share(int(t["gmv_cents"])),
            )
            for t in totals["teams"]
        ],
    )


async def community(
    conn: Conn, *, team: str | None, since: datetime | None, until: datetime | None
) -> CommunityView:
    row = await conn.fetchrow(_COMMUNITY, team, since, until)
    assert row is not None
    totals = dict(row)
    for name in ("cohorts", "distributors", "teams"):
        totals[name] = msgspec.json.decode(row[name])
    return community_from_totals(team, totals)


def community_csv(view: CommunityView) -> str:
    """One row per figure: section, name, metric, value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "name", "metric", "value"])
    scalars = msgspec.to_builtins(view)
    for metric, value in scalars.items():
        if not isinstance(value, list):
            writer.writerow(["community", _cell(view.team or ""), metric, value])
    for cohort in view.cohorts:
        for metric in ("buyers", "orders", "gmv_cents", "ltv_cents"):
            writer.writerow(["cohort", cohort.month, metric, getattr(cohort, metric)])
    for section, rows in (("distributor", view.distributors), ("team", view.teams)):
        for row in rows:
            for metric in ("orders", "buyers", "gmv_cents", "share_bps"):
                writer.writerow([section, _cell(row.name or ""), metric, getattr(row, metric)])
    return out.getvalue()


_FUNNEL = """
SELECT (SELECT count(DISTINCT visitor) FROM room_entries WHERE room_id = $1) AS viewers,
       (SELECT count(*) FROM room_entries WHERE room_id = $1 AND link_id IS NOT NULL)
           AS link_clicks,
       count(DISTINCT buyer_id) AS buyers,
       count(*) FILTER (WHERE paid_at IS NOT NULL) AS paid,
       count(*) FILTER (WHERE refunded_cents > 0) AS refunded,
       (SELECT count(*) FROM coupon_claims k JOIN coupons c ON c.id = k.coupon_id
        WHERE c.room_id = $1) AS coupon_claims
FROM orders WHERE room_id = $1
"""


async def funnel(conn: Conn, room_id: int, chat_posters: int) -> FunnelView:
    """The room's funnel from PostgreSQL, with `chat_posters` from the room's chat (distinct
    users whose messages it accepted, a HyperLogLog in Redis: core.events.chat_posters_key)."""
    row = await conn.fetchrow(_FUNNEL, room_id)
    assert row is not None
    return FunnelView(
        room_id=str(room_id),
        viewers=int(row["viewers"]),
        link_clicks=int(row["link_clicks"]),
        chat_posters=chat_posters,
        coupon_claims=int(row["coupon_claims"]),
        buyers=int(row["buyers"]),
        paid=int(row["paid"]),
        refunded=int(row["refunded"]),
    )


def funnel_csv(view: FunnelView) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["room_id", "stage", "count"])
    for stage, value in msgspec.to_builtins(view).items():
        if stage != "room_id":
            writer.writerow([view.room_id, stage, value])
    return out.getvalue()


def _cell(value: str) -> str:
    # spreadsheet formula injection: a team like "=HYPERLINK(...)" must stay text
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
