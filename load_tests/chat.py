"""Chat load test: N viewers in one room's chat, P of them posting once a second, plus likes.

For each number of posters (phases, default 20, 50 and 500) it reports: messages accepted,
delivered to the other viewers (and, below `LIVESELL_CHAT_FANOUT_PER_S`, whether every one
reached every viewer), whether every poster saw each of their own accepted messages, p50/p99
latency from a post leaving its poster to the other viewers' sockets, and the hub's CPU time per
posted and per delivered message. Then Node's `ws` relay (load_tests/ws_relay.mjs) sends every
message to every viewer, the way a plain broadcast does, at the busiest phase's rate, for the
posted messages handled per CPU-second.

    python -m load_tests.chat                          # 5,000 viewers; 20, 50, 500 posters; 20 s
    python -m load_tests.chat --viewers 500 --posters 20,50 --seconds 5 --no-node
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

from core.embedded import free_port
from load_tests.fanout import _masked
from load_tests.measure import ProcessMeter

HERE = Path(__file__).resolve().parent
CHANNEL = "chat:1"
SECRET = "bench-secret-0123456789abcdef0123456789"


class ChatViewer(asyncio.Protocol):
    """Connect (with a token when it may post), subscribe to the chat, answer pings, and note
    every chat message: who sent it, and how long after it was posted it arrived."""

    def __init__(self, stats: Stats, user: str, token: str) -> None:
        self.stats = stats
        self.user = user
        self.token = token
        self.buffer = b""
        self.upgraded = False
        self.subscribed = False
        self.transport: asyncio.Transport | None = None
        self.next_id = 10

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

    def post(self, seq: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.next_id += 1
        text = f"m{self.user}x{seq}x{time.time() * 1000:.1f}"
        command = {"id": self.next_id, "publish": {"channel": CHANNEL, "data": {"text": text}}}
        self.transport.write(_masked(json.dumps(command)))
        self.stats.sent += 1

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
            connect = {"token": self.token} if self.token else {}
            self.transport.write(_masked(json.dumps({"id": 1, "connect": connect})))
            self.transport.write(_masked(json.dumps({"id": 2, "subscribe": {"channel": CHANNEL}})))
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
        stats = self.stats
        for line in payload.split(b"\n"):
            if line == b"{}":
                assert self.transport is not None
                self.transport.write(_masked("{}"))
            elif b'"text":"m' in line:
                marker = line.find(b'"text":"m') + 9
                sender, _, rest = line[marker : line.find(b'"', marker)].partition(b"x")
                _, _, sent_ms = rest.partition(b"x")
                if sender.decode() == self.user:
                    stats.own += 1
                else:
                    stats.delivered += 1
                    stats.latencies.append(now * 1000 - float(sent_ms))
            elif b'"chat.stats"' in line:
                stats.stats_seen += 1
            elif b'"publish":{}' in line:
                stats.accepted += 1
            elif b'"error"' in line and b'"id":' in line and not line.startswith(b'{"id":2,'):
                code = line[line.find(b'"code":') + 7 :].split(b",")[0]
                stats.refused[code.decode()] = stats.refused.get(code.decode(), 0) + 1
            elif line.startswith(b'{"id":2,') and b'"subscribe"' in line:
                self.subscribed = True
                stats.subscribed += 1


@dataclass
class Stats:
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    own: int = 0
    stats_seen: int = 0
    subscribed: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    latencies: array = field(default_factory=lambda: array("d"))

    def reset(self) -> None:
        subscribed = self.subscribed
        self.__init__()  # type: ignore[misc]
        self.subscribed = subscribed


def _client_process(port: int, users: list[tuple[str, str]], pipe: Connection) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stats = Stats()
        viewers: list[ChatViewer] = []
        for start in range(0, len(users), 200):
            batch = [
                loop.create_connection(
                    lambda u=user, t=tok: ChatViewer(stats, u, t), "127.0.0.1", port
                )
                for user, tok in users[start : start + 200]
            ]
            for _, protocol in await asyncio.gather(*batch):
                viewers.append(protocol)
        pipe.send(("connected", len(viewers)))
        posting: list[asyncio.Task[None]] = []

        async def poster(viewer: ChatViewer, seconds: float) -> None:
            await asyncio.sleep(random.random())  # spread over the second
            seq = 0
            end = loop.time() + seconds
            while loop.time() < end:
                viewer.post(seq)
                seq += 1
                await asyncio.sleep(1.0)

        while True:
            if pipe.poll():
                command, *rest = pipe.recv()
                if command == "count":
                    pipe.send(("subscribed", stats.subscribed))
                elif command == "post":
                    count, seconds = rest
                    stats.reset()
                    posters = [v for v in viewers if v.token][:count]
                    posting = [asyncio.create_task(poster(v, seconds)) for v in posters]
                    pipe.send(("posting", len(posters)))
                elif command == "report":
                    await asyncio.gather(*posting)
                    pipe.send(("stats", stats))
                    stats = Stats(subscribed=stats.subscribed)
                    for viewer in viewers:
                        viewer.stats = stats
                elif command == "close":
                    for viewer in viewers:
                        if viewer.transport is not None:
                            viewer.transport.close()
                    pipe.send(("closed", 0))
                    return
            await asyncio.sleep(0.02)

    asyncio.run(main())


class Fleet:
    def __init__(self, port: int, users: list[tuple[str, str]], processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for n in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(target=_client_process, args=(port, users[n::processes], child))
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        connected = sum(pipe.recv()[1] for pipe in self.pipes)
        print(f"  {connected} viewers connected", flush=True)

    def ask(self, *command: object) -> list[object]:
        for pipe in self.pipes:
            pipe.send(command)
        return [pipe.recv()[1] for pipe in self.pipes]

    def wait_subscribed(self, total: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while (count := sum(self.ask("count"))) < total:  # type: ignore[arg-type]
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {count}/{total} viewers subscribed")
            time.sleep(0.5)
        print(f"  {count} viewers subscribed", flush=True)

    def close(self) -> None:
        self.ask("close")
        for proc in self.procs:
            proc.join(timeout=10)


@dataclass
class Phase:
    name: str
    posters: int
    seconds: float
    accepted: int
    sent: int
    delivered: int
    own: int
    refused: dict[str, int]
    latencies: list[float]
    cpu_s: float
    viewers: int
    cap: int
    likes: int = 0
    stats_seen: int = 0

    @property
    def below_cap(self) -> bool:
        return self.posters < self.cap

    def line(self) -> str:
        lat = sorted(self.latencies) or [float("nan")]
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        expected = self.accepted * (self.viewers - 1)
        whole = (
            f"  lossless {self.delivered}/{expected}"
            if self.below_cap
            else f"  sampled (chat.stats seen {self.stats_seen})"
        )
        return (
            f"{self.name:<22} posters {self.posters:>4}  accepted {self.accepted}/{self.sent}"
            f" refused {self.refused or '{}'}  delivered {self.delivered}{whole}"
            f"  own {self.own}/{self.accepted}  p50 {p50:.1f} ms  p99 {p99:.1f} ms"
            f"  cpu {self.cpu_s:.2f} s = {self.cpu_s * 1e6 / max(self.accepted, 1):.0f} µs/posted,"
            f" {self.cpu_s * 1e6 / max(self.delivered, 1):.2f} µs/delivered"
            f"  posted/cpu-s {self.accepted / max(self.cpu_s, 1e-9):.0f}  likes {self.likes}"
        )


def _like_loop(api_port: int, tokens: list[str], stop: threading.Event, done: list[int]) -> None:
    """About 20 like posts a second (taps batched by the client), from rotating users."""
    with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as http:
        n = 0
        while not stop.is_set():
            token = tokens[n % len(tokens)]
            n += 1
            response = http.post(
                "/api/rooms/1/likes",
                json={"count": random.randint(1, 20)},
                headers={"Authorization": f"Bearer {token}"},
            )
            if response.status_code == 200:
                done[0] += 1
            time.sleep(0.05)


def _wait_port(port: int, timeout: float = 60) -> None:
    """Until something accepts connections on the loopback `port`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.1)


