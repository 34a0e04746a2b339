"""Room chat on the hub: `chat:{room_id}` channels, the `publish` command, and fan-out by sample.

A viewer posts with the Centrifugo `publish` command (the SDKs' `sub.publish({text})`). The hub
checks what it can alone (signed in, subscribed, 1–200 characters, no control characters), then
one script (live/lua/chat_post.lua) decides the rest against the room's moderation state in
Redis (ban, mute, closed, blocked words, slow mode, per-user rate) and, when it accepts,
publishes the message with the sender's id, name and role set by the server. Every hub node
receives it through its pub/sub link like any room event.

A `ChatFeed` fans a chat channel out on the room's flush tick, one frame per viewer per tick,
encoded once. A room over `chat_fanout_per_s` accepted messages a second delivers every
host/moderator message and a fair sample of the rest up to that rate, plus a latest-value
`chat.stats {received, shown}`; a sender whose message was left out of the sample still gets
it, in a frame of their own.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec

from core.db import Conn
from core.events import Event, channel_keys, chat_posters_key, latest_key
from core.redis_client import RedisClient
from core.resources import Resources
from core.scripts import Batched, register
from live.errors import (
    HubBadRequest,
    HubUnauthorized,
    InternalError,
    LimitExceeded,
    PermissionDenied,
    UnknownChannel,
)
from live.feed import Feed
from live.history import StreamState, missed_since, stream_entry
from live.metrics import HUB_METRICS, SENT
from live.protocol import encode, publication_push, unsubscribe_push
from live.session import Session, text_frame

CHAT_PREFIX = "chat:"
MAX_TEXT = 200
SNAPSHOT_MESSAGES = 50
# per user, every role: a burst, then this many messages a second (slow mode comes on top)
USER_BURST = 5
USER_PER_S = 2.0
# the control channel every hub node subscribes to (see live.pubsub): moderation decisions
# that act on connections, such as a ban ending the banned user's chat subscriptions
CONTROL_CHANNEL = b"livesell:hub"
# an unsubscribe push code >= 2500: the SDK subscribes again, and is refused with 103
UNSUBSCRIBE_BANNED = 2501
STATS_EVERY_S = 1.0
# loads of the moderation hash raced by decisions before a post gives up (InternalError)
LOAD_ATTEMPTS = 5

# the start of every chat.message's JSON, up to its id (the delete script matches on it)
MESSAGE_HEAD = b'{"type":"chat.message","id":"'

_encode = msgspec.json.Encoder().encode


def chat_channel(room_id: int | str) -> str:
    return f"{CHAT_PREFIX}{room_id}"


def moderation_key(room_id: int | str) -> str:
    return "{chat:" + str(room_id) + "}:mod"


def recent_key(room_id: int | str) -> str:
    return "{chat:" + str(room_id) + "}:recent"


def deleted_key(room_id: int | str) -> str:
    return "{chat:" + str(room_id) + "}:deleted"


def likes_key(room_id: int | str) -> str:
    return "{room:" + str(room_id) + "}:likes"


# --- events and the subscribe snapshot ---


class ChatUser(msgspec.Struct):
    id: str
    name: str
    role: str  # host, moderator, viewer


class PinnedNotice(msgspec.Struct):
    text: str
    by: str
    at: datetime


class ChatSettings(msgspec.Struct):
    """What viewers see of the room's chat settings. Blocked words stay with the moderators: a
    list shown to everyone tells a spammer exactly how to spell around it."""

    slow_mode_s: int = 0
    closed: bool = False


class ChatSnapshot(msgspec.Struct):
    messages: list[msgspec.Raw]  # oldest first
    pinned: PinnedNotice | None
    settings: ChatSettings


class ChatDeleted(Event, tag="chat.deleted"):
    room_id: str
    id: str


class ChatPinned(Event, tag="chat.pinned"):
    room_id: str
    pinned: PinnedNotice


class ChatUnpinned(Event, tag="chat.unpinned"):
    room_id: str


class ChatSettingsChanged(Event, tag="chat.settings"):
    coalesce: ClassVar[bool] = True
    room_id: str
    settings: ChatSettings


class LikesChanged(Event, tag="likes.changed"):
    """A room's likes so far; only the latest matters."""

    coalesce: ClassVar[bool] = True
    room_id: str
    total: int


