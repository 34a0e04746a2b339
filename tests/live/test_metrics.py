"""The hub's Prometheus metrics, scraped over plain HTTP from the hub's own port: each counter
moves by exactly what the viewers saw (frames and bytes counted on the client side)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from core.auth import mint_token
from core.events import Event, dashboard_channel, room_channel
from core.resources import Resources
from core.settings import Settings
from tests.live.conftest import RawClient, Room, RunningHub, hub_resources, start_hub

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Note(Event, tag="stats.changed"):
    n: int


class Blob(Event, tag="drop.scheduled"):
    body: str


@pytest.fixture
async def quiet_hub(resources: Resources) -> AsyncIterator[RunningHub]:
    """A hub that sends no pings during a test (every frame is one the test asked for), with
    a small outbox so a slow viewer is cut off quickly."""
    running, stop = await start_hub(
        hub_resources(resources, hub_ping_s=3600, hub_outbox_bytes=64 * 1024)
    )
    try:
        yield running
    finally:
        await stop()


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(response.text)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


class Tally:
    """Frames and their bytes on the wire, as the viewers received them."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0

    def add(self, payload: bytes) -> None:
        size = len(payload)
        header = 2 if size < 126 else 4 if size < 65_536 else 10  # RFC 6455, unmasked
        self.frames += 1
        self.bytes += header + size


class CountingClient:
    """Speaks the protocol by hand and counts every frame it receives."""

    def __init__(self, ws: ClientConnection, tally: Tally) -> None:
        self.ws, self.tally, self.next_id = ws, tally, 0
        self.inbox: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        while not self.inbox:
            payload = await asyncio.wait_for(self.ws.recv(decode=False), 5)
            self.tally.add(payload)
            self.inbox.extend(json.loads(line) for line in payload.split(b"\n") if line)
        return self.inbox.pop(0)

    async def command(self, **command: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, **command}))
        message = await self.receive()
        assert message.get("id") == self.next_id, message
        return message


async def _until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_the_hub_answers_metrics_over_plain_http(
    hub: RunningHub, client: httpx.AsyncClient
) -> None:
    samples = await scrape(hub.port)
    assert ("livesell_hub_connections", frozenset()) in samples
    assert ("livesell_hub_flush_seconds_count", frozenset()) in samples
    # one registry per process: the API's /metrics of the same process shows the hub too, and
    # the hub's shows the API's series
    api = parse((await client.get("/metrics")).text)
    assert ("livesell_hub_connections_opened_total", frozenset()) in api
    hub_side = await scrape(hub.port)
    scrapes = {"method": "GET", "route": "/metrics", "status": "200"}
    assert value(hub_side, "livesell_http_requests_total", **scrapes) >= 1


async def test_counters_follow_connections_frames_and_subscriptions(
    quiet_hub: RunningHub, resources: Resources, settings: Settings, room: Room
) -> None:
    port = quiet_hub.port
    tally = Tally()
    before = await scrape(port)

    viewers = []
    for _ in range(2):
        viewer = CountingClient(await connect(quiet_hub.url, compression=None), tally)
        token = mint_token(settings.secret, "alice", ["distributor"], ttl_s=600)
        assert "connect" in await viewer.command(connect={"token": token})
        assert "subscribe" in await viewer.command(subscribe={"channel": "dashboard#alice"})
        viewers.append(viewer)
    for n in range(3):  # one at a time: each is its own flush tick
        await resources.publisher.publish(dashboard_channel("alice"), Note(n=n))
        for viewer in viewers:
            push = (await viewer.receive())["push"]
            assert push["pub"]["data"] == {"type": "stats.changed", "n": n}
    after = await scrape(port)

    assert moved(before, after, "livesell_hub_connections_opened_total") == 2
    assert moved(before, after, "livesell_hub_connections") == 2
    assert moved(before, after, "livesell_hub_subscriptions", kind="dashboard") == 2
    assert moved(before, after, "livesell_hub_channels", kind="dashboard") == 1
    # 2 × (connect reply, subscribe reply) + 3 pushes × 2 viewers
    assert tally.frames == 10
    assert moved(before, after, "livesell_hub_frames_sent_total") == tally.frames
    assert moved(before, after, "livesell_hub_sent_bytes_total") == tally.bytes
    assert moved(before, after, "livesell_hub_flush_seconds_count") == 3
    assert moved(before, after, "livesell_hub_flush_seconds_bucket", le="+Inf") == 3
    assert moved(before, after, "livesell_hub_flush_seconds_sum") > 0

    # a room viewer counts under its own kind
    guest = CountingClient(await connect(quiet_hub.url, compression=None), tally)
    await guest.command(connect={})
    await guest.command(subscribe={"channel": f"room:{room.id}"})
    with_room = await scrape(port)
    assert moved(after, with_room, "livesell_hub_subscriptions", kind="room") == 1
    assert moved(after, with_room, "livesell_hub_channels", kind="room") == 1

    # a viewer that leaves: closed under the code it sent, no longer subscribed
    await viewers[0].ws.close()

    async def left() -> bool:
        now = await scrape(port)
        return moved(with_room, now, "livesell_hub_connections_closed_total", code="1000") == 1

    await _until(left)
    gone = await scrape(port)
    assert moved(with_room, gone, "livesell_hub_connections") == -1
    assert moved(with_room, gone, "livesell_hub_subscriptions", kind="dashboard") == -1
    await viewers[1].ws.close()
    await guest.ws.close()


