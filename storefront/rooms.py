"""Rooms as storefront sees them: `core.rooms` lookups turned into storefront's errors."""

from __future__ import annotations

from core.auth import Principal
from core.db import Conn
from core.errors import NotRoomHost, RoomNotFound
from core.rooms import Room, get_room


async def fetch_room(conn: Conn, room_id: int, *, lock: bool = False) -> Room:
    """The room, or RoomNotFound. `lock` takes a share lock for the rest of the transaction."""
    room = await get_room(conn, room_id, for_share=lock)
    if room is None:
        raise RoomNotFound(room_id)
    return room


def check_host(room: Room, who: Principal) -> None:
    """Only the room's host (or an admin) controls its drops and ships its orders."""
    if not who.is_admin and who.user_id != room.host_id:
        raise NotRoomHost(room.id)