class ChatStats(msgspec.Struct, tag="chat.stats", tag_field="type"):
    received: int
    shown: int


class _Sender(msgspec.Struct):
    id: str
    role: str


class _MessageHead(msgspec.Struct):
    user: _Sender


_decode_head = msgspec.json.Decoder(_MessageHead).decode


class PublishRequest(msgspec.Struct):
    channel: str = ""
    data: Any = None


class _Post(msgspec.Struct):
    """The data a client publishes: its text. Anything else it sends (`user`, `role`, `type`,
    `id`...) is ignored: the server sets those."""

    text: Any = None


class ChatForbidden(PermissionDenied):
    public = True


class ChatLimited(LimitExceeded):
    public = True


class ChatBadRequest(HubBadRequest):
    public = True


def check_text(raw: object) -> str:
    """The message text, or 107: a string of 1–200 characters after trimming, without control
    characters (line breaks included: a chat line is one line)."""
    if not isinstance(raw, str):
        raise ChatBadRequest('data must be {"text": "..."}')
    text = raw.strip()
    if not 1 <= len(text) <= MAX_TEXT:
        raise ChatBadRequest(f"text must be 1 to {MAX_TEXT} characters")
    if not text.isprintable():
        # isprintable is false for categories C* and Z* but the space; allow the format
        # characters emoji sequences need (zero-width joiner, variation selectors)
        for char in text:
            if not char.isprintable() and char != " " and unicodedata.category(char) != "Cf":
                raise ChatBadRequest("text may not contain control characters")
    return text


def _display_name(session: Session) -> str:
    return session.name or session.user_id


# --- the node's chat ---


