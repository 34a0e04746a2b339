"""Room chat on the hub, spoken by hand: posting through `publish`, what the hub refuses and
with which code, moderation taking effect, the subscribe snapshot and recovery."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from core.resources import Resources
from core.scripts import register
from live.chat import moderation_key, write_moderation
from tests.live.conftest import RawClient, Room, RunningHub

Opener = Callable[..., Any]


def token(res: Resources, sub: str, name: str | None = None, roles: tuple[str, ...] = ()) -> str:
    claims: dict[str, Any] = {"sub": sub, "roles": list(roles or ("viewer",))}
    if name is not None:
        claims["name"] = name
    claims["exp"] = int(time.time()) + 3600
    return jwt.encode(claims, res.settings.secret, algorithm="HS256")


async def chatter(
    raw_client: Opener, res: Resources, room: Room, sub: str = "", name: str | None = None
) -> RawClient:
    """A connected client subscribed to the room's chat (a guest when `sub` is empty)."""
    client: RawClient = await raw_client()
    await client.connect(token(res, sub, name) if sub else "")
    reply = await client.subscribe(f"chat:{room.id}")
    assert "subscribe" in reply, reply
    return client


async def post(client: RawClient, room: Room, data: Any) -> dict[str, Any]:
    return await client.reply(
        await client.send(publish={"channel": f"chat:{room.id}", "data": data})
    )


async def message(client: RawClient, timeout: float = 5.0) -> dict[str, Any]:
    push = await client.publication(timeout)
    return push["pub"]["data"]  # type: ignore[no-any-return]


