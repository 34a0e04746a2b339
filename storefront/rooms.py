"""The little storefront needs to know about rooms, read with plain SQL (rooms belong to live)."""

from __future__ import annotations

import msgspec

from core.auth import Principal
from storefront.conn import Conn
from storefront.errors import NotRoomHost, RoomNotFound


class Room(msgspec.Struct, frozen=True):
    id: int
    host_id: str
    status: str


async def fetch_room(conn: Conn, room_id: int, *, lock: bool = False) -> Room:
    """The room, or RoomNotFound. `lock` takes a share lock for the rest of the transaction."""
    sql = "SELECT id, host_id, status FROM rooms WHERE id = $1"
    row = await conn.fetchrow(sql + (" FOR SHARE" if lock else ""), room_id)
    if row is None:
        raise RoomNotFound(room_id)
    return Room(id=row["id"], host_id=row["host_id"], status=row["status"])


def check_host(room: Room, who: Principal) -> None:
    """Only the room's host (or an admin) controls its drops and ships its orders."""
    if not who.is_admin and who.user_id != room.host_id:
        raise NotRoomHost(room.id)