class Chat:
    """The hub node's side of room chat: publish, the subscribe state, the host of each room."""

    def __init__(self, res: Resources) -> None:
        self.res = res
        settings = res.settings
        self._post = Batched(res.redis, register(res.redis, "live", "chat_post"))
        self._state = Batched(res.redis, register(res.redis, "live", "chat_state"))
        self._load = register(res.redis, "live", "chat_moderation_load")
        self.history_size = settings.hub_history_size
        self.ttl_s = settings.hub_history_ttl_s
        self.fanout_per_s = settings.chat_fanout_per_s
        self.default_words = "\n".join(w.casefold() for w in settings.chat_blocked_words)
        self.accepted = 0  # messages this node published (metrics, load tests)

    async def host_of(self, room_id: str) -> str:
        """The room's host, or 102 when there is no such room."""
        async with self.res.pool.acquire() as conn:
            host = await conn.fetchval("SELECT host_id FROM rooms WHERE id = $1", int(room_id))
        if host is None:
            raise UnknownChannel(f"no room {room_id}")
        return str(host)

    async def load_moderation(self, room_id: str) -> None:
        """Load the room's moderation hash in Redis from PostgreSQL, where every decision is
        kept (chat_moderation_load.lua says when and why)."""
        key = moderation_key(room_id)
        for _ in range(LOAD_ATTEMPTS):
            version = await self.res.redis.hget(key, "v")  # type: ignore[misc]
            async with self.res.pool.acquire() as conn:
                fields = await moderation_fields(conn, int(room_id))
            loaded = await self._load(keys=[key], args=[version or b"", *fields])
            if int(loaded) >= 0:
                return
        raise InternalError("the chat's moderation state keeps changing; try again")

    async def publish(self, session: Session, raw: object) -> None:
        """Accept one message from `session`, or raise the refusal's protocol error."""
        try:
            request = msgspec.convert(raw, PublishRequest)
            post = msgspec.convert(request.data, _Post)
        except msgspec.ValidationError:
            raise ChatBadRequest('publish needs a channel and data {"text": "..."}') from None
        channel = request.channel
        if not channel.startswith(CHAT_PREFIX):
            raise ChatForbidden("only chat channels take publications")
        if session.principal is None:
            raise HubUnauthorized("sign in to chat")
        feed = session.feeds.get(channel)
        if not isinstance(feed, ChatFeed) or session in feed.joining:
            raise ChatForbidden("subscribe to the chat before posting")
        text = check_text(post.text)
        room_id = feed.chat_room_id
        user = session.user_id
        head = MESSAGE_HEAD.decode()
        middle = (
            '","room_id":"' + room_id + '","user":{"id":' + _encode(user).decode()
            + ',"name":' + _encode(_display_name(session)).decode() + ',"role":"'
        )  # fmt: skip
        tail = '"},"text":' + _encode(text).decode() + ',"ts":'
        meta, history, events = channel_keys(channel)
        keys = [
            meta,
            history,
            events,
            moderation_key(room_id),
            recent_key(room_id),
            chat_posters_key(room_id),
            latest_key(channel),
        ]
        args: list[str | int | float] = [
            user,
            feed.host_id,
            text.casefold(),
            self.default_words,
            head,
            middle,
            tail,
            self.history_size,
            self.ttl_s,
            USER_BURST,
            USER_PER_S,
            SNAPSHOT_MESSAGES,
        ]
        try:
            reply = await self._post(keys, args)
            if int(reply[0]) == 1:
                await self.load_moderation(room_id)
                reply = await self._post(keys, args)
        except (OSError, ConnectionError) as exc:
            raise InternalError(f"chat unavailable: {exc!r}") from None
        code = int(reply[0])
        if code == 0:
            self.accepted += 1
            return
        reason = _text(reply[1])
        until = _text(reply[2])
        if until:
            at = datetime.fromtimestamp(int(until) / 1000, UTC).isoformat(timespec="seconds")
            reason = f"{reason} until {at}"
        match code:
            case 103:
                raise ChatForbidden(reason)
            case 106:
                raise ChatLimited(reason)
            case _:
                raise ChatBadRequest(reason)

    async def subscribe_state(
        self, feed: ChatFeed, session: Session, recover_from: tuple[int, str] | None
    ) -> tuple[StreamState, bytes]:
        """The stream position (and what a recovering client missed) with the chat snapshot, in
        one read; 103 for a banned subscriber."""
        room_id = feed.chat_room_id
        meta, history, _ = channel_keys(feed.channel)
        since = "" if recover_from is None else str(recover_from[0])
        keys = [
            meta,
            history,
            moderation_key(room_id),
            recent_key(room_id),
            deleted_key(room_id),
            latest_key(feed.channel),
        ]
        args = [since, self.ttl_s, self.history_size, session.user_id, SNAPSHOT_MESSAGES]
        reply = await self._state(keys, args)
        if int(reply[0]) == 2:
            await self.load_moderation(room_id)
            reply = await self._state(keys, args)
        if int(reply[0]) == 1:
            raise ChatForbidden("banned from this chat")
        _, top, epoch, raw_entries, recent, pinned, slow, closed, deleted, stored, latest = reply
        top = int(top)
        epoch = _text(epoch)
        snapshot = ChatSnapshot(
            messages=[msgspec.Raw(m) for m in reversed(recent)],
            pinned=msgspec.json.decode(pinned, type=PinnedNotice) if pinned else None,
            settings=ChatSettings(slow_mode_s=int(slow), closed=_text(closed) == "1"),
        )
        data = encode(snapshot)
        if recover_from is None:
            return StreamState(top, epoch, []), data
        offset, client_epoch = recover_from
        if client_epoch != epoch or offset > top:
            return StreamState(top, epoch, None), data
        entries = [stream_entry(entry_id, fields) for entry_id, fields in raw_entries]
        missed = missed_since(offset, entries, int(stored), latest)
        if missed is None or len(entries) > self.history_size:
            return StreamState(top, epoch, None), data  # never a partial recovery
        gone = {int(d) for d in deleted}
        return StreamState(top, epoch, [e for e in missed if e.offset not in gone]), data


async def write_moderation(
    redis: RedisClient,
    room_id: int,
    fields: dict[str, str | bytes] | None = None,
    remove: tuple[str, ...] = (),
) -> None:
    """Copy a decision PostgreSQL has committed into the room's moderation hash. The hash's
    version `v` changes first, so that a load from PostgreSQL that read before this decision
    committed is refused (chat_moderation_load.lua) rather than undoing it."""
    key = moderation_key(room_id)
    mapping = {**(fields or {}), "v": secrets.token_hex(8)}
    await redis.hset(key, mapping=mapping)  # type: ignore[misc, arg-type]  # redis-py's stubs
    if remove:
        await redis.hdel(key, *remove)  # type: ignore[misc]


