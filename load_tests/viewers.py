"""Cheap WebSocket viewers: raw asyncio protocols on uvloop, thousands per process.

A viewer does what a real client does on the wire (HTTP upgrade, join handshake, answering
pings) and nothing more. It tallies every publication it receives by its `offset` (which every
push carries, as `"offset":N` in Centrifugo's framing and `"offset": N` in socket.io's), so the
count works on any framing: one push per frame, several joined by `\\n`, or socket.io packets.
Each viewer keeps the highest offset it saw: latest-value events the server merged are covered by
a later one. One viewer in `sample_every` also records when each offset arrived; the driver,
which noted when each offset left, turns that into latency (all processes share the clock).

Viewer processes are driven by `Fleet` (in `fleet.py`) over a pipe, or over an authenticated TCP
connection when `viewer_agent.py` runs them on another machine; see `serve_commands`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import re
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import cast

OFFSET = re.compile(rb'"offset": ?(\d+)')
ZERO_MASK = b"\x00\x00\x00\x00"  # a legal client mask that leaves the payload as it is
CONNECT_TIMEOUT_S = 10.0  # TCP connect
JOIN_TIMEOUT_S = 20.0  # from connected to joined (upgrade and every join step)
# CPython's third threshold in a viewer process (`hold_back_full_collections`)
NO_FULL_COLLECTIONS = 1_000_000


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client → server frame."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65_536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    return header + ZERO_MASK + payload


@dataclass(frozen=True)
class Dialect:
    """How one kind of server is joined: the path and the (frame to send, reply to await) steps."""

    name: str
    path: str
    steps: tuple[tuple[bytes | None, bytes], ...]
    ping: bytes
    pong: bytes
    error: bytes  # in a join reply: contained (Centrifugo) or leading (socket.io)
    error_leads: bool = False

    def is_error(self, payload: bytes) -> bool:
        return payload.startswith(self.error) if self.error_leads else self.error in payload


def dialect(name: str, channel: str) -> Dialect:
    if name == "centrifugo":
        subscribe = b'{"id":2,"subscribe":{"channel":"' + channel.encode() + b'"}}'
        return Dialect(
            name=name,
            path="/connection/websocket",
            steps=(
                (b'{"id":1,"connect":{"name":"bench"}}', b'"id":1'),
                (subscribe, b'"id":2'),
            ),
            ping=b"{}",
            pong=client_frame(b"{}"),
            error=b'"error"',
        )
    if name == "socketio":
        join = b'421["join","' + channel.encode() + b'"]'
        return Dialect(
            name=name,
            path="/socket.io/?EIO=4&transport=websocket",
            steps=((None, b"0{"), (b"40", b"40"), (join, b"431[")),
            ping=b"2",
            pong=client_frame(b"3"),
            error=b"44",
            error_leads=True,
        )
    raise ValueError(f"unknown dialect {name!r}")


@dataclass
class Counters:
    events: int = 0  # publications received
    received: dict[int, int] = field(default_factory=dict)  # offset → viewers that received it
    arrivals: list[tuple[int, int]] = field(default_factory=list)  # sampled (offset, ns)
    joined: int = 0
    failed: int = 0
    dropped: int = 0  # joined, then closed by the server or the network
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str) -> None:
        self.failed += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1


class Viewer(asyncio.Protocol):
    """One WebSocket connection; frames are parsed only as far as counting needs."""

    def __init__(self, host: str, d: Dialect, counters: Counters, sampled: bool) -> None:
        self.request = (
            f"GET {d.path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.d = d
        self.counters = counters
        self.sampled = sampled
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.step = 0
        self.last_offset = 0
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    @property
    def joined(self) -> bool:
        return self.step >= len(self.d.steps)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(False)
            self.counters.error("closed during join")
        elif self.joined and self.transport is not None:
            self.counters.dropped += 1
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.abort()

    def _advance(self) -> None:
        send, _ = self.d.steps[self.step]
        if send is not None and self.transport is not None:
            self.transport.write(client_frame(send))

    def fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_result(False)
            self.counters.error(reason)
        self.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.fail(buf[: buf.find(b"\r\n")].decode(errors="replace"))
                return
            self.upgraded = True
            buf = buf[end + 4 :]
            self._advance()
        pos, size = 0, len(buf)
        while size - pos >= 2:
            length = buf[pos + 1] & 0x7F
            head = 2
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
            opcode = buf[pos] & 0x0F
            payload = buf[pos + head : end]
            pos = end
            if opcode <= 0x2:
                self._message(payload)
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(client_frame(payload, 0xA))
            elif opcode == 0x8:
                self.fail("close frame during join")
                return
        self.buffer = buf[pos:] if pos < size else b""

    def _message(self, payload: bytes) -> None:
        if payload == self.d.ping:
            if self.transport is not None:
                self.transport.write(self.d.pong)
            return
        if not self.joined:
            _, expect = self.d.steps[self.step]
            if expect not in payload:
                return
            if self.d.is_error(payload):
                self.fail(payload[:120].decode(errors="replace"))
                return
            self.step += 1
            if self.joined:
                self.counters.joined += 1
                self.done.set_result(True)
            else:
                self._advance()
            return
        found = OFFSET.findall(payload)
        if not found:
            return
        counters = self.counters
        counters.events += len(found)
        received = counters.received
        offsets = [int(raw) for raw in found]
        for offset in offsets:
            received[offset] = received.get(offset, 0) + 1
        self.last_offset = max(self.last_offset, *offsets)
        if self.sampled:
            now = time.time_ns()
            counters.arrivals.extend((offset, now) for offset in offsets)


class ViewerProcess:
    """The viewers of one process and the commands that drive them."""

    def __init__(self, sample_every: int) -> None:
        self.sample_every = sample_every
        self.viewers: list[Viewer] = []
        self.counters = Counters()
        self.opened = 0

    async def connect(
        self, host: str, port: int, dialect_name: str, channel: str, count: int, parallel: int
    ) -> dict[str, object]:
        """Open `count` viewers, `parallel` joins in flight: that many workers take the next
        join when theirs is done, so a join costs one timer and no task of its own (the
        fleet's CPU per join is what caps a storm's rate once the server is cheap)."""
        loop = asyncio.get_running_loop()
        d = dialect(dialect_name, channel)
        before = self.counters.joined, self.counters.failed
        started = time.time()
        address = f"{host}:{port}"
        left = count

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                sampled = self.opened % self.sample_every == 0
                self.opened += 1
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT_S):
                        _, viewer = await loop.create_connection(
                            functools.partial(Viewer, address, d, self.counters, sampled),
                            host,
                            port,
                        )
                except (OSError, TimeoutError) as exc:
                    self.counters.error(f"connect: {type(exc).__name__}")
                    continue
                if not viewer.done.done():
                    timer = loop.call_later(JOIN_TIMEOUT_S, viewer.fail, "join timed out")
                    await viewer.done
                    timer.cancel()
                if viewer.done.result():
                    self.viewers.append(viewer)

        await asyncio.gather(*(worker() for _ in range(min(parallel, count))))
        return {
            "joined": self.counters.joined - before[0],
            "failed": self.counters.failed - before[1],
            "started": started,
            "finished": time.time(),
            "errors": dict(self.counters.errors),
        }

    def trim(self, keep: int) -> int:
        for viewer in self.viewers[keep:]:
            viewer.close()
        del self.viewers[keep:]
        return len(self.viewers)

    def reset(self) -> None:
        self.counters.events = 0
        self.counters.received = {}
        self.counters.arrivals = []
        for viewer in self.viewers:
            viewer.last_offset = 0

    def stats(self, latencies: bool) -> dict[str, object]:
        c = self.counters
        alive = [v for v in self.viewers if v.transport is not None]
        last_offsets: dict[int, int] = {}
        for viewer in alive:
            last_offsets[viewer.last_offset] = last_offsets.get(viewer.last_offset, 0) + 1
        return {
            "viewers": len(alive),
            "events": c.events,
            "received": c.received,
            "last_offsets": last_offsets,
            "arrivals": c.arrivals if latencies else [],
            "dropped": c.dropped,
        }


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1_048_576
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        return soft
    return want


def hold_back_full_collections() -> None:
    """No automatic full collection in this process; young collections as before.

    A full collection walks every viewer the process holds, and the fleet's processes, sharing
    a core and joining in step, reach theirs together: 110-190 ms each on the shared core, with
    the server under test idle for 50-100 ms in the middle of a storm (seen for both livesell
    and Node). Viewers live until trimmed: the process collects then, between phases."""
    first, second, _ = gc.get_threshold()
    gc.set_threshold(first, second, NO_FULL_COLLECTIONS)


def serve_commands(pipe: Connection, sample_every: int, cpus: list[int] | None) -> None:
    """Entry point of a viewer process: run commands from the pipe until `exit`."""
    import uvloop

    if cpus:
        os.sched_setaffinity(0, cpus)
    raise_open_files_limit()
    hold_back_full_collections()
    uvloop.run(_command_loop(pipe, ViewerProcess(sample_every)))


async def _command_loop(pipe: Connection, process: ViewerProcess) -> None:
    loop = asyncio.get_running_loop()
    # commands are read by a thread: a pipe watched by the event loop is made non-blocking,
    # and a large stats reply would then fail to send
    while True:
        try:
            name, args = await loop.run_in_executor(None, pipe.recv)
        except EOFError:
            name, args = "exit", ()
        reply: object
        if name == "connect":
            reply = await process.connect(*args)  # type: ignore[arg-type]
        elif name == "trim":
            reply = process.trim(*args)  # type: ignore[arg-type]
            gc.collect()  # the closed viewers' cycles (no full collection runs by itself)
        elif name == "reset":
            process.reset()
            reply = True
        elif name == "stats":
            reply = process.stats(*args)  # type: ignore[arg-type]
        elif name == "cpu":
            reply = time.process_time()  # user + system, every thread of the process
        elif name == "exit":
            process.trim(0)
            await asyncio.sleep(0.05)
            with contextlib.suppress(OSError):
                pipe.send(True)
            return
        else:
            reply = ValueError(f"unknown command {name!r}")
        pipe.send(reply)
