"""The room snapshot: what `GET /api/rooms/{id}` returns and what the hub's subscribe reply
carries as `data`, so a viewer joining (or failing to recover) starts from the current state."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

import attribution
import storefront
from core.db import Conn
from core.rooms import Room, RoomStatus, get_room
from storefront import CouponView, DropView, ProductView


class RoomView(msgspec.Struct, kw_only=True):
    id: str
    host_id: str
    title: str
    status: RoomStatus
    pinned_product_id: str | None
    created_at: datetime
    live_at: datetime | None
    ended_at: datetime | None


class RoomSnapshot(msgspec.Struct, kw_only=True):
    room: RoomView
    pinned: ProductView | None
    drop: DropView | None
    server_time: datetime
    viewers: int
    # coupons still claimable (or soon), newest first, with what remains
    coupons: list[CouponView] = []
    # viewers who reserved the room
    reservations: int = 0


def room_view(room: Room) -> RoomView:
    return RoomView(
        id=str(room.id),
        host_id=room.host_id,
        title=room.title,
        status=room.status,
        pinned_product_id=None if room.pinned_product_id is None else str(room.pinned_product_id),
        created_at=room.created_at,
        live_at=room.live_at,
        ended_at=room.ended_at,
    )


async def room_snapshot(conn: Conn, room_id: int, viewers: int) -> RoomSnapshot | None:
    """The room's current state, or None when there is no such room."""
    room = await get_room(conn, room_id)
    if room is None:
        return None
    pinned = None
    if room.pinned_product_id is not None:
        pinned = await storefront.product_view(conn, room.pinned_product_id)
    drop = await storefront.active_drop_view(conn, room_id)
    coupons = await storefront.room_coupons(conn, room_id)
    return RoomSnapshot(
        coupons=coupons.coupons,
        reservations=await attribution.reservation_count(conn, room_id),
        room=room_view(room),
        pinned=pinned,
        drop=drop,
        server_time=datetime.now(UTC),
        viewers=viewers,
    )