async def moderation_fields(conn: Conn, room_id: int) -> list[str]:
    """The room's moderation hash as PostgreSQL has it: moderators, bans, mutes still running,
    settings and the pinned notice, as field, value, field, value..."""
    fields: list[str] = []
    for row in await conn.fetch("SELECT user_id FROM chat_moderators WHERE room_id = $1", room_id):
        fields += ["mod:" + row["user_id"], "1"]
    for row in await conn.fetch(
        "SELECT user_id, kind, until FROM chat_restrictions"
        " WHERE room_id = $1 AND (until IS NULL OR until > now())",
        room_id,
    ):
        if row["kind"] == "ban":
            fields += ["ban:" + row["user_id"], "1"]
        else:
            fields += ["mute:" + row["user_id"], str(int(row["until"].timestamp() * 1000))]
    settings = await conn.fetchrow(
        "SELECT slow_mode_s, blocked_words, closed, pinned FROM chat_settings WHERE room_id = $1",
        room_id,
    )
    if settings is not None:
        fields += [
            "slow", str(settings["slow_mode_s"]),
            "closed", "1" if settings["closed"] else "0",
            "words", "\n".join(settings["blocked_words"]),
        ]  # fmt: skip
        if settings["pinned"] is not None:
            pinned_by = await conn.fetchrow(
                "SELECT actor_id, at FROM chat_moderation_log"
                " WHERE room_id = $1 AND action = 'pin' ORDER BY id DESC LIMIT 1",
                room_id,
            )
            assert pinned_by is not None  # a pin is logged in its transaction
            notice = PinnedNotice(
                text=settings["pinned"], by=pinned_by["actor_id"], at=pinned_by["at"]
            )
            fields += ["pinned", _encode(notice).decode()]
    return fields


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- fan-out ---


