"""Limits: buy attempts per user and per address, link clicks per address, hub connections per
address, the hub's Origin allow-list, oversized HTTP bodies (413) and hub frames (1009)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from attribution.clicks import CLIENT_LIMIT
from core.http import MAX_BODY_BYTES
from core.resources import Resources
from livesell.app import all_routes
from tests.conftest import within_one_window
from tests.live.conftest import hub_resources, open_raw, start_hub
from tests.security.conftest import app_client
from tests.security.world import World, new_key

Auth = Callable[..., dict[str, str]]


async def _buy(http: httpx.AsyncClient, auth: Auth, drop_id: str, who: str) -> httpx.Response:
    return await http.post(
        f"/api/drops/{drop_id}/buy",
        json={"quantity": 1},
        headers={**auth(who, "viewer"), "Idempotency-Key": new_key()},
    )


async def test_buy_attempts_are_limited_per_user(
    world: World, resources: Resources, auth: Auth
) -> None:
    await within_one_window(need_s=6)
    async with app_client(resources, address="198.51.100.1", buy_rate_per_user=4) as http:
        statuses = [(await _buy(http, auth, world.drop_id, "eve")).status_code for _ in range(7)]
        other = await _buy(http, auth, world.drop_id, "frank")
    # eve may hold 5 of this drop, but the sixth attempt in the window is one too many
    assert statuses[:4] == [201] * 3 + [201] and statuses[4:] == [429] * 3, statuses
    assert other.status_code == 201, "another user is not held back by eve"
    async with app_client(resources, address="198.51.100.1", buy_rate_per_user=4) as http:
        refused = await _buy(http, auth, world.drop_id, "eve")
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    async with resources.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM orders WHERE buyer_id = 'eve'") == 4


async def test_buy_attempts_are_limited_per_address(
    world: World, resources: Resources, auth: Auth
) -> None:
    await within_one_window(need_s=6)
    async with app_client(resources, address="203.0.113.50", buy_rate_per_ip=5) as http:
        statuses = Counter(
            [(await _buy(http, auth, world.drop_id, f"crowd-{i}")).status_code for i in range(8)]
        )
    assert statuses == {201: 5, 429: 3}, statuses
    async with app_client(resources, address="203.0.113.51", buy_rate_per_ip=5) as http:
        assert (await _buy(http, auth, world.drop_id, "crowd-9")).status_code == 201
    # loopback (a local proxy, or this machine) is not one client: never limited per address
    async with app_client(resources, address="127.0.0.1", buy_rate_per_ip=1) as http:
        assert [(await _buy(http, auth, world.drop_id, f"lo-{i}")).status_code for i in range(3)]
        assert (await _buy(http, auth, world.drop_id, "lo-9")).status_code == 201


async def test_link_clicks_are_limited_per_address(world: World, resources: Resources) -> None:
    async with app_client(resources, address="192.0.2.77") as http:
        statuses = Counter()
        for _ in range(CLIENT_LIMIT + 5):
            # a fresh anonymous visitor each time: only the address ties them together
            http.cookies.clear()
            statuses[(await http.get(f"/l/{world.link_code}")).status_code] += 1
    assert statuses == {302: CLIENT_LIMIT, 429: 5}, statuses


async def test_hub_connections_are_limited_per_address(resources: Resources) -> None:
    running, stop = await start_hub(hub_resources(resources, hub_connect_rate_per_ip=3))
    try:
        await within_one_window(need_s=4)
        # behind a local reverse proxy the hub counts the address the proxy forwards
        forwarded = {"X-Forwarded-For": "10.0.0.1, 198.51.100.23"}
        opened = [await connect(running.url, additional_headers=forwarded) for _ in range(3)]
        with pytest.raises(InvalidStatus) as refused:
            await connect(running.url, additional_headers=forwarded)
        assert refused.value.response.status_code == 429
        assert refused.value.response.headers["Retry-After"]
        other = await connect(running.url, additional_headers={"X-Forwarded-For": "198.51.100.24"})
        # the limit refuses handshakes only: open connections carry on
        viewer = await open_raw(running.url)
        assert "connect" in await viewer.connect()
        for ws in [*opened, other, viewer.ws]:
            await ws.close()
    finally:
        await stop()


async def test_hub_origin_allow_list(resources: Resources) -> None:
    running, stop = await start_hub(hub_resources(resources, hub_origins=("https://shop.test",)))
    try:
        for origin in ("https://evil.test", "null", "https://shop.test.evil.test"):
            with pytest.raises(InvalidStatus) as refused:
                await connect(running.url, origin=origin)  # type: ignore[arg-type]
            assert refused.value.response.status_code == 403, origin
        allowed = await connect(running.url, origin="https://shop.test")  # type: ignore[arg-type]
        native = await connect(running.url)  # apps send no Origin
        await allowed.close()
        await native.close()
    finally:
        await stop()


async def test_oversized_hub_frames_close_with_1009(resources: Resources) -> None:
    running, stop = await start_hub(hub_resources(resources, hub_max_frame_bytes=4096))
    try:
        viewer = await open_raw(running.url)
        await viewer.connect()
        await viewer.ws.send('{"id": 2, "subscribe": {"channel": "' + "x" * 8000 + '"}}')
        with pytest.raises((ConnectionClosed, asyncio.TimeoutError)):
            while True:
                await viewer.receive(timeout=5)
        assert viewer.ws.close_code == 1009
        healthy = await open_raw(running.url)
        assert "connect" in await healthy.connect()
        await healthy.ws.close()
    finally:
        await stop()


def _body_routes() -> list[tuple[str, str]]:
    found = []
    for route in all_routes():
        for method, operation in sorted(getattr(route, "operations", {}).items()):
            if operation.body is not None and method != "HEAD":
                found.append((method, route.path))  # type: ignore[attr-defined]
    assert ("POST", "/api/payments/webhook") in found and len(found) >= 10
    return found


@pytest.mark.parametrize(("method", "path"), _body_routes())
async def test_oversized_bodies_are_413_on_every_route(
    method: str, path: str, world: World, client: httpx.AsyncClient, auth: Auth
) -> None:
    url = path.replace("{id}", world.room_id if "/rooms/" in path else world.drop_id).replace(
        "/orders/" + world.drop_id, "/orders/" + world.paid_order
    )
    if "/orders/" in path:
        url = path.replace("{id}", world.paid_order)
    headers = {
        **auth(world.host, "host", "viewer", "distributor", "admin"),
        "Idempotency-Key": new_key(),
        "content-type": "application/json",
    }
    oversized = b'{"title": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    response = await client.request(method, url, content=oversized, headers=headers)
    assert response.status_code == 413, (url, response.status_code, response.text[:200])
    assert response.json()["error"]["code"] == "payload_too_large"

    async def chunks() -> object:  # no Content-Length: the limit holds while streaming too
        for _ in range(20):
            yield b"x" * 65_536

    streamed = await client.request(method, url, content=chunks(), headers=headers)
    assert streamed.status_code == 413, (url, streamed.status_code)
