"""Notifications out: events published to a channel's stream after the command committed.

Every channel (`room:42`, `dashboard#alice`) has, in Redis, under one hash tag:

    {room:42}:meta      hash  s = top offset, e = epoch (changes when history was lost)
    {room:42}:history   stream of the last N events, entry id `<offset>-0`, field d = data
    {room:42}:events    pub/sub channel every hub node subscribes to once per channel

Action functions collect events in an `Outbox` while their transaction runs and flush it after
commit, so no event ever announces something that was rolled back (Zulip's `send_event`).
Events are msgspec Structs tagged by `type`; packages define their own by subclassing `Event`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import msgspec
import redis.asyncio as aioredis
import redis.exceptions

log = logging.getLogger("livesell.events")


class Event(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    """Base of every published event; subclasses set `tag="drop.started"` and so on."""

    # latest-value events may be coalesced by the hub within one flush tick: one per key survives
    coalesce: ClassVar[bool] = False

    def coalesce_key(self) -> str:
        return type(self).__struct_config__.tag  # type: ignore[return-value]


def room_channel(room_id: int | str) -> str:
    return f"room:{room_id}"


def dashboard_channel(user_id: str) -> str:
    return f"dashboard#{user_id}"


def channel_keys(channel: str) -> tuple[str, str, str]:
    """(meta, history, pub/sub) keys for a channel; all share the hash tag `{channel}`."""
    tag = "{" + channel + "}"
    return f"{tag}:meta", f"{tag}:history", f"{tag}:events"


# Assign the next offset, append to the capped history stream and publish, atomically.
# KEYS[1] meta hash, KEYS[2] history stream, KEYS[3] pub/sub channel name (not a key, but passed
#   in KEYS so cluster routing sees the hash tag)
# ARGV[1] event data (JSON), ARGV[2] coalesce key ("" = never coalesced),
# ARGV[3] history size, ARGV[4] history TTL seconds
# Returns {offset, epoch}. The pub/sub message is "<offset>\n<epoch>\n<coalesce key>\n<data>".
PUBLISH_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
    local t = redis.call('TIME')
    epoch = string.format('%x%x', tonumber(t[1]), tonumber(t[2]))
    redis.call('HSET', KEYS[1], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], offset .. '-0', 'd', ARGV[1], 'k', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', KEYS[3], offset .. '\\n' .. epoch .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[1])
return {offset, epoch}
"""

_encode = msgspec.json.Encoder().encode


class Publisher:
    """Publishes events to channel streams; one per process, built from the Redis client."""

    def __init__(self, client: aioredis.Redis, history_size: int = 1000, ttl_s: int = 86_400):
        self._client = client
        self._script = client.register_script(PUBLISH_SCRIPT)
        self.history_size = history_size
        self.ttl_s = ttl_s

    async def publish(self, channel: str, event: Event) -> tuple[int, str]:
        key = event.coalesce_key() if event.coalesce else ""
        offset, epoch = await self._script(
            keys=list(channel_keys(channel)),
            args=[_encode(event), key, self.history_size, self.ttl_s],
        )
        return int(offset), epoch.decode() if isinstance(epoch, bytes) else str(epoch)

    async def publish_many(self, items: Sequence[tuple[str, Event]]) -> None:
        """Publish several events in order in one round trip (hot paths that batch events).

        Calls the script by its SHA in a plain pipeline; when Redis lost its script cache (a
        restart), the script is loaded again and the whole pipeline retried once.
        """
        if not items:
            return
        for attempt in (1, 2):
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, event in items:
                    key = event.coalesce_key() if event.coalesce else ""
                    pipe.evalsha(self._script.sha, 3, *channel_keys(channel), _encode(event), key,
                                 self.history_size, self.ttl_s)  # fmt: skip
                try:
                    await pipe.execute()
                    return
                except redis.exceptions.NoScriptError:
                    if attempt == 2:
                        raise
                    await self._client.script_load(PUBLISH_SCRIPT)


class Outbox:
    """Events gathered during a transaction, published only after it commits."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Event]] = []

    def room(self, room_id: int, event: Event) -> None:
        self.pending.append((room_channel(room_id), event))

    def dashboard(self, user_id: str, event: Event) -> None:
        self.pending.append((dashboard_channel(user_id), event))

    async def flush(self, publisher: Publisher) -> None:
        """Publish in order, in one round trip. The command already committed, so a Redis outage
        is logged, not raised: viewers resynchronise from the snapshot when they next recover."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        try:
            await publisher.publish_many(pending)
        except (redis.exceptions.RedisError, OSError) as exc:
            names = ", ".join(f"{type(event).__name__} to {channel}" for channel, event in pending)
            log.warning("events not published (%s): %s", names, exc)
