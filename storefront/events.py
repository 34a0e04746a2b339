"""Room events storefront publishes (through core.events, relayed by the hub to `room:{id}`)."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import ClassVar, Literal

from core.events import Event
from storefront.views import DropView


class DropScheduled(Event, tag="drop.scheduled"):
    drop: DropView
    server_time: datetime


class DropStarted(Event, tag="drop.started"):
    drop: DropView
    # viewers compute their countdown against this, not their own clock
    server_time: datetime


class StockChanged(Event, tag="stock.changed"):
    coalesce: ClassVar[bool] = True

    drop_id: str
    quantity: int
    remaining: int
    sold: int
    held: int

    def coalesce_key(self) -> str:
        return f"stock.changed:{self.drop_id}"


class DropSoldOut(Event, tag="drop.sold_out"):
    drop_id: str
    quantity: int
    sold: int
    held: int


class DropClosed(Event, tag="drop.closed"):
    drop_id: str
    # "host": closed early by the host; "ended": its time ran out
    reason: Literal["host", "ended"]
    remaining: int
    sold: int
    held: int


class OrderPlaced(Event, tag="order.placed"):
    """A paid order, for the room's ticker: who (masked), how many, of which drop."""

    drop_id: str
    product_id: str
    buyer: str
    quantity: int
    placed_at: datetime


def mask_buyer(name: str) -> str:
    """Hide most of a buyer's name for the public ticker: 张三 → 张*, alice → a***e."""
    chars = [c for c in name if not unicodedata.category(c).startswith("C")]
    if not chars:
        return "*"
    if len(chars) == 1:
        return "*"
    if len(chars) == 2 or _wide(chars[0]):
        return chars[0] + "*" * min(len(chars) - 1, 3)
    return chars[0] + "***" + chars[-1]


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")
