"""Bad input and bad clients: each gets the protocol's error or close code; the hub and the
other viewers carry on."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import socket
import struct
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from core.events import Event, room_channel
from core.resources import Resources
from live.server import CLOSE_TIMEOUT_S
from tests.live.conftest import RawClient, Room, RunningHub, hub_resources, open_raw, start_hub

Opener = Callable[..., Any]


class Blob(Event, tag="drop.scheduled"):
    body: str


async def _closed_with(viewer: RawClient, timeout: float = 5.0) -> int | None:
    with pytest.raises((ConnectionClosed, asyncio.TimeoutError)):
        while True:
            await viewer.receive(timeout=timeout)
    return viewer.ws.close_code


async def _watching(raw_client: Opener, room: Room) -> RawClient:
    bystander: RawClient = await raw_client()
    await bystander.connect()
    await bystander.subscribe(f"room:{room.id}")
    return bystander


async def _still_delivers(bystander: RawClient, client: httpx.AsyncClient, room: Room) -> None:
    response = await client.post(
        f"/api/rooms/{room.id}/pin", json={"product_id": room.products[2]}, headers=room.host
    )
    assert response.status_code == 200
    pub = await bystander.publication()
    assert pub["pub"]["data"]["type"] == "card.pinned"


@pytest.mark.parametrize("frame", ["not json", '{"id": 1, "connect": 5}', "[1, 2]", '{"id": "x"}'])
async def test_malformed_frames_close_with_bad_request(
    raw_client: Opener, room: Room, client: httpx.AsyncClient, frame: str
) -> None:
    bystander = await _watching(raw_client, room)
    viewer: RawClient = await raw_client()
    await viewer.ws.send(frame)
    assert await _closed_with(viewer) == 3501
    await _still_delivers(bystander, client, room)


async def test_commands_before_connect_close_with_bad_request(raw_client: Opener) -> None:
    viewer: RawClient = await raw_client()
    await viewer.send(subscribe={"channel": "room:1"})
    assert await _closed_with(viewer) == 3501


async def test_unknown_commands_get_104_and_the_connection_carries_on(
    raw_client: Opener, room: Room
) -> None:
    viewer: RawClient = await raw_client()
    await viewer.connect()
    for method in ("rpc", "history", "presence", "frobnicate"):
        reply = await viewer.reply(await viewer.send(**{method: {"channel": "room:1"}}))
        assert reply["error"]["code"] == 104, method
    assert "subscribe" in await viewer.subscribe(f"room:{room.id}")


async def test_several_commands_in_one_frame_get_replies_in_order(
    raw_client: Opener, room: Room
) -> None:
    viewer: RawClient = await raw_client()
    frame = "\n".join(
        json.dumps(c)
        for c in (
            {"id": 1, "connect": {"name": "raw"}},
            {"id": 2, "subscribe": {"channel": f"room:{room.id}"}},
            {"id": 3, "rpc": {}},
        )
    )
    await viewer.ws.send(frame)
    replies = [await viewer.receive() for _ in range(3)]
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert "connect" in replies[0] and "subscribe" in replies[1] and "error" in replies[2]


async def test_oversized_frame_closes_with_1009(
    raw_client: Opener, resources: Resources, room: Room, client: httpx.AsyncClient
) -> None:
    bystander = await _watching(raw_client, room)
    viewer: RawClient = await raw_client()
    await viewer.connect()
    too_big = json.dumps({"id": 2, "rpc": {"data": "x" * resources.settings.hub_max_frame_bytes}})
    await viewer.ws.send(too_big)
    assert await _closed_with(viewer) == 1009
    await _still_delivers(bystander, client, room)


async def test_a_flood_gets_111_then_a_disconnect(
    raw_client: Opener, room: Room, client: httpx.AsyncClient
) -> None:
    bystander = await _watching(raw_client, room)
    viewer: RawClient = await raw_client()
    await viewer.connect()
    frame = "\n".join(json.dumps({"id": 10 + n, "rpc": {}}) for n in range(60))
    await viewer.ws.send(frame)
    codes = []
    with pytest.raises(ConnectionClosed):
        while True:
            message = await viewer.receive()
            codes.append(message["error"]["code"])
            await viewer.ws.send(frame)
    assert 104 in codes and 111 in codes
    assert viewer.ws.close_code == 3013
    await _still_delivers(bystander, client, room)


async def test_no_pong_disconnects_with_3012(resources: Resources, room: Room) -> None:
    running, stop = await start_hub(hub_resources(resources, hub_ping_s=1))
    try:
        silent = await open_raw(running.url)
        polite = await open_raw(running.url)
        for viewer in (silent, polite):
            await viewer.connect()
        pings = 0
        while pings < 3:  # the polite one answers every ping and stays
            message = await polite.receive(timeout=5)
            if message == {}:
                pings += 1
                await polite.ws.send("{}")
        assert await _closed_with(silent) == 3012
        assert polite.ws.close_code is None
        await polite.ws.close()
    finally:
        await stop()


async def test_a_viewer_that_stops_reading_is_disconnected_as_slow(
    resources: Resources, room: Room
) -> None:
    running, stop = await start_hub(hub_resources(resources, hub_outbox_bytes=65_536))
    try:
        stuck = socket.create_connection(("127.0.0.1", running.port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        key = base64.b64encode(os.urandom(16)).decode()
        stuck.sendall(
            (
                "GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n\r\n"
            ).encode()
        )
        await asyncio.sleep(0.2)
        stuck.recv(4096)  # the handshake response; nothing is read after this

        def masked(text: str) -> bytes:
            payload = text.encode()
            mask = os.urandom(4)
            body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            return bytes((0x81, 0x80 | len(payload))) + mask + body

        stuck.sendall(masked('{"id":1,"connect":{}}'))
        stuck.sendall(masked(json.dumps({"id": 2, "subscribe": {"channel": f"room:{room.id}"}})))
        healthy = await open_raw(running.url)
        await healthy.connect()
        await healthy.subscribe(f"room:{room.id}")
        await asyncio.sleep(0.3)
        hub = running.hub
        feed = hub.feeds[f"room:{room.id}"]
        assert len(feed) == 2
        big = "x" * 20_000
        for _ in range(300):
            await resources.publisher.publish(room_channel(room.id), Blob(body=big))
            if len(feed) == 1:
                break
            await asyncio.sleep(0.005)
        assert len(feed) == 1, "the stuck viewer was dropped from the room"
        assert healthy.ws.close_code is None
        # the healthy viewer got everything
        received = 0
        while True:
            try:
                pub = await healthy.publication(timeout=2)
            except TimeoutError:
                break
            if pub["pub"]["data"]["type"] == "drop.scheduled":
                received += 1
        assert received >= 1
        stuck.close()
        await healthy.ws.close()
    finally:
        await stop()


async def test_hub_origin_allow_list(resources: Resources) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    running, stop = await start_hub(hub_resources(resources, hub_origins=("https://shop.test",)))
    try:
        with pytest.raises(InvalidStatus):
            await connect(running.url, origin="https://evil.test")  # type: ignore[arg-type]
        ok = await connect(running.url, origin="https://shop.test")  # type: ignore[arg-type]
        await ok.close()
        app = await connect(running.url)  # native apps send no Origin
        await app.close()
    finally:
        await stop()


async def test_hub_survives_a_burst_of_garbage_connections(
    hub: RunningHub, raw_client: Opener, room: Room, client: httpx.AsyncClient
) -> None:
    bystander = await _watching(raw_client, room)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", hub.port)) as sock:
            sock.sendall(b"GARBAGE\r\n\r\n")
    await _still_delivers(bystander, client, room)


async def test_clients_that_leave_right_after_subscribing_leave_no_errors(
    hub: RunningHub, resources: Resources, room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    """The replies of a client that closed meanwhile are dropped quietly: no traceback in the
    log, no 1011 close, and the hub carries on."""
    frame = "\n".join(
        (
            json.dumps({"id": 1, "connect": {}}),
            json.dumps({"id": 2, "subscribe": {"channel": f"room:{room.id}"}}),
        )
    )

    async def hit_and_run() -> int | None:
        viewer = await open_raw(hub.url)
        await viewer.ws.send(frame)
        await viewer.ws.close()
        return viewer.ws.close_code

    async def watch_then_leave(viewer: RawClient) -> None:
        await asyncio.sleep(random.random() * 0.2)
        await viewer.ws.close()

    async def publish_meanwhile(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await resources.publisher.publish(room_channel(room.id), Blob(body="tick"))
            await asyncio.sleep(0.001)

    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            codes = await asyncio.gather(*(hit_and_run() for _ in range(50)))
            assert 1011 not in codes
        # subscribed viewers leaving while publications are being fanned out to them
        for _ in range(3):
            viewers = [await open_raw(hub.url) for _ in range(50)]
            for viewer in viewers:
                await viewer.connect()
                await viewer.subscribe(f"room:{room.id}")
            stop = asyncio.Event()
            publishing = asyncio.create_task(publish_meanwhile(stop))
            await asyncio.gather(*(watch_then_leave(viewer) for viewer in viewers))
            stop.set()
            await publishing
        deadline = asyncio.get_running_loop().time() + 5
        while hub.hub.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    assert not hub.hub.sessions and f"room:{room.id}" not in hub.hub.feeds
    troubles = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert troubles == [], [r.getMessage() for r in troubles]


@pytest.mark.parametrize(
    "name",
    [
        "0{id}",
        "00{id}",
        "+{id}",
        "-{id}",
        " {id}",
        "{id} ",
        "{id}.0",
        "1e3",
        "0",
        "0x1F",
        "1" * 19,
        "\u0661\u0660\u0661",
    ],
)
async def test_room_channels_must_name_the_room_canonically(
    hub: RunningHub, raw_client: Opener, room: Room, name: str
) -> None:
    """One room, one channel name: an alias would get the snapshot but none of the live events,
    and would split the viewer count."""
    viewer: RawClient = await raw_client()
    await viewer.connect()
    alias = f"room:{name.format(id=room.id)}"
    assert (await viewer.subscribe(alias))["error"]["code"] == 102, alias
    assert alias not in hub.hub.feeds
    assert "subscribe" in await viewer.subscribe(f"room:{room.id}")


@pytest.mark.parametrize("offset", ["-1", "-7", str(2**64), "1.5", '"abc"', "null"])
async def test_a_malformed_recovery_position_is_a_bad_request(
    raw_client: Opener, room: Room, offset: str
) -> None:
    """Offsets are unsigned 64-bit integers in Centrifugo's protocol: anything else is a
    command that does not decode, closed 3501 (no SDK retries it), never a temporary error."""
    viewer: RawClient = await raw_client()
    await viewer.connect()
    epoch = (await viewer.subscribe(f"room:{room.id}"))["subscribe"]["epoch"]
    again: RawClient = await raw_client()
    await again.connect()
    position = f'"recover":true,"epoch":"{epoch}","offset":{offset}'
    await again.ws.send(f'{{"id":2,"subscribe":{{"channel":"room:{room.id}",{position}}}}}')
    assert await _closed_with(again) == 3501


async def test_a_position_beyond_the_stream_is_not_recovered(
    raw_client: Opener, room: Room
) -> None:
    viewer: RawClient = await raw_client()
    await viewer.connect()
    epoch = (await viewer.subscribe(f"room:{room.id}"))["subscribe"]["epoch"]
    for offset in (2**63 + 5, 2**64 - 1):
        again: RawClient = await raw_client()
        await again.connect()
        reply = await again.subscribe(f"room:{room.id}", recover=True, epoch=epoch, offset=offset)
        result = reply["subscribe"]
        assert result["was_recovering"] is True and result.get("recovered", False) is False
        assert result["data"]["room"]["id"] == room.id


def _close_code(stream: bytes) -> int | None:
    """The code of the close frame in a server→client byte stream (frames are unmasked); None
    until a whole close frame has arrived (a read may end anywhere in a frame)."""
    pos, end = 0, len(stream)
    while pos + 2 <= end:
        opcode, size = stream[pos] & 0x0F, stream[pos + 1] & 0x7F
        pos += 2
        if size >= 126:
            width = 2 if size == 126 else 8
            if pos + width > end:
                return None
            size = int.from_bytes(stream[pos : pos + width], "big")
            pos += width
        if pos + size > end:
            return None
        if opcode == 0x8:
            return struct.unpack_from("!H", stream, pos)[0] if size >= 2 else 1005
        pos += size
    return None


async def test_a_viewer_cut_off_as_slow_gets_close_code_3008(
    resources: Resources, room: Room
) -> None:
    running, stop = await start_hub(resources)  # the default outbox: 1 MiB
    loop = asyncio.get_running_loop()
    stuck = socket.socket()
    try:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", running.port))
        stuck.setblocking(False)
        key = base64.b64encode(os.urandom(16)).decode()
        await loop.sock_sendall(
            stuck,
            (
                "GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n\r\n"
            ).encode(),
        )
        handshake = b""
        while b"\r\n\r\n" not in handshake:
            handshake += await asyncio.wait_for(loop.sock_recv(stuck, 1), 5)
        assert b" 101 " in handshake

        def masked(text: str) -> bytes:
            payload = text.encode()
            mask = os.urandom(4)
            body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            return bytes((0x81, 0x80 | len(payload))) + mask + body

        await loop.sock_sendall(stuck, masked('{"id":1,"connect":{}}'))
        await loop.sock_sendall(
            stuck, masked(json.dumps({"id": 2, "subscribe": {"channel": f"room:{room.id}"}}))
        )
        feed = None
        for _ in range(100):
            feed = running.hub.feeds.get(f"room:{room.id}")
            if feed is not None and feed.live:
                break
            await asyncio.sleep(0.02)
        assert feed is not None and len(feed) == 1
        big = "x" * 20_000
        for _ in range(1000):  # nothing is read meanwhile
            await resources.publisher.publish(room_channel(room.id), Blob(body=big))
            if len(feed) == 0:
                break
            await asyncio.sleep(0.005)
        assert len(feed) == 0, "the stuck viewer was cut off"

        # it reads again, later than a closing handshake may take: everything queued before
        # the cut-off, then the close frame
        await asyncio.sleep(CLOSE_TIMEOUT_S + 1)
        received = b""
        async with asyncio.timeout(10):
            while _close_code(received) is None:
                chunk = await loop.sock_recv(stuck, 4096)
                if not chunk:
                    break
                received += chunk
                await asyncio.sleep(0.001)  # a slow link, not a stalled one
        assert _close_code(received) == 3008, f"{len(received)} bytes, no close frame"
    finally:
        stuck.close()
        await stop()
