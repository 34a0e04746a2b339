"""Fan-out load test: N viewers in one room, the host pins cards through the API.

Measures, for the livesell hub and then for Node's `ws` relaying the very same push bytes to the
same N viewers: delivered/expected, p50/p99 event latency (API call → viewer socket), and the
server's CPU time per delivered event. Viewers are raw-socket WebSocket clients spread over
several processes so the client side stays cheap.

    python -m load_tests.fanout                 # 5,000 viewers, 40 events
    python -m load_tests.fanout --viewers 500 --events 10 --quick
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import msgspec

from core.auth import mint_token
from core.embedded import EmbeddedPostgres, EmbeddedValkey, free_port
from live import CardPinned
from load_tests import http_client
from load_tests.measure import ProcessMeter, percentile
from load_tests.peers.common import push
from storefront import ProductView

HERE = Path(__file__).resolve().parent
ROOM_CHANNEL = "room:1"


# --- viewers: one asyncio protocol per socket, in client processes -------------------------


def _masked(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    header = bytes((0x81, 0x80 | size)) if size < 126 else bytes((0x81, 0xFE)) + size.to_bytes(2)
    return header + mask + body


class Viewer(asyncio.Protocol):
    """Speaks just enough of the protocol: connect, subscribe, answer pings, note card pins."""

    def __init__(self, seen: dict[str, list[float]], ready: asyncio.Event, counter: list[int]):
        self.seen = seen
        self.ready = ready
        self.counter = counter
        self.buffer = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(  # type: ignore[attr-defined]
            (
                "GET /connection/websocket HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.buffer = self.buffer[end + 4 :]
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(_masked('{"id":1,"connect":{"name":"bench"}}'))
            self.transport.write(
                _masked(json.dumps({"id": 2, "subscribe": {"channel": ROOM_CHANNEL}}))
            )
        while len(self.buffer) >= 2:
            size = self.buffer[1] & 0x7F
            start = 2
            if size == 126:
                size, start = int.from_bytes(self.buffer[2:4]), 4
            elif size == 127:
                size, start = int.from_bytes(self.buffer[2:10]), 10
            if len(self.buffer) < start + size:
                return
            payload, self.buffer = self.buffer[start : start + size], self.buffer[start + size :]
            self._handle(payload, now)

    def _handle(self, payload: bytes, now: float) -> None:
        for line in payload.split(b"\n"):
            if line == b"{}":
                assert self.transport is not None
                self.transport.write(_masked("{}"))
            elif b'"card.pinned"' in line:
                marker = line.find(b'"sku":"')
                sku = line[marker + 7 : line.find(b'"', marker + 7)].decode()
                self.seen.setdefault(sku, []).append(now)
            elif b'"id":2' in line and b'"subscribe"' in line:
                self.counter[0] += 1
                self.ready.set()


def _client_process(port: int, count: int, pipe: Connection) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: dict[str, list[float]] = {}
        counter = [0]
        ready = asyncio.Event()
        transports = []
        for start in range(0, count, 200):
            batch = [
                loop.create_connection(lambda: Viewer(seen, ready, counter), "127.0.0.1", port)
                for _ in range(min(200, count - start))
            ]
            for transport, _ in await asyncio.gather(*batch):
                transports.append(transport)
        pipe.send(("connected", len(transports)))
        while True:
            if pipe.poll():
                command = pipe.recv()
                if command == "count":
                    pipe.send(("subscribed", counter[0]))
                elif command == "report":
                    pipe.send(("seen", seen))
                    seen = {}
                    for viewer_transport in transports:
                        viewer_transport.close()
                    return
            await asyncio.sleep(0.05)

    asyncio.run(main())


@dataclass
class Viewers:
    pipes: list[Connection]
    processes: list[multiprocessing.process.BaseProcess]

    @classmethod
    def start(cls, port: int, total: int, processes: int) -> Viewers:
        context = multiprocessing.get_context("spawn")
        pipes, procs = [], []
        for n in range(processes):
            share = total // processes + (1 if n < total % processes else 0)
            parent, child = context.Pipe()
            process = context.Process(target=_client_process, args=(port, share, child))
            process.start()
            pipes.append(parent)
            procs.append(process)
        connected = sum(pipe.recv()[1] for pipe in pipes)
        print(f"  {connected} viewers connected", flush=True)
        return cls(pipes, procs)

    def subscribed(self) -> int:
        for pipe in self.pipes:
            pipe.send("count")
        return sum(pipe.recv()[1] for pipe in self.pipes)

    def report(self) -> dict[str, list[float]]:
        merged: dict[str, list[float]] = {}
        for pipe in self.pipes:
            pipe.send("report")
            for sku, times in pipe.recv()[1].items():
                merged.setdefault(sku, []).extend(times)
        for process in self.processes:
            process.join(timeout=10)
        return merged


# --- the two servers under test ------------------------------------------------------------


@dataclass
class Result:
    name: str
    delivered: int
    expected: int
    latencies_ms: list[float]
    cpu_s: float

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.cpu_s * 1e6 / max(self.delivered, 1)

    def line(self) -> str:
        p50 = percentile(self.latencies_ms, 50) or float("nan")
        p99 = percentile(self.latencies_ms, 99) or float("nan")
        return (
            f"{self.name:<10} delivered {self.delivered}/{self.expected}  "
            f"p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
            f"cpu {self.cpu_s:.3f} s = {self.cpu_us_per_delivery:.2f} µs per delivered event"
        )


def _wait_subscribed(viewers: Viewers, total: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (count := viewers.subscribed()) < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count}/{total} viewers subscribed")
        time.sleep(0.5)
    print(f"  {count} viewers subscribed", flush=True)


def _collect(name: str, sent: dict[str, float], seen: dict[str, list[float]], viewers: int) -> list:
    latencies = [
        (at - sent[sku]) * 1000 for sku, times in seen.items() if sku in sent for at in times
    ]
    delivered = sum(len(times) for sku, times in seen.items() if sku in sent)
    return [name, delivered, len(sent) * viewers, latencies]


async def run_livesell(args: argparse.Namespace, env: dict[str, str], skus: list[str]) -> Result:
    api_port, hub_port = free_port(), free_port()
    livesell = [sys.executable, "-m", "livesell.cli"]
    hub_argv = [*livesell, "hub", "--hub-port", str(hub_port)]
    async with (
        http_client.serving(hub_argv, env, hub_port, path="") as hub,
        http_client.serving([*livesell, "api", "--api-port", str(api_port)], env, api_port),
        http_client.Client(api_port) as http,
    ):
        token = mint_token(env["LIVESELL_SECRET"], "bench-host", ["host"])
        host = {"Authorization": f"Bearer {token}"}
        room = (await http.post("/api/rooms", json={"title": "bench"}, headers=host)).json()
        assert room["id"] == "1", "the bench runs on a fresh database"
        (await http.post("/api/rooms/1/live", headers=host)).raise_for_status()
        viewers = Viewers.start(hub_port, args.viewers, args.client_processes)
        _wait_subscribed(viewers, args.viewers)
        await asyncio.sleep(args.settle_s)
        process = ProcessMeter(hub.pid)
        cpu_before = process.cpu_seconds()
        sent: dict[str, float] = {}
        for n, sku in enumerate(skus):
            sent[sku] = time.time()
            pinned = await http.post(
                "/api/rooms/1/pin", json={"product_id": str(n + 1)}, headers=host
            )
            pinned.raise_for_status()
            await asyncio.sleep(1 / args.rate)
            if (n + 1) % 10 == 0:
                print(f"  livesell: {n + 1}/{len(skus)} events", flush=True)
        await asyncio.sleep(args.drain_s)
        cpu = process.cpu_seconds() - cpu_before
        seen = viewers.report()
        return Result(*_collect("livesell", sent, seen, args.viewers), cpu_s=cpu)


def _card_push(n: int, sku: str) -> bytes:
    """The push livesell's hub sends when the host pins product n + 1 (offset n + 2: the room
    going live took offset 1)."""
    product = ProductView(
        id=str(n + 1), sku=sku, title=f"Bench product {sku}", price_cents=1000,
        commission_bps=500,
    )  # fmt: skip
    data = msgspec.json.encode(CardPinned(room_id="1", product=product))
    return push(b"%d\n-\n\n%s" % (n + 2, data), ROOM_CHANNEL)


def run_node_ws(args: argparse.Namespace, skus: list[str]) -> Result | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        print("  node/npm not found: skipping the Node ws comparison")
        return None
    if not (HERE / "node_modules" / "ws").is_dir():
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE, check=True
        )
    port = free_port()
    relay = subprocess.Popen([node, str(HERE / "ws_relay.mjs"), str(port)], cwd=HERE)
    try:
        asyncio.run(http_client.wait_healthy(port, relay, path=""))
        viewers = Viewers.start(port, args.viewers, args.client_processes)
        time.sleep(args.settle_s)
        import websockets.sync.client

        control = websockets.sync.client.connect(
            f"ws://127.0.0.1:{port}/control", compression=None, legacy=True
        )
        process = ProcessMeter(relay.pid)
        cpu_before = process.cpu_seconds()
        sent: dict[str, float] = {}
        for n, sku in enumerate(skus):
            sent[sku] = time.time()
            control.send(_card_push(n, sku).decode())
            time.sleep(1 / args.rate)
            if (n + 1) % 10 == 0:
                print(f"  node ws: {n + 1}/{len(skus)} events", flush=True)
        time.sleep(args.drain_s)
        cpu = process.cpu_seconds() - cpu_before
        control.close()
        seen = viewers.report()
        return Result(*_collect("node ws", sent, seen, args.viewers), cpu_s=cpu)
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--viewers", type=int, default=5000, help="viewers in the room (5000)")
    parser.add_argument("--events", type=int, default=40, help="cards pinned by the host (40)")
    parser.add_argument("--rate", type=float, default=5.0, help="events per second (5)")
    parser.add_argument("--client-processes", type=int, default=4, help="viewer processes (4)")
    parser.add_argument("--settle-s", type=float, default=2.0, help="pause before events (2)")
    parser.add_argument("--drain-s", type=float, default=2.0, help="wait after the last event (2)")
    parser.add_argument("--no-node", action="store_true", help="skip the Node ws comparison")
    parser.add_argument("--quick", action="store_true", help="500 viewers, 10 events")
    args = parser.parse_args(argv)
    if args.quick:
        args.viewers, args.events = min(args.viewers, 500), min(args.events, 10)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"fan-out: {args.viewers} viewers, {args.events} events at {args.rate}/s, "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip

    root = Path(tempfile.mkdtemp(prefix="livesell-bench-"))
    pg, valkey = (
        EmbeddedPostgres(root / "pg", durable=False),
        EmbeddedValkey(root / "valkey", durable=False),
    )
    try:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=pg.start(), REDIS_URL=valkey.start(),
            LIVESELL_SECRET="bench-secret-0123456789abcdef0123456789",
            LIVESELL_DATA_DIR=str(root / "data"), LIVESELL_LOG_LEVEL="warning",
        )  # fmt: skip
        skus = [f"BENCH-{n:04d}" for n in range(args.events)]
        _seed_products(env["DATABASE_URL"], skus)
        print("livesell hub:", flush=True)
        ours = asyncio.run(run_livesell(args, env, skus))
        print(ours.line(), flush=True)
        theirs = None if args.no_node else run_node_ws(args, skus)
        print("\nresults")
        print(ours.line())
        if theirs is not None:
            print(theirs.line())
            ratio = ours.cpu_us_per_delivery / max(theirs.cpu_us_per_delivery, 1e-9)
            print(f"livesell / node ws CPU per delivered event: {ratio:.2f}x")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        lost = ours.expected - ours.delivered
        return 0 if lost == 0 else 1
    finally:
        valkey.stop()
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def _seed_products(database_url: str, skus: list[str]) -> None:
    import asyncpg

    from core.db import migrate

    async def seed() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn)
            for sku in skus:
                await conn.execute(
                    "INSERT INTO products (sku, title, price_cents, commission_bps, created_by)"
                    " VALUES ($1, $2, 1000, 500, 'bench-host')",
                    sku,
                    f"Bench product {sku}",
                )
        finally:
            await conn.close()

    asyncio.run(seed())


if __name__ == "__main__":
    sys.exit(main())
