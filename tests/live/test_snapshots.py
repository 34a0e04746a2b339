"""The room snapshot shared by a join storm: one query per room at a time, however long it takes."""

from __future__ import annotations

import asyncio

import asyncpg

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


async def test_a_slow_snapshot_query_is_shared_not_repeated(
    resources: Resources, room: Room
) -> None:
    """A query that outlasts the window is not joined by another: later subscribes share it;
    one a publication has passed waits for the next, which begins when the first is done."""
    snapshots = SharedSnapshots(resources.pool, lambda _: 7)
    feed = Feed(f"room:{room.id}", flush_s=0.01, max_held=100, on_empty=lambda _: None)
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
