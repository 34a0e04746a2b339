"""Notifications out: events published to a channel's stream after the command committed.

Every channel (`room:42`, `dashboard#alice`) has, in Redis, under one hash tag:

    {room:42}:meta      hash  s = top offset, e = epoch (changes when history was lost),
                              h = the newest offset in the history stream
    {room:42}:history   stream of the last N ordinary events, entry id `<offset>-0`, fields
                        d = data, p = offset of the previous entry
    {room:42}:latest    hash  coalesce key -> "<offset>\n<data>": the newest latest-value event
                        (viewer count, stock of a drop, ...) per key, which takes no history
                        entry, so that in a big room it never pushes sales out of recovery range
    {room:42}:events    sharded pub/sub channel (SPUBLISH) every hub node serving the room
                        subscribes to once, on the shard that owns the slot (SSUBSCRIBE)

Action functions collect events in an `Outbox` while their transaction runs and flush it after
commit, so no event ever announces something that was rolled back (Zulip's `send_event`).
Events are msgspec Structs tagged by `type`; packages define their own by subclassing `Event`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

import msgspec

from core.redis_client import REDIS_ERRORS, RedisClient
from core.scripts import register, run_many

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


def user_channel(user_id: str) -> str:
    """A user's personal notices (`room.live` of a reserved room, ...)."""
    return f"user#{user_id}"


def chat_posters_key(room_id: int | str) -> str:
    """A HyperLogLog of the users whose chat messages a room accepted (live.chat writes it, the
    operator's room funnel reads it): distinct posters, within about 1 %, in at most 12 KB."""
    return "{chat:" + str(room_id) + "}:posters"


def channel_keys(channel: str) -> tuple[str, str, str]:
    """(meta, history, pub/sub) keys for a channel; all share the hash tag `{channel}`."""
    tag = "{" + channel + "}"
    return f"{tag}:meta", f"{tag}:history", f"{tag}:events"


def latest_key(channel: str) -> str:
    """The channel's latest-values hash (coalesce key -> "<offset>\\n<data>"), same hash tag."""
    return "{" + channel + "}:latest"


def publish_keys(channel: str) -> list[str]:
    """KEYS of core/lua/publish.lua for a channel."""
    return [*channel_keys(channel), latest_key(channel)]


_encode = msgspec.json.Encoder().encode


class Publisher:
    """Publishes events to channel streams; one per process, built from the Redis client."""

    def __init__(self, client: RedisClient, history_size: int = 1000, ttl_s: int = 86_400):
        self._client = client
        self._script = register(client, "core", "publish")
        self.history_size = history_size
        self.ttl_s = ttl_s

    async def publish(self, channel: str, event: Event) -> tuple[int, str]:
        key = event.coalesce_key() if event.coalesce else ""
        offset, epoch = await self._script(
            keys=publish_keys(channel),
            args=[_encode(event), key, self.history_size, self.ttl_s],
        )
        return int(offset), epoch.decode() if isinstance(epoch, bytes) else str(epoch)

    async def publish_many(self, items: Sequence[tuple[str, Event]]) -> None:
        """Publish several events in order in one round trip (hot paths that batch events)."""
        if items:
            await run_many(
                self._client,
                self._script,
                [
                    (
                        publish_keys(channel),
                        [
                            _encode(event),
                            event.coalesce_key() if event.coalesce else "",
                            self.history_size,
                            self.ttl_s,
                        ],
                    )
                    for channel, event in items
                ],
            )


class Outbox:
    """Events gathered during a transaction, published only after it commits."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Event]] = []

    def room(self, room_id: int, event: Event) -> None:
        self.pending.append((room_channel(room_id), event))

    def dashboard(self, user_id: str, event: Event) -> None:
        self.pending.append((dashboard_channel(user_id), event))

    def user(self, user_id: str, event: Event) -> None:
        self.pending.append((user_channel(user_id), event))

    async def flush(self, publisher: Publisher) -> None:
        """Publish in order, in one round trip. The command already committed, so a Redis outage
        is logged, not raised: viewers resynchronise from the snapshot when they next recover."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        try:
            await publisher.publish_many(pending)
        except REDIS_ERRORS as exc:
            names = ", ".join(f"{type(event).__name__} to {channel}" for channel, event in pending)
            log.warning("events not published (%s): %s", names, exc)
