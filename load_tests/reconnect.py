"""Reconnect storm: a hub node dies under N viewers; they all reconnect to another node at once,
recovering what was published meanwhile from the room's history, and none may lose an event.

Two `livesell hub` processes (A and B) share one embedded Valkey and PostgreSQL. N viewers join
room 1 on A; the driver publishes card pins (which the hub never merges) at `--rate` per second
the whole time. Then A is killed with SIGKILL: every viewer sees its connection drop and, after
a random delay below `--jitter-s` (the SDKs' reconnect backoff), reconnects to B and subscribes
with `recover: true` and its own position and epoch, as the Centrifugo SDKs do. Each viewer
checks every offset it gets, from the replies' recovered publications and from live pushes: an
offset skipped is a loss (counted unless it is a latest-value event the hub may merge), a
`recovered: false` reply is a failed recovery.

It reports the time from the kill until every viewer had rejoined, and until every viewer was
current (had the first event published after all rejoined), the losses, and B's CPU. Exit
status 1 if any viewer lost an event, failed to recover or did not come back.

    python -m load_tests.reconnect --viewers 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from load_tests import publish
from load_tests.measure import ProcessMeter
from load_tests.profile import sampled
from load_tests.systems import LIVESELL, infrastructure, serve
from load_tests.viewers import client_frame, raise_open_files_limit

OFFSET = re.compile(rb'"offset":(\d+)')
PATH = "/connection/websocket"
CONNECT = client_frame(b'{"id":1,"connect":{"name":"bench"}}')
PONG = client_frame(b"{}")
MAX_GAP_NOTED = 10_000  # a gap this long is noted by its size only


@dataclass
class Tally:
    """What the viewers of one process saw."""

    joined: int = 0  # first joins
    rejoined: int = 0  # subscribe replies after a reconnect
    recovered: int = 0
    not_recovered: int = 0
    failed: int = 0
    missing: Counter[int] = field(default_factory=Counter)  # offset → viewers that skipped it
    huge_gaps: int = 0
    duplicates: int = 0
    rejoined_at: list[float] = field(default_factory=list)


class Viewer(asyncio.Protocol):
    """One viewer that reconnects to `fallback` and recovers its position when dropped."""

    def __init__(self, process: ViewerProcess, port: int) -> None:
        self.process = process
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.joined = False
        self.epoch = ""
        self.position = 0  # highest offset seen
        self.reconnects = 0
        self.done: asyncio.Future[bool] | None = None

    def open(self) -> asyncio.Future[bool]:
        self.done = asyncio.get_running_loop().create_future()
        self.buffer, self.upgraded, self.joined = b"", False, False
        return self.done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(
            f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.done is not None and not self.done.done():
            self.done.set_result(False)
        if self.joined and self.process.fallback is not None:
            self.joined = False
            self.process.dropped(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._fail()
                return
            self.upgraded = True
            buf = buf[end + 4 :]
            self._send(CONNECT, raw=True)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            length, head = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            end = pos + head + length
            if end > size:
                break
            opcode, payload = buf[pos] & 0x0F, buf[pos + head : end]
            pos = end
            if opcode == 0x1:
                self._message(payload)
            elif opcode == 0x8:
                self._fail()
                return
        self.buffer = buf[pos:] if pos < size else b""

    def _send(self, frame: bytes, raw: bool = False) -> None:
        if self.transport is not None:
            self.transport.write(frame if raw else client_frame(frame))

    def _fail(self) -> None:
        if self.done is not None and not self.done.done():
            self.process.tally.failed += 1
            self.done.set_result(False)
        if self.transport is not None:
            self.transport.abort()

    def _message(self, payload: bytes) -> None:
        if payload == b"{}":
            self._send(PONG, raw=True)
            return
        if self.joined:
            for raw in OFFSET.findall(payload):
                self._saw(int(raw))
            return
        for line in payload.split(b"\n"):
            message = json.loads(line)
            if self.joined:
                pub = message.get("push", {}).get("pub")
                if pub is not None:
                    self._saw(pub["offset"])
            elif message.get("id") == 1:
                subscribe: dict[str, Any] = {"channel": self.process.channel}
                if self.epoch:
                    subscribe.update(recover=True, offset=self.position, epoch=self.epoch)
                self._send(json.dumps({"id": 2, "subscribe": subscribe}).encode())
            elif message.get("id") == 2:
                self._subscribed(message)

    def _subscribed(self, message: dict[str, Any]) -> None:
        tally = self.process.tally
        result = message.get("subscribe")
        if result is None:
            self._fail()
            return
        if result.get("was_recovering"):
            tally.rejoined += 1
            tally.rejoined_at.append(time.time())
            if result.get("recovered"):
                tally.recovered += 1
                for pub in result.get("publications", []):
                    self._saw(pub["offset"])
            else:
                tally.not_recovered += 1
        else:
            tally.joined += 1
        self.epoch = result["epoch"]
        self.position = max(self.position, result.get("offset", 0))
        self.joined = True
        if self.done is not None and not self.done.done():
            self.done.set_result(True)

    def _saw(self, offset: int) -> None:
        tally = self.process.tally
        if offset <= self.position:
            tally.duplicates += 1
            return
        if offset > self.position + 1:
            if offset - self.position > MAX_GAP_NOTED:
                tally.huge_gaps += 1
            else:
                tally.missing.update(range(self.position + 1, offset))
        self.position = offset


class ViewerProcess:
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.viewers: list[Viewer] = []
        self.tally = Tally()
        self.fallback: int | None = None
        self._reconnecting: set[asyncio.Future[bool]] = set()  # referenced while they run
        self.jitter_s = 0.0

    async def join(self, port: int, count: int, parallel: int = 256) -> int:
        gate = asyncio.Semaphore(parallel)

        async def one() -> None:
            async with gate:
                viewer = Viewer(self, port)
                if await self._open(viewer, port):
                    self.viewers.append(viewer)

        await asyncio.gather(*(one() for _ in range(count)))
        return len(self.viewers)

    async def _open(self, viewer: Viewer, port: int) -> bool:
        loop = asyncio.get_running_loop()
        done = viewer.open()
        viewer.port = port
        try:
            await loop.create_connection(lambda: viewer, "127.0.0.1", port)
            return await asyncio.wait_for(done, 30)
        except (OSError, TimeoutError):
            self.tally.failed += 1
            return False

    def dropped(self, viewer: Viewer) -> None:
        """Reconnect after a random share of the jitter, as the SDKs' backoff does (no more
        once the run is over and the servers stop)."""
        if self.fallback is None:
            return
        delay = random.uniform(0, self.jitter_s)
        viewer.reconnects += 1
        asyncio.get_running_loop().call_later(delay, self._reconnect, viewer)

    def _reconnect(self, viewer: Viewer) -> None:
        if self.fallback is not None:
            task = asyncio.ensure_future(self._open(viewer, self.fallback))
            self._reconnecting.add(task)
            task.add_done_callback(self._reconnecting.discard)

    def stats(self, target: int) -> dict[str, Any]:
        t = self.tally
        return {
            "viewers": len(self.viewers),
            "current": sum(1 for v in self.viewers if v.joined and v.position >= target),
            "joined": t.joined,
            "rejoined": t.rejoined,
            "recovered": t.recovered,
            "not_recovered": t.not_recovered,
            "failed": t.failed,
            "missing": dict(t.missing),
            "huge_gaps": t.huge_gaps,
            "duplicates": t.duplicates,
            "last_rejoined_at": max(t.rejoined_at, default=0.0),
        }


def serve_viewers(pipe: Connection, channel: str) -> None:
    import uvloop

    raise_open_files_limit()
    uvloop.run(_commands(pipe, ViewerProcess(channel)))


async def _commands(pipe: Connection, process: ViewerProcess) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            name, args = await loop.run_in_executor(None, pipe.recv)
        except EOFError:
            return
        if name == "join":
            pipe.send(await process.join(*args))
        elif name == "fallback":
            process.fallback, process.jitter_s = args
            pipe.send(True)
        elif name == "stats":
            pipe.send(process.stats(*args))
        else:
            pipe.send(True)
            return


class Viewers:
    """`processes` viewer processes driven over pipes."""

    def __init__(self, processes: int, channel: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        for _ in range(processes):
            ours, theirs = context.Pipe()
            proc = context.Process(target=serve_viewers, args=(theirs, channel), daemon=True)
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    async def ask(self, name: str, *per_process: tuple[Any, ...]) -> list[Any]:
        loop = asyncio.get_running_loop()

        def exchange(pipe: Connection, args: tuple[Any, ...]) -> Any:
            pipe.send((name, args))
            return pipe.recv()

        return list(
            await asyncio.gather(
                *(
                    loop.run_in_executor(None, exchange, pipe, args)
                    for pipe, args in zip(self.pipes, per_process, strict=True)
                )
            )
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ask("exit", *[()] * len(self.pipes))
        for proc in self.procs:
            proc.join(5)


def _merge(replies: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"missing": Counter()}
    for reply in replies:
        for key, value in reply.items():
            if key == "missing":
                merged["missing"].update(value)
            elif key == "last_rejoined_at":
                merged[key] = max(merged.get(key, 0.0), value)
            else:
                merged[key] = merged.get(key, 0) + value
    return merged


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with infrastructure() as infra:
        viewers = Viewers(args.processes, infra.channel)
        sink = publish.LuaSink(infra.redis_url, infra.channel)
        shares = [args.viewers // args.processes] * args.processes
        for i in range(args.viewers % args.processes):
            shares[i] += 1
        sent: list[int] = []
        stop_publishing = asyncio.Event()

        async def publish_cards() -> None:
            seq = 0
            while not stop_publishing.is_set():
                seq += 1
                sent.append(await sink.publish(publish.pinned_card(str(infra.room_id), seq)))
                await asyncio.sleep(1 / args.rate)

        try:
            with serve(LIVESELL, infra, pin=False) as a, serve(LIVESELL, infra, pin=False) as b:
                started = time.monotonic()
                joined = sum(await viewers.ask("join", *[(a.port, n) for n in shares]))
                join_s = time.monotonic() - started
                await viewers.ask("fallback", *[(b.port, args.jitter_s)] * args.processes)
                publisher = asyncio.create_task(publish_cards())
                await asyncio.sleep(args.before_s)
                meter = ProcessMeter(b.proc.pid)
                cpu_before = meter.cpu_seconds()
                profiling = contextlib.ExitStack()
                spy: dict[str, Any] = {}
                if args.profile:
                    spy = profiling.enter_context(sampled(b.proc.pid, Path(args.profile)))
                killed_at = time.time()
                os.killpg(a.proc.pid, signal.SIGKILL)
                a.proc.wait(10)
                all_rejoined_s = all_current_s = None
                target = None
                deadline = time.monotonic() + args.timeout_s
                stats: dict[str, Any] = {}
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                    stats = _merge(await viewers.ask("stats", *[(target or 0,)] * args.processes))
                    if all_rejoined_s is None and stats["rejoined"] >= joined:
                        all_rejoined_s = stats["last_rejoined_at"] - killed_at
                        target = sent[-1] + 1 if sent else 1  # the next event: after every rejoin
                    elif target is not None and sent and sent[-1] >= target:
                        if stats["current"] >= joined:
                            all_current_s = time.time() - killed_at
                            break
                cpu_b = meter.cpu_seconds() - cpu_before
                profiling.close()
                stop_publishing.set()
                await publisher
                # node B closes every connection as it stops: nobody reconnects
                await viewers.ask("fallback", *[(None, 0.0)] * args.processes)
        finally:
            await sink.aclose()
            await viewers.close()
    driver = set(sent)
    lost = sum(count for offset, count in stats["missing"].items() if offset in driver)
    return {
        "viewers": args.viewers,
        "joined": joined,
        "join_s": round(join_s, 3),
        "published": len(sent),
        "rate_per_s": args.rate,
        "jitter_s": args.jitter_s,
        "rejoined": stats.get("rejoined", 0),
        "recovered": stats.get("recovered", 0),
        "not_recovered": stats.get("not_recovered", 0),
        "failed": stats.get("failed", 0),
        "lost_deliveries": lost + stats.get("huge_gaps", 0),
        "duplicates": stats.get("duplicates", 0),
        "all_rejoined_s": None if all_rejoined_s is None else round(all_rejoined_s, 3),
        "all_current_s": None if all_current_s is None else round(all_current_s, 3),
        "node_b_cpu_s": round(cpu_b, 3),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "profile": spy,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.reconnect", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--viewers", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=50.0, help="card pins per second")
    parser.add_argument("--jitter-s", type=float, default=0.5, help="reconnect delay bound")
    parser.add_argument("--before-s", type=float, default=1.0, help="publishing before the kill")
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--processes", type=int, default=4, help="viewer processes")
    parser.add_argument("--profile", default="", help="py-spy node B into this file")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    complete = (
        result["recovered"] == result["joined"] == args.viewers
        and result["lost_deliveries"] == 0
        and result["all_current_s"] is not None
    )
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
