"""Attribution under load: link clicks per second and purchase-to-dashboard latency.

    python -m load_tests.attribution            # full run (bounded: a minute or two)
    python -m load_tests.attribution --quick    # a short smoke run

1. Clicks: a real `livesell api` process (uvicorn) serves `GET /l/{code}`; a keep-alive HTTP/1.1
   client on raw asyncio streams (cheap enough not to be the bottleneck) sends clicks from many
   distinct anonymous visitors across many distributors' links. Each visitor keeps the `ls_vid`
   cookie the first click set and presents its own client address in `X-Forwarded-For` (a
   loopback address; uvicorn trusts the header from 127.0.0.1), as it would behind a load
   balancer. Reported: clicks/s over the whole phase, per-click latency, and how many entries
   PostgreSQL holds afterwards.
2. Purchase to dashboard: a `livesell hub` process joins the API. Every distributor watches
   `dashboard#USER` over a WebSocket (the Centrifugo protocol, as the SDKs speak it). Buyers who
   entered through a link buy through the API (`POST /api/drops/{id}/buy`) and pay
   (`POST /api/orders/{id}/pay`: the simulated provider calls the signed webhook, which settles
   the order and posts the pending commission). The clock starts when the pay request is sent
   (so it includes the webhook's processing) and stops when `commission.pending` for that order
   arrives on the distributor's WebSocket. The first `--warmup-purchases` (100) are reported
   apart as `first_purchases`: a freshly started API's PostgreSQL backends compile the pay
   path's statements, triggers and functions on first use, which the target (a process that
   has sold before) does not include; the figure is printed beside it, not hidden.

Everything runs on loopback only; every loop is bounded by count and by time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import websockets

from core.auth import mint_token
from core.db import migrate_url
from core.embedded import EmbeddedPostgres, EmbeddedValkey, free_port
from load_tests import http_client
from load_tests.measure import ProcessMeter, percentile
from load_tests.profile import recorded

SECRET = "load-test-secret-0123456789abcdef"
TARGET_CLICKS_PER_S = 3_000
TARGET_P99_MS = 250.0


@dataclass
class Visitor:
    address: str
    cookie: str = ""


@dataclass
class ClickStats:
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0


async def _click_worker(
    port: int,
    codes: list[str],
    visitors: list[Visitor],
    remaining: list[int],
    deadline: float,
    stats: ClickStats,
    rng: random.Random,
) -> None:
    """One keep-alive connection sending clicks until the shared budget or the time runs out."""
    async with http_client.Client(port, 1) as client:
        try:
            while remaining[0] > 0 and time.monotonic() < deadline:
                remaining[0] -= 1
                visitor = rng.choice(visitors)
                headers = {"X-Forwarded-For": visitor.address}
                if visitor.cookie:
                    headers["Cookie"] = f"ls_vid={visitor.cookie}"
                started = time.perf_counter()
                response = await client.get(f"/l/{rng.choice(codes)}", headers=headers)
                cookie = response.headers.get("set-cookie", "")
                if cookie.startswith("ls_vid="):
                    visitor.cookie = cookie.split("=", 1)[1].split(";", 1)[0]
                stats.latencies_ms.append((time.perf_counter() - started) * 1000)
                stats.statuses[response.status] = stats.statuses.get(response.status, 0) + 1
        except (OSError, asyncio.IncompleteReadError):
            stats.errors += 1


async def click_phase(
    port: int,
    codes: list[str],
    clicks: int,
    concurrency: int,
    visitors: int,
    max_s: float,
    api_pid: int,
) -> dict[str, Any]:
    rng = random.Random(7)
    people = [Visitor(address=f"127.{i // 62500 % 250 + 1}.{i // 250 % 250}.{i % 250 + 1}")
              for i in range(visitors)]  # fmt: skip
    # warm-up: connections, link cache, prepared statements (not measured)
    warm = ClickStats()
    await asyncio.gather(
        *(_click_worker(port, codes, people[:50], [20], time.monotonic() + 10, warm, rng)
          for _ in range(4))
    )  # fmt: skip
    stats = ClickStats()
    remaining = [clicks]
    api = ProcessMeter(api_pid)
    cpu_before = api.cpu_seconds()
    started = time.perf_counter()
    deadline = time.monotonic() + max_s
    workers = [
        _click_worker(port, codes, people, remaining, deadline, stats, rng)
        for _ in range(concurrency)
    ]
    progress = asyncio.create_task(_progress("clicks", stats, clicks))
    await asyncio.gather(*workers)
    progress.cancel()
    elapsed = time.perf_counter() - started
    api_cpu = api.cpu_seconds() - cpu_before
    sent = len(stats.latencies_ms)
    return {
        "clicks": sent,
        "seconds": round(elapsed, 2),
        "clicks_per_s": round(sent / elapsed),
        "statuses": stats.statuses,
        "connection_errors": stats.errors,
        # the API process's own CPU per click: what one fully available core would sustain,
        # whatever else the machine was doing meanwhile
        "api_cpu_seconds": round(api_cpu, 2),
        "api_cpu_us_per_click": round(api_cpu / max(sent, 1) * 1e6),
        "clicks_per_api_cpu_second": round(sent / api_cpu) if api_cpu else None,
        "latency_ms": {
            "p50": percentile(stats.latencies_ms, 50, 2),
            "p99": percentile(stats.latencies_ms, 99, 2),
        },
    }


async def _progress(name: str, stats: ClickStats, total: int) -> None:
    while True:
        await asyncio.sleep(2)
        print(f"  {name}: {len(stats.latencies_ms)}/{total}", file=sys.stderr, flush=True)


async def _watch_dashboard(
    hub_port: int, user: str, started_at: dict[str, float], latencies: list[float],
    sent_at: list[float], ready: asyncio.Event, subscribed: list[str], expected: int,
    done: asyncio.Event,
) -> None:  # fmt: skip
    """One distributor's dashboard over the hub; records paid → commission.pending latency."""
    token = mint_token(SECRET, user, ["distributor"])
    url = f"ws://127.0.0.1:{hub_port}/connection/websocket"
    async with websockets.connect(url, compression=None) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": f"dashboard#{user}"}}))
        async for frame in ws:
            for line in str(frame).split("\n"):
                if line == "{}":
                    await ws.send("{}")
                    continue
                message = json.loads(line)
                if message.get("id") == 2:
                    if "error" in message:
                        raise RuntimeError(f"subscribe refused: {message['error']}")
                    subscribed.append(user)
                    ready.set()
                pub = message.get("push", {}).get("pub")
                if pub and pub["data"].get("type") == "commission.pending":
                    began = started_at.pop(str(pub["data"]["order_id"]), None)
                    if began is not None:
                        latencies.append((time.perf_counter() - began) * 1000)
                        sent_at.append(began)
                        if len(latencies) == expected:
                            done.set()


