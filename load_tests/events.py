"""The benchmark's events: the shapes of livesell's room events plus a send-time stamp.

Every event carries `bt`, the publisher's `time.time_ns()` when it was sent, so viewers measure
end-to-end latency. Latest-value events also carry `cq`, a run-wide sequence number: a viewer's
highest `cq` tells how many of them it is up to date with, even after the server coalesced some.
The same encoded bytes go to livesell and to every peer.
"""

from __future__ import annotations

from typing import ClassVar

from core.events import Event

PAD = "x" * 96  # brings a `bench.tick` push frame to about 200 bytes, as in DESIGN.md


class Tick(Event, tag="bench.tick"):
    """The fan-out benchmark's message: about 200 bytes on the wire."""

    bt: int
    seq: int
    note: str = PAD


class DropStarted(Event, tag="drop.started"):
    bt: int
    drop_id: str
    product_id: str
    price_cents: int
    quantity: int
    per_buyer_limit: int
    starts_at: str
    ends_at: str
    server_time: str


class StockChanged(Event, tag="stock.changed"):
    coalesce: ClassVar[bool] = True
    bt: int
    cq: int
    drop_id: str
    remaining: int

    def coalesce_key(self) -> str:
        return f"stock.changed:{self.drop_id}"


class OrderPlaced(Event, tag="order.placed"):
    bt: int
    drop_id: str
    buyer: str
    quantity: int


class ViewersChanged(Event, tag="viewers.changed"):
    coalesce: ClassVar[bool] = True
    bt: int
    cq: int
    count: int
