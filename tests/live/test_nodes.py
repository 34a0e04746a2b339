"""Several hub nodes on one Redis, as real `livesell` processes: a viewer on node A sees what is
published through node B's API, and when node A dies (SIGKILL) the SDK reconnects to node B and
recovers every event it missed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from core.auth import mint_token
from core.embedded import free_port
from core.resources import Resources
from tests.conftest import TEST_SECRET, Servers
from tests.live.sdk import PythonViewer

pytestmark = pytest.mark.slow


class SwitchingProxy:
    """A TCP proxy standing in for a load balancer: forwards to `target`, can hold new
    connections back (so the client misses events), and is re-pointed when a node dies."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.open = asyncio.Event()
        self.open.set()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.open.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "livesell.cli", *args], env=env, stdout=handle, stderr=handle
        )


async def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"port {port} never opened: {log.read_text()}")


@pytest.fixture
def node_env(servers: Servers, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=servers.pg.url,
        REDIS_URL=servers.valkey.url,
        LIVESELL_SECRET=TEST_SECRET,
        LIVESELL_DATA_DIR=str(tmp_path / "data"),
        LIVESELL_HUB_PING_S="5",
    )
    yield env


@pytest.fixture
async def two_nodes(
    node_env: dict[str, str], tmp_path: Path, resources: Resources
) -> AsyncIterator[tuple[subprocess.Popen[bytes], int, int, int]]:
    hub_a, hub_b, api_b = free_port(), free_port(), free_port()
    node_a = _spawn(["hub", "--hub-port", str(hub_a)], node_env, tmp_path / "a.log")
    node_b = _spawn(
        ["serve", "--no-demo", "--api-port", str(api_b), "--hub-port", str(hub_b)],
        node_env,
        tmp_path / "b.log",
    )
    try:
        await _wait_port(hub_a, node_a, tmp_path / "a.log")
        await _wait_port(hub_b, node_b, tmp_path / "b.log")
        await _wait_port(api_b, node_b, tmp_path / "b.log")
        yield node_a, hub_a, hub_b, api_b
    finally:
        for node in (node_a, node_b):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        for node in (node_a, node_b):
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()


async def test_viewer_follows_events_across_nodes_and_survives_node_death(
    two_nodes: tuple[subprocess.Popen[bytes], int, int, int], resources: Resources
) -> None:
    node_a, hub_a, hub_b, api_b = two_nodes
    host = {"Authorization": f"Bearer {mint_token(TEST_SECRET, 'alice', ['host'])}"}
    async with resources.pool.acquire() as conn:
        product_ids = [
            str(
                await conn.fetchval(
                    "INSERT INTO products (sku, title, price_cents, commission_bps, created_by)"
                    " VALUES ($1, 'P', 100, 500, 'alice') RETURNING id",
                    f"NODE-{n}",
                )
            )
            for n in range(2)
        ]
    proxy = SwitchingProxy(hub_a)
    await proxy.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_b}", timeout=10) as api:
        room_id = (await api.post("/api/rooms", json={"title": "nodes"}, headers=host)).json()["id"]
        viewer = PythonViewer(
            f"ws://127.0.0.1:{proxy.port}/connection/websocket", f"room:{room_id}"
        )
        await viewer.start()
        try:
            await viewer.next("subscribed")
            # published through node B's API, delivered by node A's hub
            await api.post(f"/api/rooms/{room_id}/live", headers=host)
            assert (await viewer.next("publication"))["data"]["type"] == "room.live"

            proxy.open.clear()  # the reconnect waits until the host has acted
            proxy.target = hub_b
            node_a.send_signal(signal.SIGKILL)
            node_a.wait(timeout=10)
            pin = {"product_id": product_ids[0]}
            assert (
                await api.post(f"/api/rooms/{room_id}/pin", json=pin, headers=host)
            ).status_code == 200
            await api.delete(f"/api/rooms/{room_id}/pin", headers=host)
            pin = {"product_id": product_ids[1]}
            await api.post(f"/api/rooms/{room_id}/pin", json=pin, headers=host)
            proxy.open.set()

            again = await viewer.next("subscribed", timeout=20)
            assert again["wasRecovering"] is True and again["recovered"] is True
            missed = [(await viewer.next("publication"))["data"] for _ in range(3)]
            assert [m["type"] for m in missed] == ["card.pinned", "card.unpinned", "card.pinned"]
            assert missed[2]["product"]["id"] == product_ids[1]

            # and node B keeps the viewer live
            await api.post(f"/api/rooms/{room_id}/end", headers=host)
            kinds = [(await viewer.next("publication"))["data"]["type"] for _ in range(2)]
            assert kinds == ["card.unpinned", "room.ended"]
        finally:
            await viewer.disconnect()
            await proxy.close()