class PhaseCost:
    """What the purchase phase cost the servers: CPU seconds per process tree (PostgreSQL's
    backends are the postmaster's children) and PostgreSQL's committed transactions."""

    def __init__(self, database_url: str, pids: dict[str, int | None]) -> None:
        self.database_url = database_url
        self.meters = {name: ProcessMeter(pid) for name, pid in pids.items() if pid}
        self.cpu: dict[str, float] = {}
        self.commits = 0

    async def _commits(self) -> int:
        conn = await asyncpg.connect(self.database_url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                )
            )
        finally:
            await conn.close()

    async def start(self) -> None:
        self.commits = await self._commits()
        self.cpu = {name: meter.cpu_seconds() for name, meter in self.meters.items()}
        self.cpu["load_generator"] = time.process_time()

    async def per_purchase(self, purchases: int) -> dict[str, Any]:
        cpu = {name: meter.cpu_seconds() - self.cpu[name] for name, meter in self.meters.items()}
        cpu["load_generator"] = time.process_time() - self.cpu["load_generator"]
        # pg_stat_database is updated when a backend reports (at most every second or so)
        await asyncio.sleep(1.2)
        commits = await self._commits() - self.commits
        n = max(purchases, 1)
        return {
            "cpu_us_per_purchase": {name: round(s * 1e6 / n) for name, s in cpu.items()},
            # includes the few the measurement itself and the hub's subscribe checks make
            "postgres_commits_per_purchase": round(commits / n, 2),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None) -> Iterator[None]:
    """Sample `pid` with py-spy into `out` (collapsed stacks) while the block runs."""
    if out is None:
        yield
        return
    with recorded(pid, out):
        yield
    print(f"  py-spy samples of the API in {out}", file=sys.stderr)


