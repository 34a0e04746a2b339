"""The hub's own Python work per join, measured in one process without sockets.

    python -m load_tests.join_path                      # 10,000 viewers, 3 rounds
    python -m load_tests.join_path --viewers 2000 --rounds 5

A join storm's CPU (`load_tests.hubs`) is the hub's Python plus the kernel's TCP work and the
event loop's, and varies by ±15 % from storm to storm on a shared machine. This runs the same
`Session` and `Hub` code on in-memory transports, against the real embedded Valkey and
PostgreSQL and the demo room, and times each step of a join on its own (rounds agree within
about 10 %):

    made       the connection's `Session` and `connection_made`
    upgrade    the opening handshake read and checked, the 101 written, the WebSocket protocol made
    connect    the connect frame: parsed by `websockets`, decoded, answered
    subscribe  the subscribe frame: the room's position and shared snapshot, the reply

It also reports how much of that time the garbage collector took (`gc.callbacks`) and how many
joins were not answered within their subscribe frame because they waited on Redis or PostgreSQL
(the room's feed is made by a first viewer kept open, so in a steady room these are the few
whose subscribe found the shared snapshot's query in flight; what their task does afterwards
is not in the steps). The event loop gets a turn every `YIELD_EVERY` joins, as it would between
a storm's reads. What this leaves out (accepting, reading, writing) is what separates it from
the storm.

Then it times a room's first join `--cold` times, from the join to its subscribe reply, with
the room's feed made anew each time: the Redis subscription, the stream position and the
snapshot query, what a storm's first wave of joiners waits for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from core.processes import event_loop_runner
from core.resources import open_resources
from core.settings import load_settings
from live.hub import Hub
from live.server import CONNECT_TIMEOUT_S, PATH, Listener
from live.session import Session
from load_tests.systems import Infra, infrastructure
from load_tests.viewers import client_frame

YIELD_EVERY = 20
STEPS = ("made", "upgrade", "connect", "subscribe")
REQUEST = (
    b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
_SUBSCRIBED = b'"subscribe"'


class MemoryTransport:
    """What a `Session` uses of the event loop's TCP transport, in memory."""

    __slots__ = ("subscribed", "subscribed_at", "closed", "__weakref__")

    def __init__(self) -> None:
        self.subscribed = False  # the subscribe reply was written
        self.subscribed_at = 0.0  # when (`time.perf_counter`)
        self.closed = False

    def write(self, data: bytes) -> None:
        if _SUBSCRIBED in data:
            self.subscribed = True
            self.subscribed_at = time.perf_counter()

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class GcClock:
    """Time spent in the garbage collector, from `gc.callbacks`."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


@dataclass
class Round:
    viewers: int
    step_ns: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STEPS, 0))
    gc_s: float = 0.0
    waited: int = 0  # joins not answered within their subscribe frame (they waited on I/O)

    def us(self, ns: float) -> float:
        return ns / self.viewers / 1000

    @property
    def total_us(self) -> float:
        return self.us(sum(self.step_ns.values()))


Joined = tuple[Session, MemoryTransport]


def joiner(listener: Listener, subscribe: bytes) -> Callable[[Round], Joined]:
    connect = client_frame(b'{"id":1,"connect":{"name":"bench"}}')
    clock = time.perf_counter_ns

    def join(into: Round) -> Joined:
        steps = into.step_ns
        t0 = clock()
        session, transport = listener.session(), MemoryTransport()
        session.connection_made(transport)  # type: ignore[arg-type]
        t1 = clock()
        session.data_received(REQUEST)
        t2 = clock()
        session.data_received(connect)
        t3 = clock()
        session.data_received(subscribe)
        t4 = clock()
        steps["made"] += t1 - t0
        steps["upgrade"] += t2 - t1
        steps["connect"] += t3 - t2
        steps["subscribe"] += t4 - t3
        if not transport.subscribed:
            into.waited += 1  # its subscribe is finished by a task once Redis or PostgreSQL answer
        return session, transport

    return join


async def answered(transports: list[MemoryTransport], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(t.subscribed for t in transports):
        if time.monotonic() > deadline:
            missing = sum(not t.subscribed for t in transports)
            raise RuntimeError(f"{missing} of {len(transports)} joins were never answered")
        await asyncio.sleep(0.01)


async def measure(
    viewers: int, rounds: int, cold: int, progress: Callable[[str], None]
) -> tuple[list[Round], list[float]]:
    """Start the embedded Valkey and PostgreSQL with the demo room, `measure_on` them, then
    time `cold` first joins of the room (`cold_joins_on`)."""
    async with infrastructure() as infra:
        rounds_measured = await measure_on(infra, viewers, rounds, progress)
        return rounds_measured, await cold_joins_on(infra, cold)


@contextlib.asynccontextmanager
async def joining(infra: Infra) -> AsyncIterator[Callable[[Round], Joined]]:
    """An in-process hub on `infra`, its pub/sub link up: yields what joins a viewer to the
    demo room."""
    settings = load_settings(environ=infra.env(), dotenv=None)
    async with open_resources(settings, pool_max=4) as res:
        hub = Hub(res, connect_timeout_s=CONNECT_TIMEOUT_S)
        subscribe = b'{"id":2,"subscribe":{"channel":"%s"}}' % infra.channel.encode()
        async with hub.running():
            async with asyncio.timeout(10):
                await hub.link.connected.wait()
            yield joiner(Listener(hub, res), client_frame(subscribe))


async def cold_joins_on(infra: Infra, count: int) -> list[float]:
    """Seconds from a room's first join to its subscribe reply, `count` times, the room's feed
    made anew each time: the Redis subscription, the stream position and the snapshot."""
    waits: list[float] = []
    async with joining(infra) as join:
        for _ in range(count):
            started = time.perf_counter()
            session, transport = join(Round(1))
            await answered([transport])
            waits.append(transport.subscribed_at - started)
            session.connection_lost(None)  # the room's last viewer: its feed goes
            await asyncio.sleep(0.02)  # and its Redis subscription with it
    return waits


async def measure_on(
    infra: Infra, viewers: int, rounds: int, progress: Callable[[str], None]
) -> list[Round]:
    """Join `viewers` to the demo room `rounds` times through an in-process hub."""
    async with joining(infra) as join:
        # the room's first viewer makes its feed (Redis pub/sub, position, snapshot)
        first, transport = join(Round(1))
        await answered([transport])
        gc.collect()
        gc.freeze()  # as the hub does once it listens (`live.server`)
        clock = GcClock()
        gc.callbacks.append(clock)
        results = []
        try:
            for number in range(1, rounds + 1):
                results.append(await one_round(join, viewers, clock))
                progress(row(number, results[-1]))
        finally:
            gc.callbacks.remove(clock)
            gc.unfreeze()
            first.connection_lost(None)
        return results


async def one_round(join: Callable[[Round], Joined], viewers: int, clock: GcClock) -> Round:
    """Join `viewers`, giving the loop a turn every `YIELD_EVERY`; then close them all."""
    result = Round(viewers)
    clock.seconds = 0.0
    joined: list[Joined] = []
    for i in range(viewers):
        joined.append(join(result))
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
    result.gc_s = clock.seconds
    await answered([transport for _, transport in joined])
    for session, _ in joined:
        session.connection_lost(None)
    joined.clear()
    gc.collect()  # the closed viewers' garbage is not the next round's
    await asyncio.sleep(0.2)
    return result


HEADER = "round  µs/join    made  upgrade  connect  subscribe   of which GC   waited on I/O"


def row(number: int | str, r: Round) -> str:
    steps = "  ".join(
        f"{r.us(r.step_ns[s]):{w}.1f}" for s, w in zip(STEPS, (6, 7, 7, 9), strict=True)
    )
    gc_us = r.gc_s * 1e6 / r.viewers
    return f"{number!s:>5}  {r.total_us:7.1f}  {steps}  {gc_us:12.1f}  {r.waited:14,}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.join_path",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        epilog="Loopback only; the embedded Valkey and PostgreSQL stop by themselves.",
    )
    parser.add_argument(
        "--viewers", type=int, default=10_000, help="joins per round (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds, every viewer closed between them (default: %(default)s)",
    )
    parser.add_argument(
        "--cold",
        type=int,
        default=50,
        help="first joins of the room afterwards, each timed to its reply (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.viewers < 1 or args.rounds < 1 or args.cold < 0:
        parser.error("--viewers and --rounds must be at least 1, --cold at least 0")
    print(
        f"the hub's Python per join, in-process without sockets: {args.viewers:,} viewers per"
        f" round, Python {sys.version.split()[0]} ({sys.executable})",
        flush=True,
    )
    print(HEADER, flush=True)
    results: list[Round] = []
    waits: list[float] = []

    async def run() -> None:
        measured, cold = await measure(
            args.viewers, args.rounds, args.cold, lambda line: print(line, flush=True)
        )
        results.extend(measured)
        waits.extend(cold)

    event_loop_runner()(run())
    ranked = sorted(results, key=lambda r: r.total_us)
    print(row("median", ranked[(len(ranked) - 1) // 2]))
    if waits:
        ms = sorted(w * 1000 for w in waits)
        print(
            f"a room's first join, answered after (ms, {len(ms)} joins): p50 "
            f"{ms[len(ms) // 2]:.2f}, p90 {ms[len(ms) * 9 // 10]:.2f}, max {ms[-1]:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
