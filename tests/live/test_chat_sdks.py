"""Room chat through the stock SDKs: PyPI `centrifuge-python` and npm `centrifuge` post with
`sub.publish({text})` and read, unchanged; refusals arrive as the SDKs' errors with their codes;
a ban ends the subscription; a poster on one hub node reaches a reader on another; a busy room
delivers a sample, and every sender still sees their own message."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from centrifuge import ReplyError

from core.resources import Resources
from tests.live.conftest import Room, RunningHub, hub_resources, start_hub
from tests.live.sdk import JS_DIR, NodeViewer, PythonViewer, node_available
from tests.live.test_chat import token

Opener = Callable[..., Any]


async def python_chatter(url: str, res: Resources, room: Room, sub: str = "") -> PythonViewer:
    viewer = PythonViewer(url, f"chat:{room.id}", token(res, sub) if sub else "")
    await viewer.start()
    await viewer.next("subscribed")
    return viewer


async def next_message(viewer: PythonViewer | NodeViewer, text: str) -> dict[str, Any]:
    """The next chat.message with `text` (other events passed by)."""
    while True:
        event = await viewer.next("publication")
        data = event["data"]
        if data.get("type") == "chat.message" and data["text"] == text:
            return data  # type: ignore[no-any-return]


async def publish_code(viewer: PythonViewer, data: Any) -> int | None:
    try:
        await viewer.sub.publish(data)
    except ReplyError as exc:
        return exc.code
    return None


async def test_python_sdk_users_post_read_and_get_refusal_codes(
    hub: RunningHub, client: httpx.AsyncClient, resources: Resources, room: Room
) -> None:
    ann = await python_chatter(hub.url, resources, room, "ann")
    bob = await python_chatter(hub.url, resources, room, "bob")
    guest = await python_chatter(hub.url, resources, room)
    try:
        assert await publish_code(ann, {"text": "hello from ann"}) is None
        assert (await next_message(bob, "hello from ann"))["user"]["id"] == "ann"
        assert await publish_code(bob, {"text": "hi ann"}) is None
        assert (await next_message(ann, "hi ann"))["user"]["role"] == "viewer"
        assert await publish_code(guest, {"text": "me too"}) == 101
        assert await publish_code(ann, {"text": "x" * 10_000}) == 107

        await client.put(
            f"/api/rooms/{room.id}/chat/settings",
            json={"blocked_words": ["spam"]},
            headers=room.host,
        )
        assert await publish_code(ann, {"text": "buy SPAM now"}) == 107

        await client.put(
            f"/api/rooms/{room.id}/chat/settings", json={"slow_mode_s": 60}, headers=room.host
        )
        # bob's last message was under a minute ago
        assert await publish_code(bob, {"text": "again"}) == 106

        await client.post(
            f"/api/rooms/{room.id}/mutes", json={"user_id": "ann", "seconds": 1}, headers=room.host
        )
        assert await publish_code(ann, {"text": "am I muted"}) == 103
        await client.put(
            f"/api/rooms/{room.id}/chat/settings", json={"slow_mode_s": 0}, headers=room.host
        )
        await asyncio.sleep(1.1)
        assert await publish_code(ann, {"text": "unmuted"}) is None
        deleted = await next_message(bob, "unmuted")

        gone = await client.delete(f"/api/rooms/{room.id}/chat/{deleted['id']}", headers=room.host)
        assert gone.status_code == 200
        while (event := await guest.next("publication"))["data"]["type"] != "chat.deleted":
            pass
        assert event["data"]["id"] == deleted["id"]
    finally:
        for viewer in (ann, bob, guest):
            await viewer.disconnect()


async def test_python_sdk_ban_ends_the_subscription_and_resubscribe_gets_103(
    hub: RunningHub, client: httpx.AsyncClient, resources: Resources, room: Room
) -> None:
    ann = await python_chatter(hub.url, resources, room, "ann")
    try:
        banned = await client.post(
            f"/api/rooms/{room.id}/bans", json={"user_id": "ann"}, headers=room.host
        )
        assert banned.status_code == 201
        # the SDK subscribes again (code >= 2500), is refused 103, and stays unsubscribed
        assert (await ann.next("unsubscribed"))["code"] == 103
    finally:
        await ann.disconnect()


async def test_the_snapshot_reaches_the_sdk_without_refused_messages(
    hub: RunningHub, client: httpx.AsyncClient, resources: Resources, room: Room
) -> None:
    ann = await python_chatter(hub.url, resources, room, "ann")
    await client.put(
        f"/api/rooms/{room.id}/chat/settings", json={"blocked_words": ["spam"]}, headers=room.host
    )
    try:
        for text in ("one", "spam two", "three"):
            await publish_code(ann, {"text": text})
        late = PythonViewer(hub.url, f"chat:{room.id}")
        await late.start()
        data = (await late.next("subscribed"))["data"]
        assert [m["text"] for m in data["messages"]] == ["one", "three"]
        await late.disconnect()
    finally:
        await ann.disconnect()


needs_node = pytest.mark.skipif(
    not node_available(), reason="node or tests/js/node_modules missing (make test installs it)"
)


class NodeChatter(NodeViewer):
    @classmethod
    async def open(cls, url: str, channel: str, token: str = "") -> NodeChatter:
        node = shutil.which("node")
        assert node
        process = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "sdk_chat.mjs"),
            url,
            channel,
            token,
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def publish(self, data: Any) -> int | None:
        await self.tell("publish " + json.dumps(data))
        while True:
            event = await self.read()
            if event["event"] == "publish_ok":
                return None
            if event["event"] == "publish_error":
                return int(event["code"])


@needs_node
async def test_js_sdk_posts_reads_and_is_refused(
    hub: RunningHub, client: httpx.AsyncClient, resources: Resources, room: Room
) -> None:
    channel = f"chat:{room.id}"
    ann = await NodeChatter.open(hub.url, channel, token(resources, "ann"))
    guest = await NodeChatter.open(hub.url, channel)
    try:
        await ann.next("subscribed")
        await guest.next("subscribed")
        assert await ann.publish({"text": "<script>alert(1)</script>"}) is None
        seen = await next_message(guest, "<script>alert(1)</script>")
        assert seen["user"] == {"id": "ann", "name": "ann", "role": "viewer"}
        assert await guest.publish({"text": "guest here"}) == 101
        assert await ann.publish({"text": "", "user": {"role": "host"}}) == 107
        await client.post(f"/api/rooms/{room.id}/bans", json={"user_id": "ann"}, headers=room.host)
        assert (await ann.next("unsubscribed"))["code"] == 103
    finally:
        await ann.stop()
        await guest.stop()


async def test_a_poster_on_node_a_reaches_a_reader_on_node_b(
    resources: Resources, client: httpx.AsyncClient, room: Room
) -> None:
    node_a, stop_a = await start_hub(resources)
    node_b, stop_b = await start_hub(resources)
    try:
        poster = await python_chatter(node_a.url, resources, room, "ann")
        reader = await python_chatter(node_b.url, resources, room, "bob")
        assert await publish_code(poster, {"text": "across nodes"}) is None
        seen = await next_message(reader, "across nodes")
        # a ban decided once ends the subscription on the other node too
        await client.post(f"/api/rooms/{room.id}/bans", json={"user_id": "bob"}, headers=room.host)
        assert (await reader.next("unsubscribed"))["code"] == 103
        # a mute holds on the node the muted user is on
        await client.post(
            f"/api/rooms/{room.id}/mutes", json={"user_id": "ann", "seconds": 60}, headers=room.host
        )
        assert await publish_code(poster, {"text": "muted?"}) == 103
        assert seen["user"]["id"] == "ann"
        await poster.disconnect()
        await reader.disconnect()
    finally:
        await stop_a()
        await stop_b()


async def test_a_busy_room_shows_a_sample_and_every_sender_their_own(
    resources: Resources, client: httpx.AsyncClient, room: Room
) -> None:
    res = hub_resources(resources, chat_fanout_per_s=5)
    running, stop = await start_hub(res)
    try:
        reader = await python_chatter(running.url, resources, room)
        host = await python_chatter(running.url, resources, room, "alice")
        posters = [await python_chatter(running.url, resources, room, f"p{n}") for n in range(20)]
        for round_ in range(2):
            await asyncio.gather(
                *(publish_code(p, {"text": f"p{n} r{round_}"}) for n, p in enumerate(posters))
            )
            await publish_code(host, {"text": f"host r{round_}"})
        # each poster sees its own messages, whether or not the sample took them
        for n, poster in enumerate(posters):
            for round_ in range(2):
                await next_message(poster, f"p{n} r{round_}")
        texts: list[str] = []
        stats: list[dict[str, Any]] = []
        await publish_code(host, {"text": "last"})
        while "last" not in texts:
            data = (await reader.next("publication"))["data"]
            if data["type"] == "chat.message":
                texts.append(data["text"])
            elif data["type"] == "chat.stats":
                stats.append(data)
        assert {"host r0", "host r1", "last"} <= set(texts)
        viewers_shown = [t for t in texts if t.startswith("p")]
        assert 1 <= len(viewers_shown) <= 10, viewers_shown  # 5 a second, a burst of 5
        await asyncio.sleep(1.1)
        await publish_code(host, {"text": "after a second"})
        # the stats of the busy second ride the next frame, after its messages
        while not stats:
            data = (await reader.next("publication"))["data"]
            if data["type"] == "chat.stats":
                stats.append(data)
        assert stats[-1]["received"] >= 40 and stats[-1]["shown"] < 40
        for viewer in (reader, host, *posters):
            await viewer.disconnect()
    finally:
        await stop()
