"""Reservations (预约): viewers reserve a scheduled room, through a link or a referral code or
neither; the reservation's entry binds attribution as a click would (inside the attribution
window, like any entry). The host sees the count; when the room goes live every reserver is
told on `user#{user_id}` and the outbound webhook `room.live` lists them (live.rooms calls
`take_reservers` in the go-live transaction, so each is notified once)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from attribution.views import LinkCode, ReferralCode
from core.db import Conn


class ReserveRoom(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # a share link's code, or a distributor's referral code: whom the reservation credits
    link_code: LinkCode | None = None
    referral_code: ReferralCode | None = None


class ReservationResult(msgspec.Struct, kw_only=True):
    room_id: str
    # false when the caller had reserved already (nothing new)
    created: bool
    reservations: int
    distributor_id: str | None


class Reserver(msgspec.Struct, kw_only=True):
    user_id: str
    created_at: datetime
    notified_at: datetime | None


class ReservationList(msgspec.Struct, kw_only=True):
    room_id: str
    count: int
    reservers: list[Reserver]


async def add_reservation(conn: Conn, room_id: int, user_id: str) -> tuple[bool, int]:
    """(created, the room's reservations now)."""
    created = await conn.fetchval(
        """INSERT INTO room_reservations (room_id, user_id) VALUES ($1, $2)
           ON CONFLICT DO NOTHING RETURNING true""",
        room_id,
        user_id,
    )
    return bool(created), await reservation_count(conn, room_id)


async def reservation_count(conn: Conn, room_id: int) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM room_reservations WHERE room_id = $1", room_id)
    )


async def list_reservations(conn: Conn, room_id: int) -> ReservationList:
    rows = await conn.fetch(
        """SELECT user_id, created_at, notified_at FROM room_reservations
           WHERE room_id = $1 ORDER BY created_at, user_id LIMIT 10000""",
        room_id,
    )
    return ReservationList(
        room_id=str(room_id),
        count=await reservation_count(conn, room_id),
        reservers=[
            Reserver(user_id=r["user_id"], created_at=r["created_at"], notified_at=r["notified_at"])
            for r in rows
        ],
    )


async def take_reservers(conn: Conn, room_id: int) -> list[str]:
    """In the go-live transaction: the reservers not yet notified, now marked notified."""
    rows = await conn.fetch(
        """UPDATE room_reservations SET notified_at = now()
           WHERE room_id = $1 AND notified_at IS NULL RETURNING user_id""",
        room_id,
    )
    return sorted(r["user_id"] for r in rows)
