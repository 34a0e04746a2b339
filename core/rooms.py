"""Rooms table access: plain SQL any package may call without importing `live`.

`live` owns the room routes and events; storefront and attribution only need to ask whether a
room exists, who hosts it, and whether it is live.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from core.db import Conn

RoomStatus = Literal["scheduled", "live", "ended"]

# a plain connection or one borrowed from the pool


class Room(msgspec.Struct, kw_only=True, frozen=True):
    id: int
    host_id: str
    title: str
    status: RoomStatus
    pinned_product_id: int | None
    created_at: datetime
    live_at: datetime | None
    ended_at: datetime | None


_COLUMNS = "id, host_id, title, status, pinned_product_id, created_at, live_at, ended_at"


def _room(row: asyncpg.Record | None) -> Room | None:
    return Room(**dict(row)) if row is not None else None


async def get_room(
    conn: Conn, room_id: int, *, for_update: bool = False, for_share: bool = False
) -> Room | None:
    """The room, or None. `for_update` / `for_share` lock the row for the rest of the
    transaction (share: the room cannot end while a drop is being created in it)."""
    lock = " FOR UPDATE" if for_update else " FOR SHARE" if for_share else ""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM rooms WHERE id = $1{lock}", room_id)
    return _room(row)


async def room_exists(conn: Conn, room_id: int) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM rooms WHERE id = $1)", room_id))


async def room_host(conn: Conn, room_id: int) -> str | None:
    """The host's user id, or None when there is no such room."""
    host: str | None = await conn.fetchval("SELECT host_id FROM rooms WHERE id = $1", room_id)
    return host


async def is_room_host(conn: Conn, room_id: int, user_id: str) -> bool:
    return await room_host(conn, room_id) == user_id


async def create_room(conn: Conn, host_id: str, title: str) -> Room:
    row = await conn.fetchrow(
        f"INSERT INTO rooms (host_id, title) VALUES ($1, $2) RETURNING {_COLUMNS}", host_id, title
    )
    room = _room(row)
    assert room is not None
    return room


async def set_live(conn: Conn, room_id: int) -> Room | None:
    """scheduled → live; None when the room was not scheduled (the caller says why)."""
    row = await conn.fetchrow(
        f"""UPDATE rooms SET status = 'live', live_at = now()
            WHERE id = $1 AND status = 'scheduled' RETURNING {_COLUMNS}""",
        room_id,
    )
    return _room(row)


async def set_ended(conn: Conn, room_id: int) -> Room | None:
    """scheduled or live → ended (the pinned card is taken down); None when already ended."""
    row = await conn.fetchrow(
        f"""UPDATE rooms SET status = 'ended', ended_at = now(), pinned_product_id = NULL
            WHERE id = $1 AND status <> 'ended' RETURNING {_COLUMNS}""",
        room_id,
    )
    return _room(row)


async def set_pinned(conn: Conn, room_id: int, product_id: int | None) -> Room | None:
    """Pin (or, with None, unpin) a product card; None when the room has ended."""
    row = await conn.fetchrow(
        f"""UPDATE rooms SET pinned_product_id = $2
            WHERE id = $1 AND status <> 'ended' RETURNING {_COLUMNS}""",
        room_id,
        product_id,
    )
    return _room(row)
