"""The room snapshot shared by a join storm: one query per room at a time, however long it takes."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec

from core.resources import Resources
from live.feed import Feed
from live.snapshot import SNAPSHOT_TTL_S, SharedSnapshots
from tests.live.conftest import Room


async def _waiting_on_lock(conn: asyncpg.Connection) -> int:
    """Backends whose query waits on a lock (the snapshot queries the test holds up)."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
    )


def _feed(room: Room, read_top: int = 0) -> Feed:
    """The room's feed as a subscribe leaves it: its stream position read from Redis."""
    feed = Feed(f"room:{room.id}", flush_s=0.01, max_held=100, on_empty=lambda _: None)
    feed.note_read(read_top, "epoch")
    return feed


async def test_a_quiet_room_shares_one_snapshot_between_subscribes(
    resources: Resources, room: Room
) -> None:
    """No publication since the feed read its position: a snapshot is shared by subscribes at
    that position for its whole window, however much later they read it."""
    snapshots = SharedSnapshots(resources.pool, lambda _: 7)
    feed = _feed(room, read_top=5)
    loop = asyncio.get_running_loop()
    first = await snapshots.fetch(feed, 5, loop.time())
    later = loop.time() + 0.01
    assert snapshots.shared(feed, 5, later) is first
    assert await snapshots.fetch(feed, 5, later) is first


async def test_a_slow_snapshot_query_is_shared_not_repeated(
    resources: Resources, room: Room
) -> None:
    """A query that outlasts the window is not joined by another: later subscribes share it;
    one a publication has passed waits for the next, which begins when the first is done."""
    snapshots = SharedSnapshots(resources.pool, lambda _: 7)
    feed = _feed(room)
    loop = asyncio.get_running_loop()
    async with resources.pool.acquire() as holder, resources.pool.acquire() as watcher:
        locking = holder.transaction()
        await locking.start()
        await holder.execute("LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE")
        try:
            first = asyncio.create_task(snapshots.fetch(feed, feed.top, loop.time()))
            await asyncio.sleep(SNAPSHOT_TTL_S * 2)  # longer than the window
            second = asyncio.create_task(snapshots.fetch(feed, feed.top, loop.time()))
            await asyncio.sleep(0.1)
            assert await _waiting_on_lock(watcher) == 1

            feed.top += 1  # a publication passed the query in flight
            third = asyncio.create_task(snapshots.fetch(feed, feed.top, loop.time()))
            fourth = asyncio.create_task(snapshots.fetch(feed, feed.top, loop.time()))
            await asyncio.sleep(0.1)
            assert await _waiting_on_lock(watcher) == 1  # the next one waits its turn
            assert not any(t.done() for t in (first, second, third, fourth))
        finally:
            await locking.rollback()
        answers = await asyncio.wait_for(asyncio.gather(first, second, third, fourth), 5)
    assert all(b'"viewers":7' in answer for answer in answers)
    assert answers[0] is answers[1]  # one query's bytes
    assert answers[2] is answers[3]
    # the later query began after the publication: it may serve a subscribe at that position
    assert snapshots.shared(feed, feed.top, loop.time() - 1) is answers[2]


async def test_a_viewer_count_keeps_the_shared_snapshot_valid_with_the_new_count(
    resources: Resources, room: Room
) -> None:
    """`viewers.changed` right after a snapshot's position moves it on without a query; any
    other publication, or a count that is not the next publication, does not."""
    snapshots = SharedSnapshots(resources.pool, lambda _: 7)
    feed = _feed(room)
    loop = asyncio.get_running_loop()
    first = await snapshots.fetch(feed, feed.top, loop.time())
    later = loop.time() + 0.01  # positions read after the query began: only `top` vouches

    feed.top = 1
    assert snapshots.shared(feed, 1, later) is None  # passed by a publication
    snapshots.counted(feed, 1, 42)
    counted = snapshots.shared(feed, 1, later)
    assert counted is not None
    assert msgspec.json.decode(counted)["viewers"] == 42
    assert {**msgspec.json.decode(first), "viewers": 42} == msgspec.json.decode(counted)

    feed.top = 3
    snapshots.counted(feed, 3, 50)  # offset 2 (another event) came in between
    assert snapshots.shared(feed, 3, later) is None
