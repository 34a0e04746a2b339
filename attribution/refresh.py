"""Latest-value publications: `stats.changed` to dashboards and `leaderboard.changed` to rooms.

Money and click changes only append a mark (`mark`, `mark_dashboard`) in their own
transaction, which keeps the payment path short and its cost independent of how busy the room
is. `refresh_stats` (a worker loop every REFRESH_INTERVAL_S) takes the marks, recomputes each
touched dashboard and leaderboard once, and publishes them: however many viewers a distributor
brings within one interval, their screen gets one up-to-date snapshot.
"""

from __future__ import annotations

import contextlib
import logging

from attribution.events import LeaderboardChanged, StatsChanged
from attribution.stats import dashboard, leaderboard
from core.db import Conn
from core.events import Event, dashboard_channel, room_channel
from core.resources import Resources

log = logging.getLogger("livesell.attribution")

REFRESH_INTERVAL_S = 0.2
REFRESH_BATCH = 5_000


async def mark_dashboard(conn: Conn, distributor_id: int) -> None:
    await mark(conn, dashboard=distributor_id)


async def mark(conn: Conn, *, dashboard: int | None = None, leaderboard: int | None = None) -> None:
    """Mark a distributor's dashboard and/or a room's leaderboard as moved, in one statement."""
    await conn.execute(
        """INSERT INTO attribution_dirty (kind, target)
           SELECT kind, target FROM (VALUES ('dashboard', $1::bigint), ('leaderboard', $2::bigint))
                                    AS marks (kind, target)
           WHERE target IS NOT NULL""",
        dashboard,
        leaderboard,
    )


async def refresh_stats(res: Resources) -> int:
    """Publish what changed since the last pass; returns how many snapshots were published.

    Marks are taken (deleted) in a short transaction of their own, so writers never wait on a
    refresh; when publishing fails they are put back for the next pass.
    """
    published = 0
    while True:
        async with res.pool.acquire() as conn:
            marks = await conn.fetch(
                """DELETE FROM attribution_dirty WHERE id IN (
                       SELECT id FROM attribution_dirty ORDER BY id LIMIT $1
                       FOR UPDATE SKIP LOCKED)
                   RETURNING kind, target""",
                REFRESH_BATCH,
            )
            if not marks:
                return published
            dashboards = sorted({m["target"] for m in marks if m["kind"] == "dashboard"})
            rooms = sorted({m["target"] for m in marks if m["kind"] == "leaderboard"})
            try:
                events: list[tuple[str, Event]] = []
                for row in await conn.fetch(
                    "SELECT id, user_id, team, created_at FROM distributors WHERE id = ANY($1)",
                    dashboards,
                ):
                    stats = await dashboard(conn, row)
                    events.append((dashboard_channel(row["user_id"]), StatsChanged(stats=stats)))
                for room_id in rooms:
                    board = await leaderboard(conn, room_id)
                    events.append((room_channel(room_id), LeaderboardChanged(leaderboard=board)))
                await res.publisher.publish_many(events)
            except Exception:
                # put the marks back (best effort) so the next pass publishes them
                with contextlib.suppress(Exception):
                    await conn.executemany(
                        "INSERT INTO attribution_dirty (kind, target) VALUES ($1, $2)",
                        [(m["kind"], m["target"]) for m in marks],
                    )
                raise
        published += len(events)
        if len(marks) < REFRESH_BATCH:
            return published