def run_livesell(args: argparse.Namespace, env: dict[str, str]) -> list[Phase]:
    from core.auth import mint_token

    api_port, hub_port = free_port(), free_port()
    hub = subprocess.Popen(
        [sys.executable, "-m", "livesell.cli", "hub", "--hub-port", str(hub_port)], env=env
    )
    api = subprocess.Popen(
        [sys.executable, "-m", "livesell.cli", "api", "--api-port", str(api_port)], env=env
    )
    phases: list[Phase] = []
    try:
        _wait_port(hub_port)
        _wait_port(api_port)
        host = {"Authorization": f"Bearer {mint_token(SECRET, 'bench-host', ['host'])}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as http:
            room = http.post("/api/rooms", json={"title": "bench"}, headers=host).json()
            assert room["id"] == "1", "the bench runs on a fresh database"
            http.post("/api/rooms/1/live", headers=host).raise_for_status()
        most = max(args.posters)
        users = []
        for n in range(args.viewers):
            user = f"u{n}"
            users.append((user, mint_token(SECRET, user, ["viewer"]) if n < most else ""))
        fleet = Fleet(hub_port, users, args.client_processes)
        try:
            fleet.wait_subscribed(args.viewers)
            time.sleep(args.settle_s)
            process = ProcessMeter(hub.pid)
            like_tokens = [tok for _, tok in users[:most]]
            for posters in args.posters:
                stop, likes = threading.Event(), [0]
                liker = threading.Thread(
                    target=_like_loop, args=(api_port, like_tokens, stop, likes), daemon=True
                )
                cpu_before = process.cpu_seconds()
                fleet.ask("post", -(-posters // args.client_processes), args.seconds)
                liker.start()
                time.sleep(args.seconds + 1 + args.drain_s)
                stop.set()
                liker.join()
                cpu = process.cpu_seconds() - cpu_before
                reports: list[Stats] = fleet.ask("report")  # type: ignore[assignment]
                merged = Stats()
                latencies: list[float] = []
                for report in reports:
                    merged.sent += report.sent
                    merged.accepted += report.accepted
                    merged.delivered += report.delivered
                    merged.own += report.own
                    merged.stats_seen += report.stats_seen
                    for code, count in report.refused.items():
                        merged.refused[code] = merged.refused.get(code, 0) + count
                    latencies.extend(report.latencies)
                actual = -(-posters // args.client_processes) * args.client_processes
                phase = Phase(
                    name=f"livesell {actual} posters",
                    posters=actual,
                    seconds=args.seconds,
                    accepted=merged.accepted,
                    sent=merged.sent,
                    delivered=merged.delivered,
                    own=merged.own,
                    refused=merged.refused,
                    latencies=latencies,
                    cpu_s=cpu,
                    viewers=args.viewers,
                    cap=args.cap,
                    likes=likes[0],
                    stats_seen=merged.stats_seen,
                )
                print(phase.line(), flush=True)
                phases.append(phase)
                time.sleep(1)
        finally:
            fleet.close()
    finally:
        for proc in (hub, api):
            proc.send_signal(signal.SIGTERM)
        for proc in (hub, api):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return phases


def run_node_ws(args: argparse.Namespace, rate: int) -> Phase | None:
    """Node's `ws` relaying every chat message to every viewer, at `rate` messages a second
    for `args.node_seconds`; CPU counted until every message is delivered (or the drain ends)."""
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
        _wait_port(port)
        users = [(f"u{n}", "") for n in range(args.viewers)]
        fleet = Fleet(port, users, args.client_processes)
        try:
            time.sleep(args.settle_s)
            import websockets.sync.client

            control = websockets.sync.client.connect(
                f"ws://127.0.0.1:{port}/control", compression=None, legacy=True
            )
            process = ProcessMeter(relay.pid)
            fleet.ask("post", 0, 0)  # reset the counters
            cpu_before = process.cpu_seconds()
            total = int(rate * args.node_seconds)
            start = time.monotonic()
            for n in range(total):
                text = f"mposter{n % 500}x{n}x{time.time() * 1000:.1f}"
                push = {
                    "push": {
                        "channel": CHANNEL,
                        "pub": {
                            "data": {
                                "type": "chat.message", "id": str(n + 1), "room_id": "1",
                                "user": {"id": f"u{n % 500}", "name": f"u{n % 500}",
                                         "role": "viewer"},
                                "text": text, "ts": int(time.time() * 1000),
                            },
                            "offset": n + 1,
                        },
                    }
                }  # fmt: skip
                control.send(json.dumps(push, separators=(",", ":")))
                pause = start + (n + 1) / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            expected = total * args.viewers
            deadline = time.monotonic() + args.node_drain_s
            delivered = 0
            while time.monotonic() < deadline:
                time.sleep(1)
                busy = process.cpu_seconds()
                time.sleep(0.5)
                if process.cpu_seconds() - busy < 0.025:
                    break  # idle (under 5 % of a core): everything it will deliver is out
            cpu = process.cpu_seconds() - cpu_before
            control.close()
            reports: list[Stats] = fleet.ask("report")  # type: ignore[assignment]
            delivered = sum(r.delivered for r in reports)
            latencies = [lat for r in reports for lat in r.latencies]
            phase = Phase(
                name=f"node ws {rate}/s",
                posters=rate,
                seconds=args.node_seconds,
                accepted=total,
                sent=total,
                delivered=delivered,
                own=0,
                refused={},
                latencies=latencies,
                cpu_s=cpu,
                viewers=args.viewers,
                cap=0,
            )
            print(phase.line(), f"(expected {expected})", flush=True)
            return phase
        finally:
            fleet.close()
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=10)
        except subprocess.TimeoutExpired:
            relay.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.chat",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--viewers", type=int, default=5000, help="viewers in the chat (5000)")
    parser.add_argument(
        "--posters", default="20,50,500", help="posters per phase, each once a second (20,50,500)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="posting per phase (20)")
    parser.add_argument("--cap", type=int, default=30, help="LIVESELL_CHAT_FANOUT_PER_S (30)")
    parser.add_argument("--client-processes", type=int, default=4, help="viewer processes (4)")
    parser.add_argument("--settle-s", type=float, default=2.0)
    parser.add_argument("--drain-s", type=float, default=2.0)
    parser.add_argument("--no-node", action="store_true", help="skip the Node ws comparison")
    parser.add_argument("--node-seconds", type=float, default=2.0, help="Node posting time (2)")
    parser.add_argument("--node-drain-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    args.posters = [int(p) for p in str(args.posters).split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(
        f"chat: {args.viewers} viewers, posters {args.posters} once a second for "
        f"{args.seconds:.0f} s each, fan-out cap {args.cap}/s, "
        f"load average before: {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    from core.embedded import EmbeddedPostgres, EmbeddedValkey

    root = Path(tempfile.mkdtemp(prefix="livesell-chat-bench-"))
    pg, valkey = (
        EmbeddedPostgres(root / "pg", durable=False),
        EmbeddedValkey(root / "valkey", durable=False),
    )
    try:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=pg.start(), REDIS_URL=valkey.start(), LIVESELL_SECRET=SECRET,
            LIVESELL_DATA_DIR=str(root / "data"), LIVESELL_LOG_LEVEL="warning",
            LIVESELL_CHAT_FANOUT_PER_S=str(args.cap),
            LIVESELL_HUB_CONNECT_RATE_PER_IP="1000000",
        )  # fmt: skip
        _migrate(env["DATABASE_URL"])
        print("livesell hub:", flush=True)
        phases = run_livesell(args, env)
        theirs = None if args.no_node else run_node_ws(args, max(args.posters))
        print("\nresults")
        for phase in phases:
            print(phase.line())
        ok = True
        for phase in phases:
            if phase.below_cap and phase.delivered != phase.accepted * (phase.viewers - 1):
                print(f"LOST below the cap: {phase.name}")
                ok = False
            if phase.own != phase.accepted:
                print(f"a sender missed their own message: {phase.name}")
                ok = False
        busy = [p for p in phases if p.posters >= 50]
        if len(busy) >= 2:
            per = [p.cpu_s / max(p.accepted, 1) for p in busy]
            first, last = busy[0].posters, busy[-1].posters
            print(
                f"hub CPU per posted message, {first} → {last} posters:"
                f" {per[0] * 1e6:.0f} → {per[-1] * 1e6:.0f} µs ({per[-1] / per[0]:.2f}x)"
            )
        if theirs is not None and phases:
            ours = phases[-1]
            ratio = (ours.accepted / max(ours.cpu_s, 1e-9)) / (
                theirs.accepted / max(theirs.cpu_s, 1e-9)
            )
            print(theirs.line())
            print(f"posted messages per CPU-second, livesell / node ws: {ratio:.1f}x")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        return 0 if ok else 1
    finally:
        valkey.stop()
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def _migrate(database_url: str) -> None:
    import asyncpg

    from core.db import migrate

    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