class ChatFeed(Feed):
    """A chat channel's feed: a room's fan-out, with the sampling that keeps a busy room's chat
    readable and its cost bounded."""

    def __init__(
        self,
        channel: str,
        *,
        flush_s: float,
        max_held: int,
        on_empty: Callable[[Feed], None],
        host_id: str,
        fanout_per_s: int,
    ) -> None:
        super().__init__(channel, flush_s=flush_s, max_held=max_held, on_empty=on_empty)
        self.chat_room_id = channel.removeprefix(CHAT_PREFIX)
        self.host_id = host_id
        self.fanout_per_s = fanout_per_s
        self.by_user: dict[str, set[Session]] = {}
        # offset → (sender, always shown) of the chat messages pending this tick
        self._senders: dict[int, tuple[str, bool]] = {}
        loop = asyncio.get_running_loop()
        self._budget = float(fanout_per_s)
        self._budget_at = loop.time()
        self._window_at = loop.time()
        self.received = 0  # chat messages this window
        self.shown = 0
        self._sampled = False  # this window left messages out
        self._stats_due = False
        self._last_received = 0  # the last whole window's counts, for chat.stats
        self._last_shown = 0
        self.total_received = 0
        self.total_shown = 0

    # membership, indexed by user (a sender's own message finds their sessions)

    def join(self, session: Session) -> None:
        super().join(session)
        if session.user_id:
            self.by_user.setdefault(session.user_id, set()).add(session)

    def remove(self, session: Session) -> None:
        sessions = self.by_user.get(session.user_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self.by_user[session.user_id]
        super().remove(session)

    def kick(self, user_id: str, reason: str) -> int:
        """End every subscription of `user_id` to this chat on this node (a ban)."""
        sessions = list(self.by_user.get(user_id, ()))
        push = unsubscribe_push(self.channel, UNSUBSCRIBE_BANNED, reason)
        for session in sessions:
            self.remove(session)
            session.send(push)
        return len(sessions)

    # publications

    def deliver(self, offset: int, epoch: str, coalesce_key: bytes, data: bytes) -> None:
        if data.startswith(MESSAGE_HEAD):
            try:
                sender = _decode_head(data).user
            except msgspec.DecodeError:
                sender = _Sender("", "viewer")
            self._senders[offset] = (sender.id, sender.role != "viewer")
        super().deliver(offset, epoch, coalesce_key, data)

    def flush(self) -> None:
        started = time.perf_counter()
        self._flush_at = None
        items = [item for item in self._pending if item is not None]
        self._pending.clear()
        self._pending_keys.clear()
        senders, self._senders = self._senders, {}
        now = asyncio.get_running_loop().time()
        shown, own = self._sample(items, senders, now)
        if self._stats_due and shown:
            self._stats_due = False
            stats = ChatStats(received=self._last_received, shown=self._last_shown)
            shown.append((self.top, publication_push(self.channel, encode(stats), self.top)))
        if not shown and not own:
            return
        frame = text_frame(b"\n".join(push for _, push in shown)) if shown else b""
        personal: dict[Session, bytes] = {}
        for user, extra in own.items():
            for session in self.by_user.get(user, ()):
                merged = sorted([*shown, *extra], key=lambda item: item[0])
                personal[session] = text_frame(b"\n".join(push for _, push in merged))
        slow: list[tuple[Session, bytes]] = []
        gone: list[Session] = []
        written = sent_bytes = 0
        for session, transport in self.live.items():
            data = personal.get(session, frame) if personal else frame
            if not data:
                continue
            if transport.get_write_buffer_size() > session.outbox_bytes:
                slow.append((session, data))
            else:
                try:
                    transport.write(data)
                    written += 1
                    sent_bytes += len(data)
                except RuntimeError:  # the client closed; its handler has not noticed yet
                    gone.append(session)
        SENT.add(written, sent_bytes)
        for session in gone:
            session.peer_closed()
        if self.skipping:
            for session, upto in list(self.skipping.items()):
                mine = own.get(session.user_id, []) if own else []
                wanted = [push for offset, push in sorted([*shown, *mine]) if offset > upto]
                if wanted:
                    session.send(*wanted)
                    written += 1
                if self.top >= upto and session in self.skipping:
                    del self.skipping[session]
                    self.live[session] = session.transport
        for session, data in slow:
            session.write_frame(data)  # over the limit: disconnects it as slow
        self.delivered += written * len(shown)
        HUB_METRICS.flush.observe(time.perf_counter() - started)

    def _sample(
        self,
        items: list[tuple[int, bytes]],
        senders: dict[int, tuple[str, bool]],
        now: float,
    ) -> tuple[list[tuple[int, bytes]], dict[str, list[tuple[int, bytes]]]]:
        """The items everyone gets this tick, and per sender their own messages left out."""
        if now - self._window_at >= STATS_EVERY_S:
            if self._sampled or self.received > self.fanout_per_s:
                self._stats_due = True
            self._last_received, self._last_shown = self.received, self.shown
            self.received = self.shown = 0
            self._sampled = False
            self._window_at = now
        cap = float(self.fanout_per_s)
        self._budget = min(cap, self._budget + (now - self._budget_at) * cap)
        self._budget_at = now
        ordinary = [item for item in items if item[0] in senders and not senders[item[0]][1]]
        messages = sum(1 for item in items if item[0] in senders)
        self.received += messages
        self.total_received += messages
        if len(ordinary) <= self._budget:
            self._budget -= len(ordinary)
            self.shown += messages
            self.total_shown += messages
            return items, {}
        # a fair sample: one message per sender in random order, then a second each, ...
        take = int(self._budget)
        self._budget -= take
        by_sender: dict[str, list[tuple[int, bytes]]] = {}
        for item in ordinary:
            by_sender.setdefault(senders[item[0]][0], []).append(item)
        order = list(by_sender)
        random.shuffle(order)
        chosen: set[int] = set()
        depth = 0
        while len(chosen) < take:
            for user in order:
                queue = by_sender[user]
                if depth < len(queue) and len(chosen) < take:
                    chosen.add(queue[depth][0])
            depth += 1
        left_out = {item[0] for item in ordinary} - chosen
        shown = [item for item in items if item[0] not in left_out]
        own: dict[str, list[tuple[int, bytes]]] = {}
        for item in ordinary:
            if item[0] in left_out:
                own.setdefault(senders[item[0]][0], []).append(item)
        self._sampled = True
        count = messages - len(left_out)
        self.shown += count
        self.total_shown += count
        return shown, own


class KickMessage(msgspec.Struct):
    """A control message on CONTROL_CHANNEL: end `user`'s subscriptions to `channel`."""

    kick: str
    user: str


decode_control = msgspec.json.Decoder(KickMessage).decode
