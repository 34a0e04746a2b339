"""Community analytics at size: a generated history (10,000 paid orders by 1,000 buyers over a
year, with partial and full refunds, most buyers brought by one of 50 distributors in 5 teams,
some self-referred), the same figures computed in pure Python, and a benchmark of
`GET /api/admin/community` over it.

    python -m load_tests.community [--orders 10000] [--buyers 1000] [--requests 300]

starts an embedded PostgreSQL and Valkey in a temporary directory, loads the history, and prints
the endpoint's p50 and p99 (in-process ASGI client: the figure is the server's work, with no
network), for everyone, for one team, and for one quarter.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from core.db import Conn

YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
TEAMS = ["red", "blue", "green", "gold", "jade"]


@dataclass(frozen=True)
class Order:
    id: int
    buyer: str
    paid_at: datetime
    amount_cents: int
    refunded_cents: int
    distributor: int | None  # credited, not self-referred
    user: str | None
    team: str | None


@dataclass(frozen=True)
class History:
    orders: list[Order]
    members_by_team: dict[str | None, int]
    entries: int  # link entries into the room: one per buyer a distributor brought


async def generate(conn: Conn, *, orders: int = 10_000, buyers: int = 1_000,
                   distributors: int = 50, seed: int = 7) -> History:  # fmt: skip
    """Write the history straight into the tables (as the buy path would have left them) and
    return what was written."""
    rng = random.Random(seed)
    await conn.execute(
        """INSERT INTO products (id, sku, title, price_cents, commission_bps, created_by)
           VALUES (1, 'GEN-1', 'generated', 1000, 1000, 'gen');
           INSERT INTO rooms (id, host_id, title) VALUES (1, 'gen-host', 'generated');
           INSERT INTO drops (id, room_id, product_id, price_cents, quantity, per_buyer_limit,
                              starts_at, ends_at, created_by)
           VALUES (1, 1, 1, 1000, 100000, 3, '2024-12-01', '2026-12-01', 'gen');"""
    )
    dist_rows = [
        (d, f"dist-{d:03d}", TEAMS[d % len(TEAMS)] if d % 10 else None)
        for d in range(1, distributors + 1)
    ]
    await conn.copy_records_to_table("distributors", records=dist_rows,
                                     columns=["id", "user_id", "team"])  # fmt: skip
    await conn.copy_records_to_table(
        "links",
        records=[(d, f"gen-link-{d:08d}-0000000", d, 1) for d, _, _ in dist_rows],
        columns=["id", "code", "distributor_id", "room_id"],
    )
    # 70% of buyers came through a distributor's link: one entry each, which binds their orders
    bound: dict[str, tuple[int, int]] = {}  # buyer -> (entry id, distributor id)
    entries = []
    for b in range(buyers):
        buyer = f"buyer-{b:05d}"
        if rng.random() < 0.7:
            d = rng.randint(1, distributors)
            entry = len(entries) + 1
            entries.append((entry, 1, d, d, f"u:{buyer}", buyer, "click", YEAR_START))
            bound[buyer] = (entry, d)
    await conn.copy_records_to_table(
        "room_entries", records=entries,
        columns=["id", "room_id", "link_id", "distributor_id", "visitor", "user_id", "source",
                 "created_at"],
    )  # fmt: skip
    order_rows, attributions, history = [], [], []
    span = int(timedelta(days=365).total_seconds())
    for i in range(1, orders + 1):
        buyer = f"buyer-{rng.randrange(buyers):05d}"
        quantity = rng.randint(1, 3)
        unit = rng.randint(500, 20_000)
        paid_at = YEAR_START + timedelta(seconds=rng.randrange(span))
        refunded_units = rng.randint(1, quantity) if rng.random() < 0.08 else 0
        full = refunded_units == quantity
        order_rows.append((
            i, 1, 1, 1, buyer, quantity, unit, unit * quantity, 1000,
            "refunded" if full else "paid", unit * refunded_units,
            paid_at - timedelta(minutes=1) + timedelta(minutes=15), paid_at - timedelta(minutes=1),
            paid_at, paid_at + timedelta(days=1) if refunded_units else None, refunded_units,
        ))  # fmt: skip
        entry, d = bound.get(buyer, (None, None))
        self_referred = d is not None and rng.random() < 0.02
        attributions.append((i, 1, buyer, d, entry, "none" if d is None else "last", 1000,
                             self_referred, paid_at - timedelta(minutes=1)))  # fmt: skip
        credited = d if d is not None and not self_referred else None
        user, team = (dist_rows[credited - 1][1], dist_rows[credited - 1][2]) if credited else (
            None, None)  # fmt: skip
        history.append(Order(i, buyer, paid_at, unit * quantity, unit * refunded_units,
                             credited, user, team))  # fmt: skip
    await conn.copy_records_to_table(
        "orders", records=order_rows,
        columns=["id", "drop_id", "room_id", "product_id", "buyer_id", "quantity",
                 "unit_price_cents", "amount_cents", "commission_bps", "status", "refunded_cents",
                 "hold_expires_at", "created_at", "paid_at", "refunded_at", "refunded_units"],
    )  # fmt: skip
    await conn.copy_records_to_table(
        "order_attributions", records=attributions,
        columns=["order_id", "room_id", "buyer_id", "distributor_id", "entry_id", "rule",
                 "commission_bps", "self_referral", "decided_at"],
    )  # fmt: skip
    for table in ("products", "rooms", "drops", "distributors", "links", "room_entries", "orders"):
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"
        )
    await conn.execute("ANALYZE")
    members: dict[str | None, int] = defaultdict(int)
    for _, _, team in dist_rows:
        members[team] += 1
    members[None] = len(dist_rows)  # everyone, when no team is asked for
    return History(history, dict(members), len(entries))


def community_truth(
    history: History,
    *,
    team: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """The community figures, computed in plain Python from what `generate` wrote, by the
    definitions in attribution.analytics."""
    sel = [
        o for o in history.orders
        if (since is None or o.paid_at >= since) and (until is None or o.paid_at < until)
        and (team is None or (o.distributor is not None and o.team == team))
    ]  # fmt: skip
    per_buyer: dict[str, list[Order]] = defaultdict(list)
    for o in sel:
        per_buyer[o.buyer].append(o)
    net = sum(o.amount_cents - o.refunded_cents for o in sel)
    buyers, orders = len(per_buyer), len(sel)
    gaps = sum(len(v) - 1 for v in per_buyer.values())
    gap_us = sum(
        (max(o.paid_at for o in v) - min(o.paid_at for o in v)) // timedelta(microseconds=1)
        for v in per_buyer.values()
    )
    cohorts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for v in per_buyer.values():
        month = min(o.paid_at for o in v).strftime("%Y-%m")
        cohorts[month][0] += 1
        cohorts[month][1] += len(v)
        cohorts[month][2] += sum(o.amount_cents - o.refunded_cents for o in v)
    by_dist: dict[int, list[Order]] = defaultdict(list)
    by_team: dict[str | None, list[Order]] = defaultdict(list)
    for o in sel:
        if o.distributor is not None:
            by_dist[o.distributor].append(o)
            by_team[o.team].append(o)

    def contribution(key: Any, name: Any, group: list[Order]) -> dict[str, Any]:
        gmv = sum(o.amount_cents - o.refunded_cents for o in group)
        return {"id": key, "name": name, "orders": len(group),
                "buyers": len({o.buyer for o in group}), "gmv_cents": gmv,
                "share_bps": gmv * 10_000 // net if net > 0 else 0}  # fmt: skip

    distributors = sorted(
        (contribution(str(d), g[0].user, g) for d, g in by_dist.items()),
        key=lambda c: (-c["gmv_cents"], int(c["id"])),
    )
    teams = sorted(
        (contribution(None, t, g) for t, g in by_team.items()),
        key=lambda c: (-c["gmv_cents"], c["name"] is None, c["name"] or ""),
    )
    repeat = sum(1 for v in per_buyer.values() if len(v) >= 2)
    return {
        "team": team,
        "members": history.members_by_team.get(team, 0),
        "buyers": buyers,
        "orders": orders,
        "gmv_cents": net,
        "refunded_cents": sum(o.refunded_cents for o in sel),
        "repeat_buyers": repeat,
        "repeat_purchase_rate_bps": repeat * 10_000 // buyers if buyers else 0,
        "purchase_frequency": round(orders / buyers, 3) if buyers else 0.0,
        "average_order_value_cents": net // orders if orders else 0,
        "avg_repurchase_gap_s": gap_us // (gaps * 1_000_000) if gaps else None,
        "gmv_per_buyer_cents": net // buyers if buyers else 0,
        "cohorts": [
            {
                "month": m,
                "buyers": c[0],
                "orders": c[1],
                "gmv_cents": c[2],
                "ltv_cents": c[2] // c[0],
            }
            for m, c in sorted(cohorts.items())
        ],  # fmt: skip
        "distributors": distributors,
        "teams": teams,
    }


async def bench(orders: int, buyers: int, requests: int) -> None:
    import httpx

    from core.auth import mint_token
    from core.db import migrate_url
    from core.embedded import EmbeddedPostgres, EmbeddedValkey
    from core.resources import open_resources
    from core.settings import load_settings
    from livesell.app import create_app

    root = Path(tempfile.mkdtemp(prefix="livesell-community-"))
    pg = EmbeddedPostgres(root / "pg", durable=False)
    valkey = EmbeddedValkey(root / "valkey", durable=False)
    pg.start()
    valkey.start()
    try:
        settings = load_settings(
            environ={"DATABASE_URL": pg.url, "REDIS_URL": valkey.url,
                     "LIVESELL_DATA_DIR": str(root / "data"), "LIVESELL_SECRET": "bench" * 8},
            dotenv=None,
        )  # fmt: skip
        await migrate_url(pg.url)
        conn = await asyncpg.connect(pg.url)
        try:
            await generate(conn, orders=orders, buyers=buyers)
        finally:
            await conn.close()
        async with open_resources(settings) as res:
            app = create_app(settings, res)
            token = mint_token(settings.secret, "bench-admin", ("admin",))
            auth = {"Authorization": f"Bearer {token}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                for label, query in (
                    ("everyone", ""),
                    ("team=red", "?team=red"),
                    ("one quarter", "?from=2025-04-01T00:00:00Z&to=2025-07-01T00:00:00Z"),
                ):
                    url = "/api/admin/community" + query
                    for _ in range(10):
                        assert (await http.get(url, headers=auth)).status_code == 200
                    took = []
                    for _ in range(requests):
                        started = time.perf_counter()
                        response = await http.get(url, headers=auth)
                        took.append((time.perf_counter() - started) * 1000)
                        assert response.status_code == 200, response.text
                    took.sort()
                    p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
                    print(
                        f"GET /api/admin/community ({label}; {orders} orders, {buyers} buyers): "
                        f"p50 {statistics.median(took):.1f} ms, p99 {p99:.1f} ms "
                        f"over {requests} requests"
                    )
    finally:
        valkey.stop()
        pg.stop(mode="immediate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--buyers", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(bench(args.orders, args.buyers, args.requests))


if __name__ == "__main__":
    main()
