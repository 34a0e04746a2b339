"""A channel's stream position and the publications a recovering subscriber missed.

Reads the keys `core.events.Publisher` writes (`{room:42}:meta`, `{room:42}:history`) in one
script, so the top offset and the history range it returns are one consistent view.
"""

from __future__ import annotations

import msgspec

from core.events import channel_keys
from core.redis_client import RedisClient

# The channel's epoch and top offset, and (when asked) the history after a client's offset.
# KEYS[1] meta hash (e = epoch, s = top offset), KEYS[2] history stream (`<offset>-0`, d, k)
# ARGV[1] the client's offset, or "" for a fresh subscribe (no history wanted)
# ARGV[2] TTL seconds for a newly created meta hash
# ARGV[3] the most entries worth reading (history size): a larger gap cannot be recovered
# Returns {top, epoch, entries}; creates the epoch (in the Publisher's format) when missing.
STREAM_STATE_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
    local t = redis.call('TIME')
    epoch = string.format('%x%x', tonumber(t[1]), tonumber(t[2]))
    redis.call('HSET', KEYS[1], 'e', epoch)
    redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local top = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local entries = {}
if ARGV[1] ~= '' then
    local since = tonumber(ARGV[1])
    if since < top and top - since <= tonumber(ARGV[3]) then
        entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', top - since)
    end
end
return {top, epoch, entries}
"""


class StreamEntry(msgspec.Struct, frozen=True):
    offset: int
    data: bytes
    coalesce_key: bytes


class StreamState(msgspec.Struct, frozen=True):
    top: int
    epoch: str
    # None: the client's position cannot be recovered (other epoch, or history lost the gap)
    missed: list[StreamEntry] | None


class StreamReader:
    def __init__(self, client: RedisClient, history_size: int, ttl_s: int) -> None:
        self._script = client.register_script(STREAM_STATE_SCRIPT)
        self.history_size = history_size
        self.ttl_s = ttl_s

    async def state(
        self, channel: str, *, recover_from: tuple[int, str] | None = None
    ) -> StreamState:
        """Position of the channel; with `recover_from=(offset, epoch)` also what was missed."""
        meta, history, _ = channel_keys(channel)
        since = "" if recover_from is None else str(recover_from[0])
        top, epoch, raw = await self._script(
            keys=[meta, history], args=[since, self.ttl_s, self.history_size]
        )
        top = int(top)
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if recover_from is None:
            return StreamState(top, epoch, [])
        offset, client_epoch = recover_from
        if client_epoch != epoch or offset > top:
            return StreamState(top, epoch, None)
        missed = [_entry(entry_id, fields) for entry_id, fields in raw]
        expected = list(range(offset + 1, top + 1))
        if [e.offset for e in missed] != expected:
            return StreamState(top, epoch, None)  # never a partial recovery
        return StreamState(top, epoch, _latest_values_only(missed))


def _entry(entry_id: bytes, fields: list[bytes]) -> StreamEntry:
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    offset = int(entry_id.split(b"-", 1)[0])
    return StreamEntry(offset, values.get(b"d", b"null"), values.get(b"k", b""))


def _latest_values_only(entries: list[StreamEntry]) -> list[StreamEntry]:
    """Keep every ordinary event; of latest-value events keep the last per coalesce key."""
    last: dict[bytes, int] = {}
    for entry in entries:
        if entry.coalesce_key:
            last[entry.coalesce_key] = entry.offset
    return [e for e in entries if not e.coalesce_key or last[e.coalesce_key] == e.offset]
