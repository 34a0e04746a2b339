"""The room events the live package publishes (after commit, through `core.events.Outbox`)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from core.events import Event
from storefront import ProductView


class RoomLive(Event, tag="room.live"):
    room_id: str
    live_at: datetime


class RoomEnded(Event, tag="room.ended"):
    room_id: str
    ended_at: datetime


class CardPinned(Event, tag="card.pinned"):
    room_id: str
    product: ProductView


class CardUnpinned(Event, tag="card.unpinned"):
    room_id: str
    product_id: str


class ViewersChanged(Event, tag="viewers.changed"):
    """How many viewers watch the room, summed over every hub node; only the latest matters."""

    coalesce: ClassVar[bool] = True
    room_id: str
    viewers: int