async def purchase_phase(
    api_port: int, hub_port: int, drop_id: int, buyers: list[tuple[str, str]], rate: float,
    max_s: float, cost: PhaseCost | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Buy and pay one order per buyer at `rate` per second through the API; time pay →
    `commission.pending` on the distributor's WebSocket."""
    distributors = sorted({d for _, d in buyers})
    started_at: dict[str, float] = {}
    latencies: list[float] = []
    sent_at: list[float] = []  # when each observed purchase's pay was sent, as in `latencies`
    subscribed: list[str] = []
    ready, done = asyncio.Event(), asyncio.Event()
    watchers = [
        asyncio.create_task(
            _watch_dashboard(
                hub_port, d, started_at, latencies, sent_at, ready, subscribed, len(buyers), done
            )
        )  # fmt: skip
        for d in distributors
    ]
    deadline = time.monotonic() + 30
    while len(subscribed) < len(distributors):
        failed = [w for w in watchers if w.done()]
        if failed:
            failed[0].result()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(subscribed)} of {len(distributors)} dashboards subscribed")
        await asyncio.sleep(0.05)
    failures: dict[str, int] = {}
    pay_ms: list[float] = []
    if cost is not None:
        await cost.start()
    async with http_client.Client(api_port, max_connections=64) as http:

        async def buy(buyer: str, index: int) -> None:
            auth = "Bearer " + mint_token(SECRET, buyer, ["viewer"])
            bought = await http.post(
                f"/api/drops/{drop_id}/buy", json={"quantity": 1},
                headers={"Authorization": auth, "Idempotency-Key": f"load-{index}"},
            )  # fmt: skip
            if bought.status != 201:
                failures[f"buy {bought.status}"] = failures.get(f"buy {bought.status}", 0) + 1
                return
            order_id = str(bought.json()["order_id"])
            started_at[order_id] = sent = time.perf_counter()
            paid = await http.post(f"/api/orders/{order_id}/pay", headers={"Authorization": auth})
            status = paid.status
            pay_ms.append((time.perf_counter() - sent) * 1000)
            if status != 200:
                started_at.pop(order_id, None)
                failures[f"pay {status}"] = failures.get(f"pay {status}", 0) + 1

        began = time.perf_counter()
        tasks = []
        for i, (buyer, _) in enumerate(buyers):
            delay = began + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(buy(buyer, i)))
        await asyncio.gather(*tasks)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=max(1.0, max_s))
    for watcher in watchers:
        watcher.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    return {
        "purchases": len(buyers),
        "observed": len(latencies),
        "failures": failures,
        "rate_per_s": rate,
        **(await cost.per_purchase(len(buyers)) if cost is not None else {}),
        "path": "HTTP buy + pay (simulated provider, signed webhook) → hub WebSocket",
        "pay_response_ms": {
            "p50": percentile(pay_ms, 50, 2),
            "p99": percentile(pay_ms, 99, 2),
        },
        "latency_ms": {
            "p50": percentile(latencies, 50, 2),
            "p99": percentile(latencies, 99, 2),
            "max": round(max(latencies, default=float("nan")), 2),
        },
        # p99 of the purchases paid in each second of the phase: a warm-up or a backlog shows
        "latency_p99_ms_by_second": _p99_by_second(sent_at, latencies, began),
    }


