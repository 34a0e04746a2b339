"""Chat moderation and likes: the routes a room's host and moderators use, and the like button's.

Each decision is written to PostgreSQL (the record, with a line in the append-only audit log)
in one transaction; after commit it is mirrored into the room's moderation hash in Redis, which
the hub's publish script reads on every message (so it holds on every hub node from the next
message on), and announced: a `chat.*` event on `chat:{id}`, and for a ban a control message
that makes every hub node end the banned user's chat subscriptions at once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from core import rooms as rooms_db
from core.auth import Principal, UserId, is_user_id
from core.errors import Forbidden, NotFound, RoomEnded, RoomNotFound, TooManyRequests, Unprocessable
from core.http import JSON, path_id, read_json, require, resources
from core.openapi import api_route
from core.ratelimit import Limit
from core.rooms import Conn
from core.scripts import register
from live.chat import (
    CONTROL_CHANNEL,
    MAX_TEXT,
    MESSAGE_HEAD,
    ChatDeleted,
    ChatPinned,
    ChatSettings,
    ChatSettingsChanged,
    ChatUnpinned,
    KickMessage,
    LikesChanged,
    PinnedNotice,
    chat_channel,
    deleted_key,
    likes_key,
    moderation_key,
    recent_key,
    write_moderation,
)

MAX_MUTE_S = 7 * 86_400
MAX_SLOW_MODE_S = 3600
MAX_BLOCKED_WORDS = 200
MAX_WORD = 50
LOG_ENTRIES = 200
MAX_LIKES_PER_POST = 100
# like posts per user per 10 s (a client batches its taps, about one post a second)
LIKE_POSTS = Limit("likes", 30)


class NotRoomModerator(Forbidden):
    code = "not_room_moderator"

    def __init__(self, room_id: int, host_only: bool) -> None:
        who = "the room's host" if host_only else "the room's host or its moderators"
        super().__init__(f"only {who} may do this in room {room_id}", room_id=str(room_id))


class CannotModerate(Forbidden):
    code = "cannot_moderate"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"{user_id} cannot be muted or banned by you", user_id=user_id)


class MessageNotFound(NotFound):
    code = "message_not_found"

    def __init__(self, message_id: str) -> None:
        super().__init__(f"no chat message {message_id}", message_id=message_id)


# --- bodies and answers ---


class UserRequest(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserId


class MuteRequest(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserId
    seconds: int


class SettingsRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    slow_mode_s: int | msgspec.UnsetType = msgspec.UNSET
    blocked_words: list[str] | msgspec.UnsetType = msgspec.UNSET
    closed: bool | msgspec.UnsetType = msgspec.UNSET


class PinRequest(msgspec.Struct, forbid_unknown_fields=True):
    text: str


class LikeRequest(msgspec.Struct, forbid_unknown_fields=True):
    count: int = 1


class Moderator(msgspec.Struct):
    room_id: str
    user_id: str


class Restriction(msgspec.Struct):
    room_id: str
    user_id: str
    kind: str  # mute, ban
    until: datetime | None


class RoomChatSettings(msgspec.Struct):
    room_id: str
    slow_mode_s: int
    blocked_words: list[str]
    closed: bool
    pinned: PinnedNotice | None


class LogEntry(msgspec.Struct):
    id: str
    actor_id: str
    action: str
    target_user_id: str | None
    message_id: str | None
    detail: dict[str, Any]
    at: datetime


class Moderation(msgspec.Struct):
    room_id: str
    host_id: str
    moderators: list[str]
    mutes: list[Restriction]
    bans: list[Restriction]
    settings: RoomChatSettings
    log: list[LogEntry]


class Done(msgspec.Struct):
    ok: bool = True


class Likes(msgspec.Struct):
    room_id: str
    total: int


# --- checks ---


def _path_user_id(request: Request) -> str:
    """The `{user_id}` of the path; anything no token could carry names nobody (404)."""
    user_id = request.path_params["user_id"]
    if not is_user_id(user_id):
        raise NotFound(f"no user {user_id!r}")
    return user_id


async def _moderated_room(
    conn: Conn, who: Principal, room_id: int, *, host_only: bool = False
) -> tuple[str, bool]:
    """(the room's host, whether `who` is the host or an admin), if `who` may moderate it."""
    room = await rooms_db.get_room(conn, room_id)
    if room is None:
        raise RoomNotFound(room_id)
    if room.host_id == who.user_id or who.is_admin:
        return room.host_id, True
    if not host_only and await conn.fetchval(
        "SELECT 1 FROM chat_moderators WHERE room_id = $1 AND user_id = $2", room_id, who.user_id
    ):
        return room.host_id, False
    raise NotRoomModerator(room_id, host_only)


async def _log(
    conn: Conn,
    room_id: int,
    actor: str,
    action: str,
    *,
    target: str | None = None,
    message_id: str | None = None,
    **detail: Any,
) -> None:
    await conn.execute(
        "INSERT INTO chat_moderation_log (room_id, actor_id, action, target_user_id, message_id,"
        " detail) VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        room_id,
        actor,
        action,
        target,
        message_id,
        json.dumps(detail),
    )


async def _may_restrict(conn: Conn, room_id: int, host_id: str, is_host: bool, target: str) -> None:
    """Nobody mutes or bans the host; only the host mutes or bans a moderator."""
    if target == host_id:
        raise CannotModerate(target)
    if not is_host and await conn.fetchval(
        "SELECT 1 FROM chat_moderators WHERE room_id = $1 AND user_id = $2", room_id, target
    ):
        raise CannotModerate(target)


# --- moderators ---


async def appoint_moderator(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    user_id = (await read_json(request, UserRequest)).user_id
    res = resources(request)
    async with res.pool.acquire() as conn, conn.transaction():
        await _moderated_room(conn, who, room_id, host_only=True)
        await conn.execute(
            "INSERT INTO chat_moderators (room_id, user_id, appointed_by) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            room_id,
            user_id,
            who.user_id,
        )
        await _log(conn, room_id, who.user_id, "appoint", target=user_id)
    await write_moderation(res.redis, room_id, {"mod:" + user_id: "1"})
    return JSON(Moderator(room_id=str(room_id), user_id=user_id), 201)


async def dismiss_moderator(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    user_id = _path_user_id(request)
    res = resources(request)
    async with res.pool.acquire() as conn, conn.transaction():
        await _moderated_room(conn, who, room_id, host_only=True)
        await conn.execute(
            "DELETE FROM chat_moderators WHERE room_id = $1 AND user_id = $2", room_id, user_id
        )
        await _log(conn, room_id, who.user_id, "dismiss", target=user_id)
    await write_moderation(res.redis, room_id, remove=("mod:" + user_id,))
    return JSON(Done())


# --- mutes and bans ---


async def mute(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    body = await read_json(request, MuteRequest)
    user_id = body.user_id
    if not 1 <= body.seconds <= MAX_MUTE_S:
        raise Unprocessable(f"seconds must be 1 to {MAX_MUTE_S}", field="seconds")
    until = datetime.now(UTC) + timedelta(seconds=body.seconds)
    res = resources(request)
    async with res.pool.acquire() as conn, conn.transaction():
        host_id, is_host = await _moderated_room(conn, who, room_id)
        await _may_restrict(conn, room_id, host_id, is_host, user_id)
        await conn.execute(
            "INSERT INTO chat_restrictions (room_id, user_id, kind, until, decided_by)"
            " VALUES ($1, $2, 'mute', $3, $4) ON CONFLICT (room_id, user_id, kind)"
            " DO UPDATE SET until = EXCLUDED.until, decided_by = EXCLUDED.decided_by,"
            " decided_at = now()",
            room_id,
            user_id,
            until,
            who.user_id,
        )
        await _log(conn, room_id, who.user_id, "mute", target=user_id, seconds=body.seconds)
    until_ms = int(until.timestamp() * 1000)
    await write_moderation(res.redis, room_id, {"mute:" + user_id: str(until_ms)})
    return JSON(Restriction(room_id=str(room_id), user_id=user_id, kind="mute", until=until), 201)


async def unmute(request: Request) -> Response:
    return await _lift(request, "mute")


async def ban(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    user_id = (await read_json(request, UserRequest)).user_id
    res = resources(request)
    async with res.pool.acquire() as conn, conn.transaction():
        host_id, is_host = await _moderated_room(conn, who, room_id)
        await _may_restrict(conn, room_id, host_id, is_host, user_id)
        await conn.execute(
            "INSERT INTO chat_restrictions (room_id, user_id, kind, decided_by)"
            " VALUES ($1, $2, 'ban', $3) ON CONFLICT (room_id, user_id, kind)"
            " DO UPDATE SET decided_by = EXCLUDED.decided_by, decided_at = now()",
            room_id,
            user_id,
            who.user_id,
        )
        await _log(conn, room_id, who.user_id, "ban", target=user_id)
    # the ban is in place before any node is told to end the subscriptions: a resubscribe
    # racing the kick is refused
    await write_moderation(res.redis, room_id, {"ban:" + user_id: "1"})
    kick = msgspec.json.encode(KickMessage(kick=chat_channel(room_id), user=user_id))
    await res.redis.publish(CONTROL_CHANNEL.decode(), kick)
    return JSON(Restriction(room_id=str(room_id), user_id=user_id, kind="ban", until=None), 201)


async def unban(request: Request) -> Response:
    return await _lift(request, "ban")


async def _lift(request: Request, kind: str) -> Response:
    who = require(request)
    room_id = path_id(request)
    user_id = _path_user_id(request)
    res = resources(request)
    async with res.pool.acquire() as conn, conn.transaction():
        await _moderated_room(conn, who, room_id)
        await conn.execute(
            "DELETE FROM chat_restrictions WHERE room_id = $1 AND user_id = $2 AND kind = $3",
            room_id,
            user_id,
            kind,
        )
        await _log(conn, room_id, who.user_id, "un" + kind, target=user_id)
    await write_moderation(res.redis, room_id, remove=(f"{kind}:{user_id}",))
    return JSON(Done())


# --- messages, settings, the pinned notice ---


async def delete_message(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    message_id: str = request.path_params["message_id"]  # an id: the route's path says so
    res = resources(request)
    async with res.pool.acquire() as conn:
        await _moderated_room(conn, who, room_id)
    history = "{" + chat_channel(room_id) + "}:history"
    script = register(res.redis, "live", "chat_delete")
    found = await script(
        keys=[history, recent_key(room_id), deleted_key(room_id)],
        args=[message_id, MESSAGE_HEAD.decode(), res.settings.hub_history_ttl_s],
    )
    if int(found) == 0:
        raise MessageNotFound(message_id)
    if int(found) == 2:
        return JSON(Done())  # deleted before: nothing more to announce
    async with res.pool.acquire() as conn:
        await _log(conn, room_id, who.user_id, "delete", message_id=message_id)
    await res.publisher.publish(
        chat_channel(room_id), ChatDeleted(room_id=str(room_id), id=message_id)
    )
    return JSON(Done())


def _words(raw: list[str]) -> list[str]:
    if len(raw) > MAX_BLOCKED_WORDS:
        raise Unprocessable(f"at most {MAX_BLOCKED_WORDS} blocked words", field="blocked_words")
    words: list[str] = []
    for word in raw:
        folded = word.strip().casefold()
        if not 1 <= len(folded) <= MAX_WORD or not folded.isprintable():
            raise Unprocessable(
                f"a blocked word is 1 to {MAX_WORD} printable characters", field="blocked_words"
            )
        if folded not in words:
            words.append(folded)
    return words


async def put_settings(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    body = await read_json(request, SettingsRequest)
    if body.slow_mode_s is not msgspec.UNSET and not 0 <= body.slow_mode_s <= MAX_SLOW_MODE_S:
        raise Unprocessable(f"slow_mode_s must be 0 to {MAX_SLOW_MODE_S}", field="slow_mode_s")
    words = None if body.blocked_words is msgspec.UNSET else _words(body.blocked_words)
    res = resources(request)
    async with res.pool.acquire() as conn, conn.transaction():
        await _moderated_room(conn, who, room_id)
        row = await conn.fetchrow(
            "INSERT INTO chat_settings (room_id, slow_mode_s, blocked_words, closed)"
            " VALUES ($1, coalesce($2, 0), coalesce($3, '{}'::text[]), coalesce($4, false))"
            " ON CONFLICT (room_id) DO UPDATE SET"
            " slow_mode_s = coalesce($2, chat_settings.slow_mode_s),"
            " blocked_words = coalesce($3, chat_settings.blocked_words),"
            " closed = coalesce($4, chat_settings.closed), updated_at = now()"
            " RETURNING slow_mode_s, blocked_words, closed, pinned",
            room_id,
            None if body.slow_mode_s is msgspec.UNSET else body.slow_mode_s,
            words,
            None if body.closed is msgspec.UNSET else body.closed,
        )
        assert row is not None
        await _log(
            conn,
            room_id,
            who.user_id,
            "settings",
            **msgspec.to_builtins(body),
        )
    await write_moderation(
        res.redis,
        room_id,
        {
            "slow": str(row["slow_mode_s"]),
            "closed": "1" if row["closed"] else "0",
            "words": "\n".join(row["blocked_words"]),
        },
    )
    visible = ChatSettings(slow_mode_s=row["slow_mode_s"], closed=row["closed"])
    await res.publisher.publish(
        chat_channel(room_id), ChatSettingsChanged(room_id=str(room_id), settings=visible)
    )
    return JSON(await _settings(request, room_id))


async def pin_notice(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    text = (await read_json(request, PinRequest)).text.strip()
    if not 1 <= len(text) <= MAX_TEXT or not text.isprintable():
        raise Unprocessable(f"text must be 1 to {MAX_TEXT} printable characters", field="text")
    res = resources(request)
    pinned = PinnedNotice(text=text, by=who.user_id, at=datetime.now(UTC))
    async with res.pool.acquire() as conn, conn.transaction():
        await _moderated_room(conn, who, room_id)
        await conn.execute(
            "INSERT INTO chat_settings (room_id, pinned) VALUES ($1, $2)"
            " ON CONFLICT (room_id) DO UPDATE SET pinned = $2, updated_at = now()",
            room_id,
            text,
        )
        await _log(conn, room_id, who.user_id, "pin", text=text)
    await write_moderation(res.redis, room_id, {"pinned": msgspec.json.encode(pinned)})
    await res.publisher.publish(
        chat_channel(room_id), ChatPinned(room_id=str(room_id), pinned=pinned)
    )
    return JSON(pinned, 201)


async def unpin_notice(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    res = resources(request)
    async with res.pool.acquire() as conn, conn.transaction():
        await _moderated_room(conn, who, room_id)
        await conn.execute(
            "UPDATE chat_settings SET pinned = NULL, updated_at = now() WHERE room_id = $1",
            room_id,
        )
        await _log(conn, room_id, who.user_id, "unpin")
    await write_moderation(res.redis, room_id, remove=("pinned",))
    await res.publisher.publish(chat_channel(room_id), ChatUnpinned(room_id=str(room_id)))
    return JSON(Done())


async def _settings(request: Request, room_id: int) -> RoomChatSettings:
    res = resources(request)
    raw_pinned = await res.redis.hget(moderation_key(room_id), "pinned")  # type: ignore[misc]
    async with res.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT slow_mode_s, blocked_words, closed FROM chat_settings WHERE room_id = $1",
            room_id,
        )
    return RoomChatSettings(
        room_id=str(room_id),
        slow_mode_s=row["slow_mode_s"] if row else 0,
        blocked_words=list(row["blocked_words"]) if row else [],
        closed=bool(row["closed"]) if row else False,
        pinned=msgspec.json.decode(raw_pinned, type=PinnedNotice) if raw_pinned else None,
    )


async def get_moderation(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    res = resources(request)
    async with res.pool.acquire() as conn:
        host_id, _ = await _moderated_room(conn, who, room_id)
        moderators = await conn.fetch(
            "SELECT user_id FROM chat_moderators WHERE room_id = $1 ORDER BY appointed_at",
            room_id,
        )
        restrictions = await conn.fetch(
            "SELECT user_id, kind, until FROM chat_restrictions WHERE room_id = $1"
            " AND (until IS NULL OR until > now()) ORDER BY decided_at",
            room_id,
        )
        log_rows = await conn.fetch(
            "SELECT id, actor_id, action, target_user_id, message_id, detail, at"
            " FROM chat_moderation_log WHERE room_id = $1 ORDER BY id DESC LIMIT $2",
            room_id,
            LOG_ENTRIES,
        )
    kept = [
        Restriction(room_id=str(room_id), user_id=r["user_id"], kind=r["kind"], until=r["until"])
        for r in restrictions
    ]
    return JSON(
        Moderation(
            room_id=str(room_id),
            host_id=host_id,
            moderators=[r["user_id"] for r in moderators],
            mutes=[r for r in kept if r.kind == "mute"],
            bans=[r for r in kept if r.kind == "ban"],
            settings=await _settings(request, room_id),
            log=[
                LogEntry(
                    id=str(r["id"]),
                    actor_id=r["actor_id"],
                    action=r["action"],
                    target_user_id=r["target_user_id"],
                    message_id=r["message_id"],
                    detail=json.loads(r["detail"]),
                    at=r["at"],
                )
                for r in log_rows
            ],
        )
    )


# --- likes ---


async def like(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    body = await read_json(request, LikeRequest)
    if not 1 <= body.count <= MAX_LIKES_PER_POST:
        raise Unprocessable(f"count must be 1 to {MAX_LIKES_PER_POST}", field="count")
    res = resources(request)
    refused = await res.limiter.hit((LIKE_POSTS, who.user_id))
    if refused is not None:
        raise TooManyRequests("too many likes; batch taps", retry_after_s=refused.retry_after_s)
    async with res.pool.acquire() as conn:
        status = await conn.fetchval("SELECT status FROM rooms WHERE id = $1", room_id)
    if status is None:
        raise RoomNotFound(room_id)
    if status == "ended":
        raise RoomEnded(room_id)
    total = int(await res.redis.incrby(likes_key(room_id), body.count))
    await res.publisher.publish(
        "room:" + str(room_id), LikesChanged(room_id=str(room_id), total=total)
    )
    return JSON(Likes(room_id=str(room_id), total=total))


def moderation_routes() -> list[BaseRoute]:
    host = dict(roles=("host", "admin"), errors=(401, 403, 404, 422), tag="chat")
    mods = dict(errors=(401, 403, 404, 422), tag="chat")
    return [
        api_route(
            "/api/rooms/{id}/moderators",
            appoint_moderator,
            methods=["POST"],
            summary="appoint a chat moderator (room's host)",
            body=UserRequest,
            response=Moderator,
            status=201,
            **host,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/moderators/{user_id}",
            dismiss_moderator,
            methods=["DELETE"],
            summary="remove a chat moderator (room's host)",
            path_params={"user_id": UserId},
            response=Done,
            **host,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/mutes",
            mute,
            methods=["POST"],
            summary="mute a user in this room's chat for `seconds` (host, moderator)",
            body=MuteRequest,
            response=Restriction,
            status=201,
            **mods,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/mutes/{user_id}",
            unmute,
            methods=["DELETE"],
            summary="lift a mute (host, moderator)",
            path_params={"user_id": UserId},
            response=Done,
            **mods,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/bans",
            ban,
            methods=["POST"],
            summary="ban a user from this room's chat; their subscription ends (host, moderator)",
            body=UserRequest,
            response=Restriction,
            status=201,
            **mods,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/bans/{user_id}",
            unban,
            methods=["DELETE"],
            summary="lift a ban (host, moderator)",
            path_params={"user_id": UserId},
            response=Done,
            **mods,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/chat/settings",
            put_settings,
            methods=["PUT"],
            summary="slow mode, blocked words, closed chat (host, moderator)",
            body=SettingsRequest,
            response=RoomChatSettings,
            **mods,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/chat/pin",
            pin_notice,
            methods=["POST"],
            summary="pin a notice above the chat (host, moderator)",
            body=PinRequest,
            response=PinnedNotice,
            status=201,
            **mods,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/chat/pin",
            unpin_notice,
            methods=["DELETE"],
            summary="unpin the chat notice (host, moderator)",
            response=Done,
            **mods,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/chat/{message_id:id}",
            delete_message,
            methods=["DELETE"],
            summary="delete a chat message: chat.deleted, gone from snapshot and history",
            response=Done,
            **mods,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/moderation",
            get_moderation,
            methods=["GET"],
            summary="moderators, mutes, bans, settings and the audit log (host, moderator)",
            response=Moderation,
            **mods,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/likes",
            like,
            methods=["POST"],
            summary="add taps to the room's likes (batched by the client): likes.changed",
            body=LikeRequest,
            response=Likes,
            errors=(401, 404, 409, 422, 429),
            tag="chat",
        ),
    ]
