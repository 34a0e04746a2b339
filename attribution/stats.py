"""Distributor dashboards (with community metrics) and room leaderboards, from PostgreSQL.

"Credited orders" below: paid orders (paid_at set) whose attribution names the distributor, not
self-referred and not fully refunded; their value is the amount net of refunds. A self-referral is
an order flagged at placement (account, device) or matched later (payment instrument, in
`self_referral_matches`): `SELF_REFERRED`, the same test the operator analytics use.
"""

from __future__ import annotations

import asyncpg
import msgspec

from attribution.ledger import DISTRIBUTOR_SUMS, fold_balances
from attribution.views import (
    CommissionTotals,
    CommunityMetrics,
    DashboardView,
    DistributorRank,
    LeaderboardView,
    TeamRank,
)
from core.db import Conn

LEADERBOARD_SIZE = 20
SECONDS_PER_DAY = 86_400

# `a` is the order's order_attributions row
SELF_REFERRED = (
    "(a.self_referral OR EXISTS (SELECT 1 FROM self_referral_matches m"
    " WHERE m.order_id = a.order_id))"
)

# Everything on the dashboard in one round trip; the ledger sums come back as a JSON array.
_DASHBOARD = f"""
WITH credited AS (
    SELECT o.buyer_id, o.amount_cents - o.refunded_cents AS net_cents, o.paid_at
    FROM order_attributions a JOIN orders o ON o.id = a.order_id
    WHERE a.distributor_id = $1 AND NOT {SELF_REFERRED}
      AND o.paid_at IS NOT NULL AND o.refunded_cents < o.amount_cents
), per_buyer AS (
    SELECT buyer_id, count(*) AS orders, sum(net_cents) AS gmv_cents,
           min(paid_at) AS first_at, max(paid_at) AS last_at
    FROM credited GROUP BY buyer_id
), money AS ({DISTRIBUTOR_SUMS})
SELECT count(*) AS buyers,
       coalesce(sum(orders), 0)::bigint AS orders,
       coalesce(sum(gmv_cents), 0)::bigint AS gmv_cents,
       count(*) FILTER (WHERE orders >= 2) AS repeat_buyers,
       avg(extract(epoch FROM last_at - first_at) / (orders - 1))
           FILTER (WHERE orders >= 2)::float8 AS avg_gap_s,
       (SELECT count(*) FROM order_attributions a JOIN orders o ON o.id = a.order_id
        WHERE a.distributor_id = $1 AND {SELF_REFERRED} AND o.paid_at IS NOT NULL)
           AS self_referrals,
       (SELECT count(*) FROM room_entries WHERE distributor_id = $1) AS clicks,
       (SELECT count(DISTINCT visitor) FROM room_entries WHERE distributor_id = $1) AS visitors,
       (SELECT coalesce(json_agg(money), '[]') FROM money) AS money
FROM per_buyer
"""


async def dashboard(conn: Conn, distributor: asyncpg.Record) -> DashboardView:
    """The numbers on a distributor's screen; `distributor` is their `distributors` row."""
    distributor_id = distributor["id"]
    stats = await conn.fetchrow(_DASHBOARD, distributor_id)
    assert stats is not None
    money = fold_balances(msgspec.json.decode(stats["money"]))
    buyers, orders, gmv = int(stats["buyers"]), int(stats["orders"]), int(stats["gmv_cents"])
    repeat = int(stats["repeat_buyers"])
    gap_s = stats["avg_gap_s"]
    community = CommunityMetrics(
        repeat_buyers=repeat,
        repeat_buyer_rate_bps=repeat * 10_000 // buyers if buyers else 0,
        average_order_value_cents=gmv // orders if orders else 0,
        purchase_frequency=round(orders / buyers, 2) if buyers else 0.0,
        per_buyer_value_cents=gmv // buyers if buyers else 0,
        avg_days_between_purchases=(
            None if gap_s is None else round(float(gap_s) / SECONDS_PER_DAY, 2)
        ),
    )
    return DashboardView(
        id=str(distributor_id),
        user_id=distributor["user_id"],
        team=distributor["team"],
        clicks=int(stats["clicks"]),
        visitors=int(stats["visitors"]),
        buyers=buyers,
        orders=orders,
        gmv_cents=gmv,
        commission_cents=CommissionTotals(
            pending=money["pending"],
            confirmed=money["confirmed"] - money["clawed_back"],
            paid=money["paid"],
            reversed=money["reversed"] + money["clawed_back"],
        ),
        balance_cents=money["payable"],
        self_referral_orders=int(stats["self_referrals"]),
        community=community,
    )


_ROOM_CREDITED = f"""
SELECT a.distributor_id, d.user_id, d.team, o.amount_cents - o.refunded_cents AS net_cents
FROM order_attributions a
JOIN orders o ON o.id = a.order_id
JOIN distributors d ON d.id = a.distributor_id
WHERE a.room_id = $1 AND a.distributor_id IS NOT NULL AND NOT {SELF_REFERRED}
  AND o.paid_at IS NOT NULL AND o.refunded_cents < o.amount_cents
"""

# Both boards in one round trip: per-distributor sums, the top distributors, and the teams.
_BOARDS = f"""
WITH per_distributor AS (
    SELECT distributor_id, user_id, team, count(*) AS orders, sum(net_cents)::bigint AS gmv_cents
    FROM ({_ROOM_CREDITED}) credited
    GROUP BY distributor_id, user_id, team
), top AS (
    SELECT * FROM per_distributor
    ORDER BY gmv_cents DESC, orders DESC, distributor_id LIMIT {LEADERBOARD_SIZE}
), teams AS (
    SELECT team, sum(orders)::bigint AS orders, sum(gmv_cents)::bigint AS gmv_cents,
           count(*) AS distributors
    FROM per_distributor WHERE team IS NOT NULL
    GROUP BY team ORDER BY gmv_cents DESC, orders DESC, team LIMIT {LEADERBOARD_SIZE}
)
SELECT distributor_id, user_id, team, orders, gmv_cents, NULL::bigint AS distributors FROM top
UNION ALL
SELECT NULL, NULL, team, orders, gmv_cents, distributors FROM teams
"""


async def leaderboard(conn: Conn, room_id: int) -> LeaderboardView:
    """Distributors and teams (团队PK) ranked by net GMV of the orders they brought in a room."""
    rows = await conn.fetch(_BOARDS, room_id)
    people = sorted(
        (r for r in rows if r["distributor_id"] is not None),
        key=lambda r: (-r["gmv_cents"], -r["orders"], r["distributor_id"]),
    )
    teams = sorted(
        (r for r in rows if r["distributor_id"] is None),
        key=lambda r: (-r["gmv_cents"], -r["orders"], r["team"]),
    )
    return LeaderboardView(
        room_id=str(room_id),
        distributors=[
            DistributorRank(
                rank=i,
                distributor_id=str(r["distributor_id"]),
                user_id=r["user_id"],
                team=r["team"],
                gmv_cents=int(r["gmv_cents"]),
                orders=int(r["orders"]),
            )
            for i, r in enumerate(people, start=1)
        ],
        teams=[
            TeamRank(
                rank=i,
                team=r["team"],
                gmv_cents=int(r["gmv_cents"]),
                orders=int(r["orders"]),
                distributors=int(r["distributors"]),
            )
            for i, r in enumerate(teams, start=1)
        ],
    )
