"""Hub fixtures: a real hub on a free port over the session's embedded PostgreSQL and Valkey,
raw WebSocket clients that speak the protocol by hand, and a room with products to pin."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from core.embedded import free_port
from core.resources import Resources
from live.hub import Hub
from live.server import run_hub


@dataclass
class RunningHub:
    url: str
    hub: Hub
    port: int


@pytest.fixture
async def hub(resources: Resources) -> AsyncIterator[RunningHub]:
    running, stop = await start_hub(resources)
    try:
        yield running
    finally:
        await stop()


class RawClient:
    """A hand-written protocol client: sends commands, reads every JSON object of every frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.inbox: list[dict[str, Any]] = []

    async def send(self, **command: Any) -> int:
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, **command}))
        return self.next_id

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        while not self.inbox:
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            text = frame.decode() if isinstance(frame, bytes) else frame
            self.inbox.extend(json.loads(line) for line in text.split("\n") if line.strip())
        return self.inbox.pop(0)

    async def reply(self, command_id: int, timeout: float = 5.0) -> dict[str, Any]:
        """The reply to `command_id`; pushes read meanwhile stay queued in `pushes`."""
        skipped = []
        try:
            while True:
                message = await self.receive(timeout)
                if message.get("id") == command_id:
                    return message
                skipped.append(message)
        finally:
            self.inbox[:0] = skipped

    async def connect(self, token: str = "") -> dict[str, Any]:
        body = {"token": token} if token else {}
        return await self.reply(await self.send(connect=body))

    async def subscribe(self, channel: str, **extra: Any) -> dict[str, Any]:
        return await self.reply(await self.send(subscribe={"channel": channel, **extra}))

    async def publication(
        self, timeout: float = 5.0, skip: tuple[str, ...] = ("viewers.changed",)
    ) -> dict[str, Any]:
        """The next publication push; pings, other pushes and `skip` event types are passed."""
        while True:
            message = await self.receive(timeout)
            if "push" in message and "pub" in message["push"]:
                if message["push"]["pub"]["data"].get("type") in skip:
                    continue
                return message["push"]  # type: ignore[no-any-return]


async def open_raw(url: str) -> RawClient:
    return RawClient(await connect(url, max_size=None, compression=None))


@pytest.fixture
async def raw_client(hub: RunningHub) -> AsyncIterator[Callable[..., Any]]:
    opened: list[RawClient] = []

    async def open_client(url: str | None = None) -> RawClient:
        raw = await open_raw(url or hub.url)
        opened.append(raw)
        return raw

    yield open_client
    for raw in opened:
        await raw.ws.close()


@dataclass
class Room:
    id: str
    host: dict[str, str]
    products: list[str]


@pytest.fixture
async def room(
    client: httpx.AsyncClient, resources: Resources, auth: Callable[..., dict[str, str]]
) -> Room:
    host = auth("alice", "host")
    products = []
    async with resources.pool.acquire() as conn:
        for n in range(3):
            products.append(
                str(
                    await conn.fetchval(
                        "INSERT INTO products (sku, title, price_cents, commission_bps,"
                        " created_by) VALUES ($1, $2, $3, 1000, 'alice') RETURNING id",
                        f"SKU-{n}",
                        f"Product {n}",
                        1000 + n,
                    )
                )
            )
    created = await client.post("/api/rooms", json={"title": "Tea tasting"}, headers=host)
    assert created.status_code == 201, created.text
    return Room(id=created.json()["id"], host=host, products=products)


def hub_resources(resources: Resources, **overrides: object) -> Resources:
    """The session's resources with hub settings changed (small limits, fast pings)."""
    import dataclasses

    import msgspec

    settings = msgspec.structs.replace(resources.settings, **overrides)
    return dataclasses.replace(resources, settings=settings)


async def start_hub(res: Resources) -> tuple[RunningHub, Callable[[], Any]]:
    """A hub on `res`; returns it and an async `stop()`."""
    port = free_port()
    stop = asyncio.Event()
    started: asyncio.Future[Hub] = asyncio.get_running_loop().create_future()

    async def ready(running: Hub) -> None:
        await asyncio.wait_for(running.link.connected.wait(), 10)
        started.set_result(running)

    task = asyncio.create_task(
        run_hub(res, host="127.0.0.1", port=port, stop=stop, on_listening=ready)
    )
    running = await asyncio.wait_for(asyncio.shield(started), 15)

    async def stop_hub() -> None:
        stop.set()
        await asyncio.wait_for(task, 15)

    return RunningHub(f"ws://127.0.0.1:{port}/connection/websocket", running, port), stop_hub