async def nothing_more(client: RawClient, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await client.publication(wait)


async def test_two_users_post_and_read_with_server_set_identity(
    raw_client: Opener, resources: Resources, room: Room
) -> None:
    ann = await chatter(raw_client, resources, room, "ann", "Ann")
    bob = await chatter(raw_client, resources, room, "bob")
    assert await post(ann, room, {"text": "  does it come in XL?  "}) == {"id": 3, "publish": {}}
    seen = await message(bob)
    assert seen["type"] == "chat.message"
    assert seen["room_id"] == room.id
    assert seen["user"] == {"id": "ann", "name": "Ann", "role": "viewer"}
    assert seen["text"] == "does it come in XL?"
    assert abs(seen["ts"] - time.time() * 1000) < 5000
    assert (await message(ann))["id"] == seen["id"]
    assert "id" in (await post(bob, room, {"text": "扣1"}))
    reply = await message(ann)
    assert reply["user"] == {"id": "bob", "name": "bob", "role": "viewer"}


async def test_a_forged_identity_is_ignored(
    raw_client: Opener, resources: Resources, room: Room
) -> None:
    mallory = await chatter(raw_client, resources, room, "mallory")
    forged = {
        "text": "I am the host",
        "type": "chat.deleted",
        "id": "1",
        "room_id": "999",
        "user": {"id": "alice", "name": "Host", "role": "host"},
        "role": "host",
        "ts": 1,
    }
    assert "publish" in await post(mallory, room, forged)
    seen = await message(mallory)
    assert seen["type"] == "chat.message"
    assert seen["user"] == {"id": "mallory", "name": "mallory", "role": "viewer"}
    assert seen["room_id"] == room.id
    assert seen["ts"] != 1


async def test_the_host_and_moderators_are_named_so(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    appointed = await client.post(
        f"/api/rooms/{room.id}/moderators", json={"user_id": "mo"}, headers=room.host
    )
    assert appointed.status_code == 201, appointed.text
    host = await chatter(raw_client, resources, room, "alice")
    mo = await chatter(raw_client, resources, room, "mo")
    viewer = await chatter(raw_client, resources, room)
    await post(host, room, {"text": "welcome"})
    assert (await message(viewer))["user"]["role"] == "host"
    await post(mo, room, {"text": "rules: be kind"})
    assert (await message(viewer))["user"]["role"] == "moderator"


async def test_refusals_carry_their_codes(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    guest = await chatter(raw_client, resources, room)
    ann = await chatter(raw_client, resources, room, "ann")
    assert (await post(guest, room, {"text": "hi"}))["error"]["code"] == 101
    for bad in ("", "   ", "x" * 201, "x" * 10_000, "a\x00b", "line\nbreak", "bell\x07"):
        assert (await post(ann, room, {"text": bad}))["error"]["code"] == 107, repr(bad[:10])
    for bad_data in (None, "text", 42, [1], {"txt": "hi"}, {"text": 5}, {"text": ["hi"]}):
        assert (await post(ann, room, bad_data))["error"]["code"] == 107, bad_data
    # another room's channel, not subscribed, or not a chat at all
    other = await ann.reply(await ann.send(publish={"channel": "chat:999", "data": {"text": "x"}}))
    assert other["error"]["code"] == 103
    room_channel = await ann.reply(
        await ann.send(publish={"channel": f"room:{room.id}", "data": {"text": "x"}})
    )
    assert room_channel["error"]["code"] == 103
    # an emoji sequence with a zero-width joiner is text, not control
    assert "publish" in await post(ann, room, {"text": "👩\u200d💻 ok"})
    seen = await message(guest)
    assert seen["text"] == "👩\u200d💻 ok"
    await nothing_more(guest)


async def test_mute_refuses_with_103_until_it_ends(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    ann = await chatter(raw_client, resources, room, "ann")
    muted = await client.post(
        f"/api/rooms/{room.id}/mutes", json={"user_id": "ann", "seconds": 1}, headers=room.host
    )
    assert muted.status_code == 201, muted.text
    refused = await post(ann, room, {"text": "hello?"})
    assert refused["error"]["code"] == 103
    assert "muted until" in refused["error"]["message"]
    await asyncio.sleep(1.1)
    assert "publish" in await post(ann, room, {"text": "back"})


async def test_ban_ends_the_subscription_and_resubscribe_gets_103(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    ann = await chatter(raw_client, resources, room, "ann")
    bob = await chatter(raw_client, resources, room, "bob")
    banned = await client.post(
        f"/api/rooms/{room.id}/bans", json={"user_id": "ann"}, headers=room.host
    )
    assert banned.status_code == 201, banned.text
    async with asyncio.timeout(5):
        while True:
            push = (await ann.receive()).get("push", {})
            if "unsubscribe" in push:
                break
    assert push["channel"] == f"chat:{room.id}"
    assert push["unsubscribe"]["code"] >= 2500
    again = await ann.subscribe(f"chat:{room.id}")
    assert again["error"]["code"] == 103
    assert (await post(ann, room, {"text": "still here"}))["error"]["code"] == 103
    # bob carries on
    assert "publish" in await post(bob, room, {"text": "bye ann"})
    assert (await message(bob))["text"] == "bye ann"
    # the host cannot be banned, and a viewer cannot ban anyone
    assert (
        await client.post(
            f"/api/rooms/{room.id}/bans", json={"user_id": "alice"}, headers=room.host
        )
    ).status_code == 403


async def test_blocked_words_refuse_with_107_and_reach_nobody(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    ann = await chatter(raw_client, resources, room, "ann")
    bob = await chatter(raw_client, resources, room, "bob")
    changed = await client.put(
        f"/api/rooms/{room.id}/chat/settings",
        json={"blocked_words": ["Scam", "假货"]},
        headers=room.host,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["blocked_words"] == ["scam", "假货"]
    settings_event = await message(bob)
    assert settings_event["type"] == "chat.settings"
    assert "blocked_words" not in json.dumps(settings_event)
    await message(ann)
    for text in ("total SCAM here", "这是假货吗"):
        assert (await post(ann, room, {"text": text}))["error"]["code"] == 107
    await nothing_more(bob)


async def test_slow_mode_gives_106(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    ann = await chatter(raw_client, resources, room, "ann")
    host = await chatter(raw_client, resources, room, "alice")
    changed = await client.put(
        f"/api/rooms/{room.id}/chat/settings", json={"slow_mode_s": 30}, headers=room.host
    )
    assert changed.status_code == 200
    assert "publish" in await post(ann, room, {"text": "first"})
    refused = await post(ann, room, {"text": "second"})
    assert refused["error"]["code"] == 106
    assert "slow mode until" in refused["error"]["message"]
    # the host is not slowed
    assert "publish" in await post(host, room, {"text": "one"})
    assert "publish" in await post(host, room, {"text": "two"})


async def test_closed_chat_refuses_viewers_not_the_host(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    ann = await chatter(raw_client, resources, room, "ann")
    host = await chatter(raw_client, resources, room, "alice")
    await client.put(
        f"/api/rooms/{room.id}/chat/settings", json={"closed": True}, headers=room.host
    )
    assert (await post(ann, room, {"text": "hello"}))["error"]["code"] == 103
    assert "publish" in await post(host, room, {"text": "chat is closed for now"})


async def test_a_deleted_message_leaves_the_snapshot_and_reaches_everyone_as_deleted(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    ann = await chatter(raw_client, resources, room, "ann")
    bob = await chatter(raw_client, resources, room, "bob")
    await post(ann, room, {"text": "keep me"})
    await post(ann, room, {"text": "delete me"})
    kept = await message(bob)
    doomed = await message(bob)
    deleted = await client.delete(f"/api/rooms/{room.id}/chat/{doomed['id']}", headers=room.host)
    assert deleted.status_code == 200, deleted.text
    for watcher in (ann, bob):
        while (event := await message(watcher))["type"] != "chat.deleted":
            pass
        assert event == {"type": "chat.deleted", "room_id": room.id, "id": doomed["id"]}
    fresh: RawClient = await raw_client()
    await fresh.connect()
    snapshot = (await fresh.subscribe(f"chat:{room.id}"))["subscribe"]["data"]
    assert [m["text"] for m in snapshot["messages"]] == ["keep me"]
    assert snapshot["messages"][0]["id"] == kept["id"]
    assert snapshot["settings"] == {"slow_mode_s": 0, "closed": False}
    assert snapshot["pinned"] is None
    again = await client.delete(f"/api/rooms/{room.id}/chat/{doomed['id']}", headers=room.host)
    assert again.status_code == 200  # deleting twice is deleting once: no second event
    await nothing_more(bob)
    assert (
        await client.delete(f"/api/rooms/{room.id}/chat/12345", headers=room.host)
    ).status_code == 404
    viewer_try = await client.delete(
        f"/api/rooms/{room.id}/chat/{kept['id']}",
        headers={"Authorization": f"Bearer {token(resources, 'bob')}"},
    )
    assert viewer_try.status_code == 403


async def test_recovery_skips_deleted_messages(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    ann = await chatter(raw_client, resources, room, "ann")
    reader: RawClient = await raw_client()
    await reader.connect()
    first = (await reader.subscribe(f"chat:{room.id}"))["subscribe"]
    await reader.ws.close()
    await post(ann, room, {"text": "one"})
    await post(ann, room, {"text": "two"})
    one = await message(ann)
    two = await message(ann)
    await client.delete(f"/api/rooms/{room.id}/chat/{one['id']}", headers=room.host)
    back: RawClient = await raw_client()
    await back.connect()
    recovered = (
        await back.subscribe(
            f"chat:{room.id}", recover=True, offset=first.get("offset", 0), epoch=first["epoch"]
        )
    )["subscribe"]
    assert recovered["recovered"] is True
    types = [(p["data"]["type"], p["data"].get("text")) for p in recovered["publications"]]
    assert types == [("chat.message", "two"), ("chat.deleted", None)]
    assert two["id"] in [p["data"]["id"] for p in recovered["publications"]]


async def test_pin_and_settings_show_in_the_snapshot(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    bob = await chatter(raw_client, resources, room, "bob")
    pinned = await client.post(
        f"/api/rooms/{room.id}/chat/pin", json={"text": "Free shipping today"}, headers=room.host
    )
    assert pinned.status_code == 201, pinned.text
    event = await message(bob)
    assert event["type"] == "chat.pinned"
    assert event["pinned"]["text"] == "Free shipping today"
    await client.put(
        f"/api/rooms/{room.id}/chat/settings", json={"slow_mode_s": 5}, headers=room.host
    )
    fresh: RawClient = await raw_client()
    await fresh.connect()
    data = (await fresh.subscribe(f"chat:{room.id}"))["subscribe"]["data"]
    assert data["pinned"]["text"] == "Free shipping today"
    assert data["settings"] == {"slow_mode_s": 5, "closed": False}
    assert (
        await client.delete(f"/api/rooms/{room.id}/chat/pin", headers=room.host)
    ).status_code == 200
    while (await message(bob))["type"] != "chat.unpinned":
        pass


async def test_moderation_survives_redis_losing_it(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    """PostgreSQL keeps every decision: after Redis loses the room's moderation state, the
    first post or subscribe loads it again before anything is decided on it."""
    ann = await chatter(raw_client, resources, room, "ann")
    await chatter(raw_client, resources, room, "mia")
    base, host = f"/api/rooms/{room.id}", room.host
    assert (await client.post(f"{base}/bans", json={"user_id": "bea"}, headers=host)).is_success
    assert (
        await client.post(f"{base}/mutes", json={"user_id": "ann", "seconds": 60}, headers=host)
    ).is_success
    appointed = await client.post(f"{base}/moderators", json={"user_id": "mia"}, headers=host)
    assert appointed.is_success
    assert (
        await client.put(
            f"{base}/chat/settings",
            json={"slow_mode_s": 30, "blocked_words": ["scam"]},
            headers=host,
        )
    ).is_success
    assert (await client.post(f"{base}/chat/pin", json={"text": "包邮"}, headers=host)).is_success

    await resources.redis.flushall()

    assert (await post(ann, room, {"text": "hello"}))["error"]["code"] == 103  # still muted
    bea: RawClient = await raw_client()
    await bea.connect(token(resources, "bea"))
    assert (await bea.subscribe(f"chat:{room.id}"))["error"]["code"] == 103  # still banned
    # the first message after the loss starts a new stream epoch: the hub resynchronises its
    # subscribers (they reconnect and recover), so the checks below use new connections
    mia = await chatter(raw_client, resources, room, "mia")
    assert "publish" in await post(mia, room, {"text": "moderator here"})
    await asyncio.sleep(0.5)
    cat = await chatter(raw_client, resources, room, "cat")
    assert (await post(cat, room, {"text": "a scam?"}))["error"]["code"] == 107
    assert "publish" in await post(cat, room, {"text": "first"})
    assert (await post(cat, room, {"text": "second"}))["error"]["code"] == 106  # slow mode
    mia = await chatter(raw_client, resources, room, "mia")
    assert "publish" in await post(mia, room, {"text": "one"})
    assert "publish" in await post(mia, room, {"text": "two"})  # a moderator is not slowed
    fresh: RawClient = await raw_client()
    await fresh.connect()
    data = (await fresh.subscribe(f"chat:{room.id}"))["subscribe"]["data"]
    assert data["pinned"]["text"] == "包邮" and data["pinned"]["by"] == "alice"
    assert data["settings"] == {"slow_mode_s": 30, "closed": False}


async def test_a_load_that_read_before_a_decision_does_not_undo_it(
    resources: Resources, room: Room
) -> None:
    """A load reads PostgreSQL, then writes Redis; an unban committed in between changed the
    hash's version, so the stale read (still banned) is refused and read again."""
    load = register(resources.redis, "live", "chat_moderation_load")
    key = moderation_key(room.id)
    await resources.redis.delete(key)
    version_read = await resources.redis.hget(key, "v")  # type: ignore[misc]
    assert version_read is None
    await write_moderation(resources.redis, int(room.id), remove=("ban:bea",))  # the unban
    assert await load(keys=[key], args=[b"", "ban:bea", "1"]) == -1
    assert await resources.redis.hget(key, "ban:bea") is None  # type: ignore[misc]
    assert not await resources.redis.hexists(key, "built")  # type: ignore[misc]
    current = await resources.redis.hget(key, "v")  # type: ignore[misc]
    assert await load(keys=[key], args=[current]) == 1
    assert await load(keys=[key], args=[current]) == 0


async def test_the_audit_log_says_who_did_what_to_whom(
    client: httpx.AsyncClient,
    resources: Resources,
    room: Room,
) -> None:
    mo = {"Authorization": f"Bearer {token(resources, 'mo')}"}
    viewer = {"Authorization": f"Bearer {token(resources, 'zed')}"}
    assert (await client.get(f"/api/rooms/{room.id}/moderation", headers=mo)).status_code == 403
    await client.post(f"/api/rooms/{room.id}/moderators", json={"user_id": "mo"}, headers=room.host)
    # a moderator may not appoint, may mute viewers, may not mute the host
    assert (
        await client.post(f"/api/rooms/{room.id}/moderators", json={"user_id": "x"}, headers=mo)
    ).status_code == 403
    assert (
        await client.post(
            f"/api/rooms/{room.id}/mutes", json={"user_id": "zed", "seconds": 60}, headers=mo
        )
    ).status_code == 201
    assert (
        await client.post(
            f"/api/rooms/{room.id}/mutes", json={"user_id": "alice", "seconds": 60}, headers=mo
        )
    ).status_code == 403
    assert (
        await client.post(f"/api/rooms/{room.id}/bans", json={"user_id": "zed"}, headers=viewer)
    ).status_code == 403
    await client.post(f"/api/rooms/{room.id}/bans", json={"user_id": "spam"}, headers=mo)
    await client.delete(f"/api/rooms/{room.id}/bans/spam", headers=mo)
    seen = (await client.get(f"/api/rooms/{room.id}/moderation", headers=mo)).json()
    assert seen["moderators"] == ["mo"]
    assert [m["user_id"] for m in seen["mutes"]] == ["zed"]
    assert seen["bans"] == []
    log = [(e["actor_id"], e["action"], e["target_user_id"]) for e in reversed(seen["log"])]
    assert log == [
        ("alice", "appoint", "mo"),
        ("mo", "mute", "zed"),
        ("mo", "ban", "spam"),
        ("mo", "unban", "spam"),
    ]
    async with resources.pool.acquire() as conn:
        with pytest.raises(Exception, match="append-only"):
            await conn.execute("DELETE FROM chat_moderation_log")


async def test_likes_add_up_and_announce_the_total(
    client: httpx.AsyncClient,
    raw_client: Opener,
    resources: Resources,
    room: Room,
) -> None:
    viewer: RawClient = await raw_client()
    await viewer.connect()
    await viewer.subscribe(f"room:{room.id}")
    ann = {"Authorization": f"Bearer {token(resources, 'ann')}"}
    assert (
        await client.post(f"/api/rooms/{room.id}/likes", json={"count": 5}, headers=ann)
    ).json()["total"] == 5
    assert (
        await client.post(f"/api/rooms/{room.id}/likes", json={"count": 7}, headers=ann)
    ).json()["total"] == 12
    for bad in (0, 101, -1):
        assert (
            await client.post(f"/api/rooms/{room.id}/likes", json={"count": bad}, headers=ann)
        ).status_code == 422
    assert (await client.post(f"/api/rooms/{room.id}/likes", json={"count": 1})).status_code == 401
    assert (
        await client.post("/api/rooms/99999/likes", json={"count": 1}, headers=ann)
    ).status_code == 404
    totals = []
    async with asyncio.timeout(5):
        while not totals or totals[-1] != 12:
            data = (await viewer.publication())["pub"]["data"]
            if data["type"] == "likes.changed":
                totals.append(data["total"])
    # latest-value: the two arrive in one tick, so at most both, the last one 12
    assert totals[-1] == 12 and len(totals) <= 2


async def test_a_flooding_connection_is_cut_off_and_others_carry_on(
    raw_client: Opener, resources: Resources, room: Room, hub: RunningHub
) -> None:
    flooder = await chatter(raw_client, resources, room, "flood")
    calm = await chatter(raw_client, resources, room, "calm")
    frame = "\n".join(
        json.dumps({"id": n, "publish": {"channel": f"chat:{room.id}", "data": {"text": f"{n}"}}})
        for n in range(10, 200)
    )
    await flooder.ws.send(frame)
    codes = []
    with pytest.raises(Exception):  # noqa: B017 - the connection closes
        while True:
            reply = await flooder.receive(2)
            if "error" in reply:
                codes.append(reply["error"]["code"])
    assert flooder.ws.close_code == 3013
    assert 106 in codes  # the per-user rate refused most before the connection was cut
    assert "publish" in await post(calm, room, {"text": "still fine"})
    while (await message(calm))["text"] != "still fine":
        pass


async def test_the_rooms_funnel_counts_who_chatted(
    client: httpx.AsyncClient, raw_client: Opener, resources: Resources, room: Room
) -> None:
    ann = await chatter(raw_client, resources, room, "ann")
    bob = await chatter(raw_client, resources, room, "bob")
    await chatter(raw_client, resources, room, "cat")  # reads only
    assert "publish" in await post(ann, room, {"text": "one"})
    assert "publish" in await post(ann, room, {"text": "two"})
    assert "publish" in await post(bob, room, {"text": "three"})
    admin = {"Authorization": f"Bearer {token(resources, 'op', roles=('admin',))}"}
    funnel = await client.get(f"/api/admin/rooms/{room.id}/funnel", headers=admin)
    assert funnel.status_code == 200, funnel.text
    assert funnel.json()["chat_posters"] == 2
