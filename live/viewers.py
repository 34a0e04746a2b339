"""Viewer counts per room, summed over every hub node through Redis.

Each node reports its local count per room about once a second into `{room:42}:viewers`
(field `n:<node>` = "<count>:<unix ms>"); the same script sums the fresh reports, drops stale ones
(a node that died stops reporting), and compare-and-sets field `total`. Only the one node whose
report changed the total publishes `viewers.changed`, so N nodes never publish N duplicates.
"""

from __future__ import annotations

from core.redis_client import RedisClient
from core.scripts import run_many

VIEWERS_INTERVAL_S = 1.0
STALE_AFTER_MS = 5_000
KEY_TTL_S = 3_600


def viewers_key(room_id: int | str) -> str:
    return "{room:" + str(room_id) + "}:viewers"


# Record one node's count and re-sum.
# KEYS[1] the room's viewers hash
# ARGV[1] node id, ARGV[2] this node's count, ARGV[3] reports older than this many ms are stale,
# ARGV[4] key TTL seconds
# Returns {total, changed}: changed = 1 when this call moved `total` (the caller announces it).
REPORT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local field = 'n:' .. ARGV[1]
if tonumber(ARGV[2]) > 0 then
    redis.call('HSET', KEYS[1], field, ARGV[2] .. ':' .. now)
else
    redis.call('HDEL', KEYS[1], field)
end
local total = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
    local name, value = all[i], all[i + 1]
    if string.sub(name, 1, 2) == 'n:' then
        local sep = string.find(value, ':', 1, true)
        local count = tonumber(string.sub(value, 1, sep - 1))
        local at = tonumber(string.sub(value, sep + 1))
        if now - at > tonumber(ARGV[3]) then
            redis.call('HDEL', KEYS[1], name)
        else
            total = total + count
        end
    end
end
local previous = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
redis.call('HSET', KEYS[1], 'total', total)
redis.call('EXPIRE', KEYS[1], ARGV[4])
if previous ~= total then
    return {total, 1}
end
return {total, 0}
"""


class ViewerCounts:
    def __init__(self, client: RedisClient, node_id: str) -> None:
        self._client = client
        self._script = client.register_script(REPORT_SCRIPT)
        self.node_id = node_id

    async def report(self, counts: dict[str, int]) -> dict[str, tuple[int, bool]]:
        """Report local counts {room_id: n}; returns {room_id: (total, this report changed it)}."""
        if not counts:
            return {}
        calls = [
            ([viewers_key(room_id)], [self.node_id, count, STALE_AFTER_MS, KEY_TTL_S])
            for room_id, count in counts.items()
        ]
        results = await run_many(self._client, self._script, calls)
        return {
            room_id: (int(total), bool(int(changed)))
            for room_id, (total, changed) in zip(counts, results, strict=True)
        }


async def total_viewers(client: RedisClient, room_id: int) -> int:
    """The last summed total for the room (0 when nobody watches or no hub reported yet)."""
    raw = await client.hget(viewers_key(room_id), "total")  # type: ignore[misc]
    return int(raw) if raw else 0
