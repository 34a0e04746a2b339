"""A channel's stream position and the publications a recovering subscriber missed.

Reads the keys `core.events.Publisher` writes (`{room:42}:meta`, `{room:42}:history`,
`{room:42}:latest`) in one script, so the top offset, the history range and the latest values it
returns are one consistent view.

Latest-value events (a coalesce key: viewer counts, a drop's stock) take no history entry: their
offsets are missing from the stream, and recovery covers them with the current value per key
instead. A client that missed offsets (since, top] gets the stream's entries after `since` and
every latest value newer than `since`, in offset order: what live delivery would have left it
with after coalescing (Centrifugo's cache recovery). The gap is covered when trimming removed no
stream entry after `since`: the first entry after it names its predecessor (field p), which must
be at or before `since`; with no entry after it, the newest stream offset (meta field h) must be;
and at most the history size (`hub_history_size`) of stream entries may follow `since`.
"""

from __future__ import annotations

import msgspec

from core.events import channel_keys, latest_key
from core.redis_client import RedisClient

# The channel's epoch and top offset, and (when asked) what a client's offset missed.
# KEYS[1] meta hash (e = epoch, s = top offset, h = newest stream offset), KEYS[2] history stream
#   (`<offset>-0`, d, p), KEYS[3] latest-values hash (coalesce key -> "<offset>\n<data>")
# ARGV[1] the client's offset, or "" for a fresh subscribe (no history wanted)
# ARGV[2] TTL seconds for a newly created meta hash
# ARGV[3] the most stream entries worth reading (history size): more cannot be recovered
# Returns {top, epoch, entries, newest stream offset, latest values (HGETALL)}; creates the
# epoch (in the Publisher's format) when missing.
STREAM_STATE_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
    local t = redis.call('TIME')
    epoch = string.format('%x%x', tonumber(t[1]), tonumber(t[2]))
    redis.call('HSET', KEYS[1], 'e', epoch)
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    redis.call('DEL', KEYS[3])
end
local top = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local stored = redis.call('HGET', KEYS[1], 'h') or '0'
local entries = {}
local latest = {}
if ARGV[1] ~= '' then
    local since = tonumber(ARGV[1])
    if since < top then
        entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', ARGV[3] + 1)
        latest = redis.call('HGETALL', KEYS[3])
    end
end
return {top, epoch, entries, stored, latest}
"""


class StreamEntry(msgspec.Struct, frozen=True):
    offset: int
    data: bytes
    coalesce_key: bytes
    previous: int | None = None  # the stream's entry before this one (None: not recorded)


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
        top, epoch, raw, stored, latest = await self._script(
            keys=[meta, history, latest_key(channel)], args=[since, self.ttl_s, self.history_size]
        )
        top = int(top)
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if recover_from is None:
            return StreamState(top, epoch, [])
        offset, client_epoch = recover_from
        if client_epoch != epoch or offset > top:
            return StreamState(top, epoch, None)
        entries = [stream_entry(entry_id, fields) for entry_id, fields in raw]
        if len(entries) > self.history_size:
            return StreamState(top, epoch, None)  # more than the history keeps
        return StreamState(top, epoch, missed_since(offset, entries, int(stored), latest))


def stream_entry(entry_id: bytes, fields: list[bytes]) -> StreamEntry:
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    offset = int(entry_id.split(b"-", 1)[0])
    previous = values.get(b"p")
    return StreamEntry(
        offset,
        values.get(b"d", b"null"),
        values.get(b"k", b""),
        None if previous is None else int(previous),
    )


def missed_since(
    since: int, entries: list[StreamEntry], stored: int, latest: list[bytes]
) -> list[StreamEntry] | None:
    """What a client at offset `since` missed, given the stream's entries after `since`, the
    newest stream offset and the latest-values hash (field, value, ... as HGETALL returns it);
    None when trimming lost part of it (never a partial recovery)."""
    if entries:
        first = entries[0]
        # an entry written before stream entries named their predecessor: offsets were then
        # contiguous in the stream, so the first missed offset itself must be there
        before = first.previous if first.previous is not None else first.offset - 1
        if before > since:
            return None
    elif stored > since:
        return None  # the stream held entries after `since` and has lost them
    values = [
        StreamEntry(int(value[: value.index(b"\n")]), value[value.index(b"\n") + 1 :], key)
        for key, value in zip(latest[::2], latest[1::2], strict=True)
    ]
    merged = entries + [v for v in values if v.offset > since]
    merged.sort(key=lambda e: e.offset)
    return _latest_values_only(merged)


def _latest_values_only(entries: list[StreamEntry]) -> list[StreamEntry]:
    """Keep every ordinary event; of latest-value events keep the last per coalesce key."""
    last: dict[bytes, int] = {}
    for entry in entries:
        if entry.coalesce_key:
            last[entry.coalesce_key] = entry.offset
    return [e for e in entries if not e.coalesce_key or last[e.coalesce_key] == e.offset]
