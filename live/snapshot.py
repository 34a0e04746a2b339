"""The room snapshot: what `GET /api/rooms/{id}` returns and what the hub's subscribe reply
carries as `data`, so a viewer joining (or failing to recover) starts from the current state.

A join storm shares one query per room and window (`SharedSnapshots`): the snapshot is encoded
once and its bytes go into every joiner's reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import msgspec

import attribution
import storefront
from core.db import Conn
from core.rooms import Room, RoomStatus, get_room
from live.errors import UnknownChannel
from live.protocol import encode
from storefront import CouponView, DropView, ProductView

if TYPE_CHECKING:
    from live.feed import Feed

SNAPSHOT_TTL_S = 0.25  # a mass (re)subscribe shares one snapshot query per room per window


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


@dataclass
class _Fetch:
    feed: Feed  # a feed closed and made again for the channel shares nothing with the old one
    # when its query began and the stream position the feed vouched for then (0: none); None
    # while it waits for the one ahead
    started: float | None = None
    top: int = 0
    snapshot: RoomSnapshot | None = None  # decoded, once the query answered
    task: asyncio.Future[bytes] = field(init=False)


class SharedSnapshots:
    """The encoded snapshot of each room with subscribers on this node, shared by the subscribes
    it is valid for; `viewers_of(room_id)` is the room's viewer total across nodes.

    While subscribes keep coming, the next fetch starts when the one they share is half its
    window old, so a storm's joiners find a finished, valid snapshot instead of waiting on a
    query each window."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        viewers_of: Callable[[str], int],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._pool = pool
        self._viewers_of = viewers_of
        # the event loop's clock (`loop.time`)
        self._clock = clock or asyncio.get_running_loop().time
        self._started: dict[str, _Fetch] = {}  # the latest fetch started, maybe in flight
        self._ready: dict[str, _Fetch] = {}  # the latest fetch that succeeded
        # the latest `viewers.changed` of each channel: its feed, offset and count
        self._counts: dict[str, tuple[Feed, int, int]] = {}

    def forget(self, channel: str) -> None:
        self._started.pop(channel, None)
        self._ready.pop(channel, None)
        self._counts.pop(channel, None)

    def counted(self, feed: Feed, offset: int, viewers: int) -> None:
        """`feed` received `viewers.changed` (`viewers`) at `offset`. A snapshot no other
        publication has passed takes the count and stays valid at `offset`, without a query:
        the room's count changes about once a second while a storm joins it, and each change
        would otherwise send every joiner to wait for a query."""
        self._counts[feed.channel] = (feed, offset, viewers)
        ready = self._ready.get(feed.channel)
        if ready is not None:
            self._ready[feed.channel] = self._with_count(ready)

    def _with_count(self, fetch: _Fetch) -> _Fetch:
        """`fetch` with the channel's latest count when that count is the only publication
        after it (the same fetch otherwise)."""
        count = self._counts.get(fetch.feed.channel)
        if count is None or fetch.snapshot is None:
            return fetch
        feed, offset, viewers = count
        if feed is not fetch.feed or fetch.top != offset - 1:
            return fetch
        snapshot = msgspec.structs.replace(fetch.snapshot, viewers=viewers)
        counted = _Fetch(feed=feed, started=fetch.started, top=offset, snapshot=snapshot)
        counted.task = asyncio.get_running_loop().create_future()
        counted.task.set_result(encode(snapshot))
        return counted

    @staticmethod
    def _valid(fetch: _Fetch | None, feed: Feed, position: int, read_at: float, now: float) -> bool:
        """Whether a subscribe at stream position `position` (read at `read_at`) may share
        `fetch`: one whose query has not begun, or began after the position was read (so it
        reflects every event up to it), or that no publication has passed since; a finished
        one only within its window.

        A fetch in flight has no age limit: a query started now could not answer sooner, and on
        a loaded node a query can outlast the window; one started per window would pile
        queries up, each slower than the last, while joiners wait on all of them."""
        if fetch is None or fetch.feed is not feed:
            return False
        started = fetch.started
        if started is None:
            return True
        if fetch.task.done() and (
            fetch.task.exception() is not None or now - started >= SNAPSHOT_TTL_S
        ):
            return False
        return started >= read_at or (position <= fetch.top == feed.known_position())

    def shared(self, feed: Feed, position: int, read_at: float) -> bytes | None:
        """The snapshot bytes when a finished fetch can be shared: no await, no query."""
        now = self._clock()
        ready = self._ready.get(feed.channel)
        if ready is None or not self._valid(ready, feed, position, read_at, now):
            return None
        latest = self._started.get(feed.channel)
        assert ready.started is not None  # finished
        if now - ready.started >= SNAPSHOT_TTL_S / 2 and (latest is None or latest.task.done()):
            self._start(feed)  # the next window's, ahead of time
        return ready.task.result()

    async def fetch(self, feed: Feed, position: int, read_at: float) -> bytes:
        """The snapshot for a subscribe reply; concurrent subscribes share one query."""
        now = self._clock()
        fetch = self._started.get(feed.channel)
        if fetch is None or not self._valid(fetch, feed, position, read_at, now):
            fetch = self._start(feed)
        return await asyncio.shield(fetch.task)

    def _start(self, feed: Feed) -> _Fetch:
        """A fetch for `feed`; its query begins once the one in flight (if any) is done, so a
        room has one query at a time and at most one waiting, whatever the joiners."""
        assert feed.room_id is not None
        ahead = self._started.get(feed.channel)
        behind = None
        if ahead is not None and ahead.feed is feed and not ahead.task.done():
            behind = ahead.task
        fetch = _Fetch(feed=feed)
        fetch.task = asyncio.create_task(self._query(fetch, behind))
        self._started[feed.channel] = fetch
        fetch.task.add_done_callback(lambda _: self._done(feed.channel, fetch))
        return fetch

    def _done(self, channel: str, fetch: _Fetch) -> None:
        if fetch.task.cancelled() or fetch.task.exception() is not None:
            return  # the subscribes that awaited it report the error
        latest = self._started.get(channel)
        if latest is None or latest.feed is not fetch.feed:
            return  # the channel was forgotten meanwhile
        fetch = self._with_count(fetch)
        ready = self._ready.get(channel)
        if (
            ready is None
            or ready.feed is not fetch.feed
            or (ready.started or 0.0) < (fetch.started or 0.0)
        ):
            self._ready[channel] = fetch

    async def _query(self, fetch: _Fetch, behind: asyncio.Future[bytes] | None) -> bytes:
        if behind is not None:
            await asyncio.wait([behind])  # its outcome is for the subscribes that awaited it
        feed = fetch.feed
        fetch.started = self._clock()
        fetch.top = feed.known_position() or 0
        room_id = int(feed.room_id or 0)
        async with self._pool.acquire() as conn:
            snapshot = await room_snapshot(conn, room_id, self._viewers_of(str(room_id)))
        if snapshot is None:
            raise UnknownChannel(f"no room {room_id}")
        fetch.snapshot = snapshot
        return encode(snapshot)
