"""The driver: publishes stamped events on a timetable through each system's own Redis path.

livesell and the relay peers (Node `ws`, Starlette, the uvloop floor) get their events through
`core.events.Publisher`, the exact path livesell's API uses after commit (Lua: offset, history
stream, PUBLISH). python-socketio gets the same event data through its own `AsyncRedisManager`
(write-only), the way a socket.io deployment publishes from outside the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec
import redis.asyncio as aioredis

from core.events import Event, Publisher
from load_tests import events as ev

EventFactory = Callable[[int], Event]  # stamp (ns) → event


class Sink(Protocol):
    async def publish(self, event: Event) -> None: ...

    async def aclose(self) -> None: ...


class LuaSink:
    """Publishes like livesell's API: `Publisher.publish(channel, event)`."""

    def __init__(self, redis_url: str, channel: str) -> None:
        self.client = aioredis.Redis.from_url(redis_url)
        self.publisher = Publisher(self.client)
        self.channel = channel

    async def publish(self, event: Event) -> None:
        await self.publisher.publish(self.channel, event)

    async def aclose(self) -> None:
        await self.client.aclose()


class SocketioSink:
    """Publishes like a socket.io deployment: an external write-only Redis manager emits."""

    def __init__(self, redis_url: str, channel: str) -> None:
        import socketio

        self.manager = socketio.AsyncRedisManager(redis_url, write_only=True)
        self.channel = channel
        self.offset = 0

    async def publish(self, event: Event) -> None:
        self.offset += 1
        data = msgspec.to_builtins(event)
        await self.manager.emit(
            "pub",
            {"channel": self.channel, "pub": {"data": data, "offset": self.offset}},
            namespace="/",
            room=self.channel,
        )

    async def aclose(self) -> None:
        redis = getattr(self.manager, "redis", None)
        if redis is not None:
            await redis.aclose()


@dataclass
class Timetable:
    """Events at offsets (seconds from the start), in order."""

    entries: list[tuple[float, EventFactory]]

    @property
    def duration_s(self) -> float:
        return self.entries[-1][0] if self.entries else 0.0

    def __len__(self) -> int:
        return len(self.entries)


def ticks(rate_per_s: float, count: int) -> Timetable:
    """`count` fan-out ticks, evenly spaced."""
    return Timetable([(i / rate_per_s, _tick(i)) for i in range(count)])


def _tick(seq: int) -> EventFactory:
    return lambda stamp: ev.Tick(bt=stamp, seq=seq)


def flash_sale_mix(duration_s: float, stock_per_s: int = 200, orders_per_s: int = 50) -> Timetable:
    """A drop, then `stock.changed` and `order.placed` at steady rates and viewer counts at 1/s."""
    quantity = int(duration_s * stock_per_s) + 1
    entries: list[tuple[float, EventFactory]] = [(0.0, _drop_started(quantity, duration_s))]
    entries += [
        (i / stock_per_s, _stock(quantity - i)) for i in range(int(duration_s * stock_per_s))
    ]
    entries += [(i / orders_per_s, _order(i)) for i in range(int(duration_s * orders_per_s))]
    entries += [(float(i), _viewers(5000 + i)) for i in range(int(duration_s))]
    entries.sort(key=lambda entry: entry[0])
    return Timetable(_number_coalescable(entries))


def _number_coalescable(
    entries: list[tuple[float, EventFactory]],
) -> list[tuple[float, EventFactory]]:
    """Give latest-value events their run-wide `cq` in publication order."""
    numbered: list[tuple[float, EventFactory]] = []
    cq = 0
    for at, make in entries:
        probe = make(0)
        if type(probe).coalesce:
            cq += 1
            numbered.append((at, _with_cq(make, cq)))
        else:
            numbered.append((at, make))
    return numbered


def _with_cq(make: EventFactory, cq: int) -> EventFactory:
    return lambda stamp: msgspec.structs.replace(make(stamp), cq=cq)  # type: ignore[type-var]


def _drop_started(quantity: int, duration_s: float) -> EventFactory:
    return lambda stamp: ev.DropStarted(
        bt=stamp,
        drop_id="1",
        product_id="1",
        price_cents=9_900,
        quantity=quantity,
        per_buyer_limit=2,
        starts_at="2030-01-01T12:00:00Z",
        ends_at="2030-01-01T12:05:00Z",
        server_time="2030-01-01T12:00:00Z",
    )


def _stock(remaining: int) -> EventFactory:
    return lambda stamp: ev.StockChanged(bt=stamp, cq=0, drop_id="1", remaining=remaining)


def _order(i: int) -> EventFactory:
    return lambda stamp: ev.OrderPlaced(
        bt=stamp, drop_id="1", buyer=f"u***{i % 100:02d}", quantity=1
    )


def _viewers(count: int) -> EventFactory:
    return lambda stamp: ev.ViewersChanged(bt=stamp, cq=0, count=count)


def coalescable_count(timetable: Timetable) -> int:
    return sum(1 for _, make in timetable.entries if type(make(0)).coalesce)


async def play(sink: Sink, timetable: Timetable) -> float:
    """Publish every event at its time (late ones at once); returns how late the last one was."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    lag = 0.0
    for at, make in timetable.entries:
        delay = start + at - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        else:
            lag = -delay
        await sink.publish(make(time.time_ns()))
    return lag
