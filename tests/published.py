"""What a channel holds for recovery: its history entries and its latest values, by offset."""

from __future__ import annotations

from core.events import channel_keys, latest_key
from core.redis_client import RedisClient


async def published(redis: RedisClient, channel: str) -> list[bytes]:
    """The data of the channel's history entries and of its latest values (the newest event
    per coalesce key, which takes no history entry), oldest first."""
    _, history, _ = channel_keys(channel)
    items = [(int(i.split(b"-", 1)[0]), f[b"d"]) for i, f in await redis.xrange(history)]
    latest = await redis.hgetall(latest_key(channel))  # type: ignore[misc]
    for value in latest.values():
        offset, data = value.split(b"\n", 1)
        items.append((int(offset), data))
    return [data for _, data in sorted(items)]
