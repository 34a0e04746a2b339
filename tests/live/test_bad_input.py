"""Bad input and bad clients: each gets the protocol's error or close code; the hub and the
other viewers carry on."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from core.events import Event, room_channel
from core.resources import Resources
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
    for method in ("rpc", "publish", "history", "presence", "frobnicate"):
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
