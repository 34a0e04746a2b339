"""The driver: publishes livesell's own room events on a timetable through each system's Redis path.

The events are the production types (`live.events`, `storefront.events`), encoded as livesell
encodes them, so every system relays exactly the bytes livesell's API and hub publish. Nothing is
added to them: latency is measured by the publication's `offset` (which every push carries): the
driver notes when each offset left, viewers note when it arrived.

livesell and the relay peers (Node `ws`, Starlette, the uvloop floor) get their events through
`core.events.Publisher`, the exact path livesell's API uses after commit (Lua: offset, history
stream, PUBLISH). python-socketio gets the same event data through its own `AsyncRedisManager`
(write-only), the way a socket.io deployment publishes from outside the server.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import msgspec
import redis.asyncio as aioredis

from core.events import Event, Publisher
from live.events import CardPinned, ViewersChanged
from storefront.events import DropStarted, OrderPlaced, StockChanged, mask_buyer
from storefront.views import DropView, ProductView

DROP_ID = "1"
PRODUCT_ID = "1"


class Sink(Protocol):
    async def publish(self, event: Event) -> int:
        """Publish `event`; returns its offset in the channel."""
        ...

    async def aclose(self) -> None: ...


class LuaSink:
    """Publishes like livesell's API: `Publisher.publish(channel, event)`."""

    def __init__(self, redis_url: str, channel: str) -> None:
        self.client = aioredis.Redis.from_url(redis_url)
        self.publisher = Publisher(self.client)
        self.channel = channel

    async def publish(self, event: Event) -> int:
        offset, _epoch = await self.publisher.publish(self.channel, event)
        return offset

    async def aclose(self) -> None:
        await self.client.aclose()


class SocketioSink:
    """Publishes like a socket.io deployment: an external write-only Redis manager emits."""

    def __init__(self, redis_url: str, channel: str) -> None:
        import socketio

        self.manager = socketio.AsyncRedisManager(redis_url, write_only=True)
        self.channel = channel
        self.offset = 0

    async def publish(self, event: Event) -> int:
        self.offset += 1
        data = msgspec.to_builtins(event)
        await self.manager.emit(
            "pub",
            {"channel": self.channel, "pub": {"data": data, "offset": self.offset}},
            namespace="/",
            room=self.channel,
        )
        return self.offset

    async def aclose(self) -> None:
        redis = getattr(self.manager, "redis", None)
        if redis is not None:
            await redis.aclose()


@dataclass
class Timetable:
    """Events at offsets (seconds from the start), in order."""

    entries: list[tuple[float, Event]]

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class Sent:
    """What one `play` published: when each offset left (ns) and which were latest-value events."""

    at_ns: dict[int, int] = field(default_factory=dict)
    coalescable: list[int] = field(default_factory=list)  # ascending offsets
    lag_s: float = 0.0  # how late the last event left


def pinned_card(room_id: str, seq: int) -> CardPinned:
    """The fan-out message: a host pins a product card (a push of about 210 bytes)."""
    product = ProductView(
        id=str(seq), sku=f"BENCH-{seq:06d}", title="Tea set", price_cents=12_900,
        commission_bps=800,
    )  # fmt: skip
    return CardPinned(room_id=room_id, product=product)


def cards(room_id: str, rate_per_s: float, count: int) -> Timetable:
    """`count` card pins, evenly spaced."""
    return Timetable([(i / rate_per_s, pinned_card(room_id, i)) for i in range(count)])


def flash_sale_mix(
    room_id: str, duration_s: float, stock_per_s: int = 200, orders_per_s: int = 50
) -> Timetable:
    """A drop in room `room_id`, then `stock.changed` and `order.placed` at steady rates and
    viewer counts at 1/s."""
    quantity = int(duration_s * stock_per_s) + 1
    starts = datetime(2030, 1, 1, 12, tzinfo=UTC)
    drop = DropView(
        id=DROP_ID, room_id=room_id, product_id=PRODUCT_ID, price_cents=9_900,
        quantity=quantity, per_buyer_limit=2, starts_at=starts,
        ends_at=starts + timedelta(minutes=5), status="live", remaining=quantity, sold=0, held=0,
    )  # fmt: skip
    entries: list[tuple[float, Event]] = [(0.0, DropStarted(drop=drop, server_time=starts))]
    entries += [
        (i / stock_per_s, StockChanged(
            drop_id=DROP_ID, quantity=quantity, remaining=quantity - i, sold=i, held=0
        ))
        for i in range(int(duration_s * stock_per_s))
    ]  # fmt: skip
    entries += [
        (i / orders_per_s, OrderPlaced(
            drop_id=DROP_ID, product_id=PRODUCT_ID, buyer=mask_buyer(f"buyer{i % 100:02d}"),
            quantity=1, placed_at=starts + timedelta(seconds=i / orders_per_s),
        ))
        for i in range(int(duration_s * orders_per_s))
    ]  # fmt: skip
    entries += [
        (float(i), ViewersChanged(room_id=room_id, viewers=5000 + i))
        for i in range(int(duration_s))
    ]
    entries.sort(key=lambda entry: entry[0])
    return Timetable(entries)


async def play(sink: Sink, timetable: Timetable) -> Sent:
    """Publish every event at its time (late ones at once), noting when each offset left."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = Sent()
    for at, event in timetable.entries:
        delay = start + at - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        else:
            sent.lag_s = -delay
        left = time.time_ns()
        offset = await sink.publish(event)
        sent.at_ns[offset] = left
        if type(event).coalesce:
            sent.coalescable.append(offset)
    return sent
