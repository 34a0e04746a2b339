"""Viewer counts per room, summed over every hub node through Redis.

Each node reports its local count per room about once a second (live/lua/viewers_report.lua):
its field `c:<node>` in `{room:42}:viewers` and its report time in `{room:42}:viewers:at`. The
total (`sum`) moves by each report's change, and by the counts of nodes that stopped reporting
(a node that died), so a report costs O(log nodes), never a sum over every node. At most one
`viewers.changed` a room goes out per interval (below), by the node whose report finds the total
differs from the one announced: N nodes never publish N times a second, and each publication
reaches every node, so that would be N^2 messages a second.

Each announcement is one write to every viewer of the room, so a big room announces less often
(`Cadence`): every 900 ms up to 1,800 viewers, then at most 2,000 count frames a
second for the whole room (every 2 s at 4,000 viewers), and never less often than every 5 s. A
quiet room of 10,000 viewers costs its nodes 2,000 writes a second for its count, not 11,000.
"""

from __future__ import annotations

from typing import NamedTuple

from core.redis_client import RedisClient
from core.scripts import register, run_many

VIEWERS_INTERVAL_S = 1.0
STALE_AFTER_MS = 5_000
KEY_TTL_S = 3_600


class Cadence(NamedTuple):
    """How often a room's total may be announced: every `total * 1000 / writes_per_s` ms, within
    [`min_ms`, `max_ms`]. The fields are the script's ARGV[5..7], in this order."""

    min_ms: int
    max_ms: int
    writes_per_s: int


CADENCE = Cadence(
    # a little under the report interval, so that one node's reports each may announce
    min_ms=900,
    # the longest a big room's count stands still while it moves
    max_ms=5_000,
    writes_per_s=2_000,
)


def viewers_key(room_id: int | str) -> str:
    return "{room:" + str(room_id) + "}:viewers"


def report_times_key(room_id: int | str) -> str:
    return "{room:" + str(room_id) + "}:viewers:at"


class Report(NamedTuple):
    total: int
    # this report publishes the total (`viewers.changed`)
    announce: bool
    # the total differs from the one announced: report the room again, even with 0 viewers here
    pending: bool


class ViewerCounts:
    def __init__(
        self,
        client: RedisClient,
        node_id: str,
        *,
        stale_after_ms: int = STALE_AFTER_MS,
        cadence: Cadence = CADENCE,
    ) -> None:
        self._client = client
        self.stale_after_ms = stale_after_ms
        self.cadence = cadence
        self._script = register(client, "live", "viewers_report")
        self.node_id = node_id

    async def report(self, counts: dict[str, int]) -> dict[str, Report]:
        """Report local counts {room_id: n}, all in one round trip."""
        if not counts:
            return {}
        calls = [
            (
                [viewers_key(room_id), report_times_key(room_id)],
                [self.node_id, count, self.stale_after_ms, KEY_TTL_S, *self.cadence],
            )
            for room_id, count in counts.items()
        ]
        results = await run_many(self._client, self._script, calls)
        return {
            room_id: Report(int(total), bool(int(announce)), bool(int(pending)))
            for room_id, (total, announce, pending) in zip(counts, results, strict=True)
        }


async def total_viewers(client: RedisClient, room_id: int) -> int:
    """The last summed total for the room (0 when nobody watches or no hub reported yet)."""
    raw = await client.hget(viewers_key(room_id), "sum")  # type: ignore[misc]
    return int(raw) if raw else 0
