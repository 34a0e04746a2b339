"""Coupon-claim storm: many viewers tapping "claim" on a coupon the host just released.

    python -m load_tests.coupons                    # 20,000 attempts, 5,000 viewers, 100 coupons
    python -m load_tests.coupons --attempts 4000 --viewers 1000 --quantity 50

A real `livesell api` process on loopback (embedded PostgreSQL, durable, and Valkey, unless
--database-url / --redis-url are given) gets a room, live, and a coupon released through the
public API (which builds the coupon's gate in Redis, as in production). Then the attempts, each
`POST /api/coupons/{id}/claim` with its own Idempotency-Key from a random viewer of --viewers,
go through --concurrency keep-alive connections (the flash sale's client, load_tests.http_client).
Before the measured run an unmeasured warm-up storm on another coupon warms the process's pools
and script cache.

Reported: attempts per second, p50 / p99 / max latency per attempt, the answers by status, and
the truth in PostgreSQL afterwards: claims issued, over-issued (issued beyond the quantity, or a
claim number outside 1..quantity), viewers holding more than the per-viewer limit, and whether
every 201 answer is a claim in PostgreSQL. The exit status is 1 when anything was over-issued.
The report is written to load_tests/results/coupons.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from core.auth import mint_token
from core.db import migrate_url
from core.embedded import free_port
from load_tests import http_client
from load_tests.flash_sale import RESULTS, SECRET, servers
from load_tests.measure import percentile

HOST_USER = "load-host"


@dataclass
class StormResult:
    attempts: int
    seconds: float
    attempts_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    statuses: dict[str, int]
    quantity: int
    per_user_limit: int
    issued: int
    over_issued: int
    over_limit_viewers: int
    created_answers: int
    notes: list[str] = field(default_factory=list)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def claim_request(coupon_id: str, token: str, key: str) -> bytes:
    headers = {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": key,
        "Content-Type": "application/json",
    }
    return http_client.request("POST", f"/api/coupons/{coupon_id}/claim", headers, b"{}")


async def _call(client: http_client.Client, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {mint_token(SECRET, HOST_USER, ['host'])}"}
    response = await client.request(method, path, json=body, headers=headers)
    return response.raise_for_status().json()


async def release(port: int, quantity: int, per_user_limit: int) -> tuple[str, str]:
    """A live room with a coupon released (and another, for the warm-up): their ids."""
    async with http_client.Client(port, 1) as client:
        room = await _call(client, "POST", "/api/rooms", {"title": "coupon storm"})
        await _call(client, "POST", f"/api/rooms/{room['id']}/live")
        ids = []
        for title, count in (("storm", quantity), ("warm-up", quantity)):
            coupon = await _call(
                client,
                "POST",
                f"/api/rooms/{room['id']}/coupons",
                {
                    "title": title,
                    "amount_off_cents": 500,
                    "quantity": count,
                    "per_user_limit": per_user_limit,
                    "claim_duration_s": 3600,
                    "valid_s": 3600,
                },
            )
            ids.append(str(coupon["id"]))
    return ids[0], ids[1]


async def truth(database_url: str, coupon_id: int, quantity: int, limit: int) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) AS issued,
                      count(*) FILTER (WHERE claim_no NOT BETWEEN 1 AND $2) AS out_of_range,
                      count(DISTINCT claim_no) AS numbers
               FROM coupon_claims WHERE coupon_id = $1""",
            coupon_id,
            quantity,
        )
        over_limit = await conn.fetchval(
            """SELECT count(*) FROM (SELECT user_id FROM coupon_claims WHERE coupon_id = $1
                                     GROUP BY user_id HAVING count(*) > $2) AS too_many""",
            coupon_id,
            limit,
        )
    finally:
        await conn.close()
    assert row is not None
    issued = int(row["issued"])
    over = max(0, issued - quantity) + int(row["out_of_range"]) + (issued - int(row["numbers"]))
    return {"issued": issued, "over_issued": over, "over_limit_viewers": int(over_limit)}


