"""Soak: viewer churn, drops and purchases against one `livesell serve` for a long time, watching
for leaks.

    python -m load_tests.soak                      # 30 minutes
    python -m load_tests.soak --minutes 10 --json soak.json

A real `livesell serve` (API, hub and worker in one process) runs on its own embedded PostgreSQL
and Valkey. Meanwhile: `--viewers` WebSocket viewers connect, subscribe to the room, stay a few
seconds and leave, over and over; a new drop starts every `--drop-every` seconds; buyers buy at
about `--buys-per-s`, half of them pay, the rest let their (10 s) holds expire.

Every `--sample-every` seconds it records the server's RSS, its asyncio task count (from
/metrics), Redis clients (CLIENT LIST) and PostgreSQL backends (pg_stat_activity). At the end,
after a quiet period, it checks: RSS grew by less than 5 % between the end of warm-up (default
10 minutes) and the end; tasks, Redis clients and PostgreSQL connections went back to what they
were after warm-up (small slack). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg
import psutil
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from core.auth import mint_token
from core.embedded import EmbeddedPostgres, EmbeddedValkey, free_port
from load_tests import http_client

SECRET = "soak-secret-0123456789abcdef0123456789abcdef"


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    tasks: int
    redis_clients: int
    pg_backends: int
    viewers_connected: int
    orders: int


def _headers(sub: str, *roles: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(SECRET, sub, roles or ("viewer",))}


class Soak:
    def __init__(self, args: argparse.Namespace, hub: str, pid: int) -> None:
        self.args, self.hub = args, hub
        self.process = psutil.Process(pid)
        self.stop = asyncio.Event()
        self.viewers_connected = 0
        self.orders = 0
        self.errors: list[str] = []
        self.statuses: dict[int, int] = {}
        self.drop_id = ""
        self.keys = itertools.count()

    async def viewer(self, n: int, room: str) -> None:
        rng = random.Random(n)
        while not self.stop.is_set():
            try:
                async with connect(self.hub, open_timeout=10) as ws:
                    self.viewers_connected += 1
                    try:
                        await ws.send(json.dumps({"id": 1, "connect": {}}))
                        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": room}}))
                        deadline = time.monotonic() + rng.uniform(2, 10)
                        while time.monotonic() < deadline and not self.stop.is_set():
                            try:
                                frame = await asyncio.wait_for(ws.recv(), 1)
                            except TimeoutError:
                                continue
                            if frame == "{}":
                                await ws.send("{}")
                    finally:
                        self.viewers_connected -= 1
            except Exception as exc:  # noqa: BLE001 - counted; the soak goes on
                self.errors.append(f"viewer: {exc!r}")
            await asyncio.sleep(rng.uniform(0, 1))

    async def drops(self, api: http_client.Client, room_id: str, product_id: str) -> None:
        host = _headers("soak-host", "host")
        while not self.stop.is_set():
            if self.drop_id:
                await api.post(f"/api/drops/{self.drop_id}/close", headers=host)
            response = await api.post(
                f"/api/rooms/{room_id}/drops",
                json={"product_id": product_id, "price_cents": 990, "quantity": 50,
                      "per_buyer_limit": 2, "duration_s": 600},
                headers=host,
            )  # fmt: skip
            if response.status == 201:
                self.drop_id = response.json()["id"]
            else:
                self.errors.append(f"drop: {response.status} {response.text[:200]}")
            try:
                await asyncio.wait_for(self.stop.wait(), self.args.drop_every)
            except TimeoutError:
                pass

    async def buyer(self, api: http_client.Client, n: int) -> None:
        rng = random.Random(1000 + n)
        interval = self.args.buyers / self.args.buys_per_s
        while not self.stop.is_set():
            await asyncio.sleep(rng.uniform(0, 2 * interval))
            if not self.drop_id:
                continue
            who = f"soak-buyer-{rng.randrange(5000)}"
            try:
                response = await api.post(
                    f"/api/drops/{self.drop_id}/buy",
                    json={"quantity": 1},
                    headers={**_headers(who), "Idempotency-Key": f"soak-{next(self.keys)}"},
                )
                self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
                if response.status >= 500:
                    self.errors.append(f"buy: {response.status} {response.text[:200]}")
                if response.status == 201:
                    self.orders += 1
                    if rng.random() < 0.5:
                        order = response.json()["order_id"]
                        await api.post(f"/api/orders/{order}/pay", headers=_headers(who))
            except (OSError, asyncio.IncompleteReadError) as exc:
                self.errors.append(f"buy: {exc!r}")

    async def sample(self, started: float, api: http_client.Client, redis: aioredis.Redis,
                     pg: asyncpg.Connection) -> Sample:  # fmt: skip
        metrics = (await api.get("/metrics")).text
        found = re.search(r"^livesell_asyncio_tasks (\S+)$", metrics, re.M)
        clients = await redis.client_list()
        backends = await pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
        return Sample(
            t_s=round(time.monotonic() - started, 1),
            rss_mb=round(self.process.memory_info().rss / 2**20, 1),
            tasks=int(float(found.group(1))) if found else -1,
            redis_clients=len(clients) - 1,  # not this script's own connection
            pg_backends=int(backends) - 1,
            viewers_connected=self.viewers_connected,
            orders=self.orders,
        )


async def run(args: argparse.Namespace, database_url: str, redis_url: str, data: Path) -> int:
    api_port, hub_port = free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "LIVESELL_SECRET": SECRET, "LIVESELL_DEV": "1", "LIVESELL_DATA_DIR": str(data),
           "LIVESELL_LOG_LEVEL": "warning", "LIVESELL_HOLD_S": "10"}  # fmt: skip
    log = data / "serve.log"
    data.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        serve = subprocess.Popen(
            [sys.executable, "-m", "livesell.cli", "serve", "--no-demo",
             "--api-port", str(api_port), "--hub-port", str(hub_port)],
            env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    hub = f"ws://127.0.0.1:{hub_port}/connection/websocket"
    redis = aioredis.Redis.from_url(redis_url)
    pg = await asyncpg.connect(database_url)
    samples: list[Sample] = []
    try:
        async with http_client.Client(api_port, max_connections=args.buyers + 4) as api:
            try:
                await http_client.wait_healthy(api_port, serve)
            except RuntimeError:
                print(log.read_text())
                return 1
            host = _headers("soak-host", "host")
            product = await api.post(
                "/api/products",
                json={"sku": "SOAK-1", "title": "soak", "price_cents": 990, "commission_bps": 800},
                headers=host,
            )
            room = (await api.post("/api/rooms", json={"title": "soak"}, headers=host)).json()
            await api.post(f"/api/rooms/{room['id']}/live", headers=host)
            soak = Soak(args, hub, serve.pid)
            tasks = [asyncio.create_task(soak.viewer(n, f"room:{room['id']}"))
                     for n in range(args.viewers)]  # fmt: skip
            tasks.append(asyncio.create_task(soak.drops(api, room["id"], product.json()["id"])))
            tasks += [asyncio.create_task(soak.buyer(api, n)) for n in range(args.buyers)]
            started = time.monotonic()
            end = started + args.minutes * 60
            print(f"{'t (s)':>7} {'RSS MB':>8} {'tasks':>6} {'redis':>6} {'pg':>4} "
                  f"{'viewers':>8} {'orders':>7}", flush=True)  # fmt: skip
            while time.monotonic() < end:
                await asyncio.sleep(min(args.sample_every, max(0.0, end - time.monotonic())))
                s = await soak.sample(started, api, redis, pg)
                samples.append(s)
                print(f"{s.t_s:>7.0f} {s.rss_mb:>8.1f} {s.tasks:>6} {s.redis_clients:>6} "
                      f"{s.pg_backends:>4} {s.viewers_connected:>8} {s.orders:>7}",
                      flush=True)  # fmt: skip
            soak.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(args.quiet)  # sessions close, holds expire, loops settle
            final = await soak.sample(started, api, redis, pg)
    finally:
        await redis.aclose()
        await pg.close()
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)

    warm = [s for s in samples if s.t_s >= args.warmup * 60] or samples
    baseline, last = warm[0], samples[-1]
    growth = (last.rss_mb - baseline.rss_mb) / baseline.rss_mb * 100
    checks = {
        f"RSS growth after warm-up {growth:+.1f}% < 5%": growth < 5,
        f"asyncio tasks at rest {final.tasks} <= busy after warm-up {baseline.tasks} + 10":
            final.tasks <= baseline.tasks + 10,
        f"Redis clients at rest {final.redis_clients} <= {baseline.redis_clients + 2}":
            final.redis_clients <= baseline.redis_clients + 2,
        f"PostgreSQL backends at rest {final.pg_backends} <= {baseline.pg_backends + 2}":
            final.pg_backends <= baseline.pg_backends + 2,
        f"no 5xx or transport errors ({len(soak.errors)} errors)": not [
            e for e in soak.errors if not e.startswith("viewer")
        ],
    }  # fmt: skip
    print(f"\nat rest after {args.quiet:.0f}s quiet: {asdict(final)}")
    print(f"buy statuses: {dict(sorted(soak.statuses.items()))}; orders {soak.orders}; "
          f"viewer errors {sum(e.startswith('viewer') for e in soak.errors)}")  # fmt: skip
    for name, ok in checks.items():
        print(f"  {'ok ' if ok else 'FAIL'} {name}")
    if soak.errors:
        print("first errors:", soak.errors[:5])
    if args.json:
        Path(args.json).write_text(json.dumps({
            "minutes": args.minutes, "viewers": args.viewers, "buyers": args.buyers,
            "samples": [asdict(s) for s in samples], "at_rest": asdict(final),
            "rss_growth_pct": round(growth, 2), "statuses": soak.statuses,
            "checks": {k: v for k, v in checks.items()},
        }, indent=1))  # fmt: skip
    return 0 if all(checks.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    # the first minutes fill pools, statement caches and the allocator's arenas (measured: RSS
    # climbs for about 7 minutes, then creeps); growth is judged from the end of warm-up
    parser.add_argument("--warmup", type=float, default=10, help="minutes before the RSS baseline")
    parser.add_argument("--viewers", type=int, default=200, help="concurrent churning viewers")
    parser.add_argument("--buyers", type=int, default=20)
    parser.add_argument("--buys-per-s", type=float, default=20)
    parser.add_argument("--drop-every", type=float, default=20, help="seconds per drop")
    parser.add_argument("--sample-every", type=float, default=30)
    parser.add_argument("--quiet", type=float, default=20, help="seconds of rest before the end")
    parser.add_argument("--json", help="write the samples and verdict here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="livesell-soak-"))
    pg = EmbeddedPostgres(root / "pg", durable=False)
    valkey = EmbeddedValkey(root / "valkey", durable=False)
    try:
        return asyncio.run(run(args, pg.start(), valkey.start(), root / "data"))
    finally:
        valkey.stop()
        pg.stop(mode="immediate")


if __name__ == "__main__":
    sys.exit(main())