async def _stuck_viewer(port: int, channel: str) -> socket.socket:
    """A viewer that subscribes, then never reads (its receive buffer is tiny)."""
    loop = asyncio.get_running_loop()
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", port))
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
    for command in ({"id": 1, "connect": {}}, {"id": 2, "subscribe": {"channel": channel}}):
        payload = json.dumps(command).encode()
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await loop.sock_sendall(stuck, bytes((0x81, 0x80 | len(payload))) + mask + body)
    return stuck


async def test_slow_and_expired_disconnects_are_counted_with_their_close_codes(
    quiet_hub: RunningHub, resources: Resources, settings: Settings, room: Room
) -> None:
    port = quiet_hub.port
    quiet_hub.hub.expiries.close_delay_s = 1.0  # 10 s after exp in production
    before = await scrape(port)

    # a session whose token runs out in 2 s and is never refreshed
    expiring = RawClient(await connect(quiet_hub.url, compression=None))
    await expiring.connect(mint_token(settings.secret, "bob", ["viewer"], ttl_s=2))

    # a viewer that stops reading while the room streams
    channel = f"room:{room.id}"
    stuck = await _stuck_viewer(port, channel)

    async def subscribed() -> bool:
        feed = quiet_hub.hub.feeds.get(channel)
        return feed is not None and len(feed.live) == 1

    await _until(subscribed)
    feed = quiet_hub.hub.feeds[channel]
    big = "x" * 20_000
    for _ in range(200):
        await resources.publisher.publish(room_channel(room.id), Blob(body=big))
        if len(feed) == 0:
            break
        await asyncio.sleep(0.005)
    assert len(feed) == 0, "the stuck viewer was cut off"
    cut_off = await scrape(port)
    assert moved(before, cut_off, "livesell_hub_slow_disconnects_total") == 1
    stuck.close()  # it never reads again: the hub stops waiting to send its close frame

    with pytest.raises(ConnectionClosed):
        while True:
            await expiring.receive(timeout=8)
    assert expiring.ws.close_code == 3005

    async def both_closed() -> bool:
        now = await scrape(port)
        return moved(before, now, "livesell_hub_connections_closed_total", code="3005") == 1 and (
            moved(before, now, "livesell_hub_connections_closed_total", code="3008") == 1
        )

    await _until(both_closed)
    after = await scrape(port)
    assert moved(before, after, "livesell_hub_expired_disconnects_total") == 1
    assert moved(before, after, "livesell_hub_slow_disconnects_total") == 1
    assert moved(before, after, "livesell_hub_connections_opened_total") == 2
    assert moved(before, after, "livesell_hub_connections") == 0
    assert moved(before, after, "livesell_hub_subscriptions", kind="room") == 0


async def test_closes_count_under_the_code_of_the_closing_handshake(
    resources: Resources,
) -> None:
    running, stop = await start_hub(hub_resources(resources, hub_max_frame_bytes=1024))
    try:
        before = await scrape(running.port)
        own_code = RawClient(await connect(running.url, compression=None))
        await own_code.connect()
        await own_code.ws.close(4321, "a code of its own")
        oversized = RawClient(await connect(running.url, compression=None))
        await oversized.connect()
        await oversized.ws.send("x" * 2048)
        with pytest.raises(ConnectionClosed):
            await oversized.receive()
        dropped = RawClient(await connect(running.url, compression=None))
        await dropped.connect()
        dropped.ws.transport.abort()  # no closing handshake

        closes = {"other": 1, "1009": 1, "1006": 1}

        async def closed() -> bool:
            now = await scrape(running.port)
            return all(
                moved(before, now, "livesell_hub_connections_closed_total", code=code) == count
                for code, count in closes.items()
            )

        await _until(closed)
        assert moved(before, await scrape(running.port), "livesell_hub_connections") == 0
    finally:
        await stop()