async def run(args: argparse.Namespace) -> StormResult:
    with servers(args) as found:
        await migrate_url(found.database_url)
        env = {
            **os.environ,
            "DATABASE_URL": found.database_url,
            "REDIS_URL": found.redis_url,
            "LIVESELL_SECRET": SECRET,
            "LIVESELL_DEV": "0",
            "LIVESELL_LOG_LEVEL": "warning",
            "LIVESELL_DATA_DIR": tempfile.mkdtemp(prefix="livesell-coupons-data-"),
        }
        port = free_port()
        argv = [sys.executable, "-m", "livesell.cli", "api", "--api-port", str(port)]
        tokens = [mint_token(SECRET, f"viewer-{i}", ["viewer"]) for i in range(args.viewers)]
        rng = random.Random(args.seed)
        async with http_client.serving(argv, env, port):
            coupon_id, warmup_id = await release(port, args.quantity, args.per_user_limit)
            warm = [
                claim_request(warmup_id, tokens[rng.randrange(args.viewers)], f"warm-{i}")
                for i in range(args.warmup)
            ]
            await http_client.fire(
                port, warm, concurrency=args.concurrency, deadline_s=60, label="warm-up"
            )
            plan = [
                claim_request(coupon_id, tokens[rng.randrange(args.viewers)], f"storm-{i}")
                for i in range(args.attempts)
            ]
            print(
                f"coupon {coupon_id}: {args.quantity} to claim, {args.per_user_limit} per viewer; "
                f"{args.attempts} attempts from {args.viewers} viewers, "
                f"{args.concurrency} connections",
                flush=True,
            )
            load = await http_client.fire(
                port, plan, concurrency=args.concurrency, deadline_s=args.timeout_s, label="claims"
            )
        found_truth = await truth(
            found.database_url, int(coupon_id), args.quantity, args.per_user_limit
        )
    latencies = load.latencies
    result = StormResult(
        attempts=len(latencies),
        seconds=round(load.seconds, 3),
        attempts_per_s=round(len(latencies) / load.seconds, 1) if load.seconds else 0.0,
        p50_ms=_ms(percentile(latencies, 50)),
        p99_ms=_ms(percentile(latencies, 99)),
        max_ms=_ms(max(latencies, default=None)),
        statuses={str(k): v for k, v in sorted(load.statuses.items())},
        quantity=args.quantity,
        per_user_limit=args.per_user_limit,
        created_answers=load.statuses.get(201, 0),
        issued=found_truth["issued"],
        over_issued=found_truth["over_issued"],
        over_limit_viewers=found_truth["over_limit_viewers"],
    )
    if result.created_answers != result.issued:
        result.notes.append(f"{result.created_answers} answers 201, {result.issued} claims stored")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.coupons",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--attempts", type=int, default=20_000, help="claim attempts (20000)")
    parser.add_argument("--viewers", type=int, default=5_000, help="distinct viewers (5000)")
    parser.add_argument("--quantity", type=int, default=100, help="coupons to claim (100)")
    parser.add_argument("--per-user-limit", type=int, default=1, help="claims per viewer (1)")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="keep-alive connections in flight (32)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1000, help="unmeasured attempts on another coupon (1000)"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=120, help="stop sending after this long (120)"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed of the attempt plan")
    parser.add_argument("--database-url", help="a PostgreSQL to use instead of an embedded one")
    parser.add_argument("--redis-url", help="a Redis to use instead of an embedded Valkey")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import uvloop

    result = uvloop.run(run(args))
    print(
        f"claims: {result.attempts} attempts in {result.seconds:.2f} s = "
        f"{result.attempts_per_s:,.0f} claims/s; p50 {result.p50_ms} ms, p99 {result.p99_ms} ms, "
        f"max {result.max_ms} ms; answers {result.statuses}"
    )
    print(
        f"issued {result.issued} of {result.quantity}; over-issued {result.over_issued}; "
        f"viewers over the limit {result.over_limit_viewers}"
    )
    for note in result.notes:
        print(f"!! {note}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "coupons.json").write_text(json.dumps(asdict(result), indent=2))
    return 1 if result.over_issued or result.over_limit_viewers else 0


if __name__ == "__main__":
    sys.exit(main())