def _p99_by_second(
    sent_at: list[float], latencies: list[float], began: float
) -> list[float | None]:
    seconds: dict[int, list[float]] = {}
    for sent, latency in zip(sent_at, latencies, strict=True):
        seconds.setdefault(int(sent - began), []).append(latency)
    return [percentile(seconds.get(s, []), 99, 1) for s in range(max(seconds, default=-1) + 1)]


@contextlib.asynccontextmanager
async def api_process(env: dict[str, str], port: int) -> AsyncIterator[subprocess.Popen[bytes]]:
    async with livesell_process(env, ["api", "--api-port", str(port)], port) as process:
        yield process


@contextlib.asynccontextmanager
async def livesell_process(
    env: dict[str, str], args: list[str], port: int
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`livesell ARGS` as a subprocess, ready once `port` accepts connections (and, for the API,
    /healthz answers)."""
    # the process's log goes to a file: a pipe nobody reads would block it once full
    log = tempfile.NamedTemporaryFile(prefix=f"livesell-{args[0]}-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "livesell.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        path = "/healthz" if args[0] == "api" else ""
        try:
            await http_client.wait_healthy(port, process, path=path)
        except RuntimeError as exc:
            raise RuntimeError(f"livesell {args[0]}: {exc} (its log: {log.name})") from None
        yield process
    except BaseException:
        print(f"  livesell {args[0]}'s log: {log.name}", file=sys.stderr)
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


async def seed(
    database_url: str, port: int, distributors: int, buyers: int
) -> tuple[int, int, list[str], list[tuple[str, str]]]:
    """A room with a drop (started by its host through the API), distributors with links (through
    the API), buyers who entered."""
    conn = await asyncpg.connect(database_url)
    try:
        room_id = await conn.fetchval(
            "INSERT INTO rooms (host_id, title, status, live_at) "
            "VALUES ('load-host', 'load', 'live', now()) RETURNING id"
        )
        product_id = await conn.fetchval(
            "INSERT INTO products (sku, title, price_cents, commission_bps, created_by) "
            "VALUES ($1, 'load', 9900, 1200, 'load-host') RETURNING id",
            f"LOAD-{time.time_ns()}",
        )
    finally:
        await conn.close()
    async with http_client.Client(port) as http:
        # the host starts the drop as in production: the API builds its flash-sale gate in Redis
        host = {"Authorization": "Bearer " + mint_token(SECRET, "load-host", ["host"])}
        made = await http.post(
            f"/api/rooms/{room_id}/drops",
            json={"product_id": str(product_id), "price_cents": 9900, "quantity": 100_000,
                  "per_buyer_limit": 5, "duration_s": 86_400},
            headers=host,
        )  # fmt: skip
        made.raise_for_status()
        drop_id = int(made.json()["id"])
    codes: list[str] = []
    pairs: list[tuple[str, str]] = []
    async with http_client.Client(port) as http:
        for d in range(distributors):
            user = f"load-dist-{d}"
            headers = {"Authorization": "Bearer " + mint_token(SECRET, user, ["distributor"])}
            (await http.post("/api/distributors", json={"team": f"team-{d % 4}"},
                             headers=headers)).raise_for_status()  # fmt: skip
            made = await http.post("/api/links", json={"room_id": str(room_id)}, headers=headers)
            made.raise_for_status()
            codes.append(made.json()["code"])
        for b in range(buyers):
            user, d = f"load-buyer-{b}", b % distributors
            headers = {
                "Authorization": "Bearer " + mint_token(SECRET, user, ["viewer"]),
                "X-Forwarded-For": f"127.200.{b // 250 % 250}.{b % 250 + 1}",
            }
            entered = await http.post(f"/api/rooms/{room_id}/enter",
                                      json={"link_code": codes[d]}, headers=headers)  # fmt: skip
            entered.raise_for_status()
            pairs.append((user, f"load-dist-{d}"))
    return int(room_id), int(drop_id), codes, pairs


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="livesell-load-")))
        pg = None
        if not database_url:
            pg = EmbeddedPostgres(root / "pg", durable=True)
            database_url = pg.start()
            stack.callback(pg.stop)
        if not redis_url:
            valkey = EmbeddedValkey(root / "valkey", durable=True)
            redis_url = valkey.start()
            stack.callback(valkey.stop)
        await migrate_url(database_url)
        postgres_pid = _pid_in(pg.pgdata / "postmaster.pid") if pg is not None else None
        env = dict(os.environ)
        # dev mode: the simulated payment provider pays orders through the signed webhook
        env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, LIVESELL_SECRET=SECRET,
                   LIVESELL_DATA_DIR=str(root / "data"), LIVESELL_LOG_LEVEL="warning",
                   LIVESELL_DEV="1")  # fmt: skip
        port, hub_port = free_port(), free_port()
        async with api_process(env, port) as api:
            print("seeding…", file=sys.stderr, flush=True)
            room_id, drop_id, codes, buyers = await seed(
                database_url, port, args.distributors, args.warmup_purchases + args.purchases
            )
            first_buyers, buyers = buyers[: args.warmup_purchases], buyers[args.warmup_purchases :]
            print(f"clicks: {args.clicks} with {args.concurrency} connections…", file=sys.stderr)
            clicks = await click_phase(
                port, codes, args.clicks, args.concurrency, args.visitors, args.max_seconds,
                api.pid,
            )  # fmt: skip
            conn = await asyncpg.connect(database_url)
            try:
                clicks["entries_recorded"] = await conn.fetchval(
                    "SELECT count(*) FROM room_entries WHERE source = 'click'"
                )
            finally:
                await conn.close()
            print(f"purchases: {args.purchases} at {args.purchase_rate}/s…", file=sys.stderr)
            hub_args = ["hub", "--hub-port", str(hub_port)]
            async with livesell_process(env, hub_args, hub_port) as hub:
                first: dict[str, Any] | None = None
                if first_buyers:
                    # the API's first purchases: its PostgreSQL backends compile the statements,
                    # triggers and functions of the pay path and fill their catalog caches
                    print(f"first purchases (not in the target): {len(first_buyers)}…",
                          file=sys.stderr)  # fmt: skip
                    first = await purchase_phase(
                        port, hub_port, drop_id, first_buyers, args.purchase_rate, args.max_seconds
                    )
                cost = PhaseCost(
                    database_url, {"api": api.pid, "hub": hub.pid, "postgres": postgres_pid}
                )
                with py_spy(api.pid, args.profile):
                    purchases = await purchase_phase(
                        port, hub_port, drop_id, buyers, args.purchase_rate, args.max_seconds,
                        cost,
                    )  # fmt: skip
    return {
        "clicks": clicks,
        "purchase_to_dashboard": purchases,
        # the same measurement over the fresh API process's first purchases (reported, not the
        # target: the target is the latency of a process that has sold before)
        "first_purchases": first,
        "targets": {"clicks_per_s": TARGET_CLICKS_PER_S, "p99_ms": TARGET_P99_MS},
        "met": {
            "clicks_per_s": clicks["clicks_per_s"] >= TARGET_CLICKS_PER_S,
            "purchase_p99": purchases["latency_ms"]["p99"] <= TARGET_P99_MS,
        },
    }


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.attribution",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clicks", type=int, default=60_000, help="clicks to send (60000)")
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections (64)")
    parser.add_argument("--visitors", type=int, default=20_000, help="distinct visitors (20000)")
    parser.add_argument("--distributors", type=int, default=50, help="distributors/links (50)")
    parser.add_argument("--purchases", type=int, default=1_000, help="paid orders (1000)")
    parser.add_argument(
        "--warmup-purchases", type=int, default=100,
        help="purchases before the measured ones, reported apart as the first purchases (100)",
    )  # fmt: skip
    parser.add_argument("--purchase-rate", type=float, default=100.0, help="orders/s (100)")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="cap per phase (90)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="sample the API with py-spy during the purchase phase (collapsed stacks to FILE)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.clicks, args.visitors, args.purchases = 6_000, 2_000, 200
        args.warmup_purchases = min(args.warmup_purchases, 50)
        args.distributors, args.max_seconds = 10, 30.0
    results = asyncio.run(main_async(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
