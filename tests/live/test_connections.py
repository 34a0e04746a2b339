"""What a connection costs the hub while it idles, and how the hub ends the ones that never
start: no task per connection, a shared deadline for the handshake and the connect command."""

from __future__ import annotations

import asyncio
import time

import httpx
import msgspec
import pytest
from websockets.exceptions import ConnectionClosed

from core.resources import Resources
from live.protocol import Publication, Reply, SubscribeResult, encode, subscribe_reply
from tests.live.conftest import RawClient, Room, RunningHub, open_raw, start_hub


async def test_idle_subscribed_viewers_hold_no_task(hub: RunningHub, room: Room) -> None:
    before = len(asyncio.all_tasks())
    viewers: list[RawClient] = []
    try:
        for _ in range(40):
            viewer = await open_raw(hub.url)
            viewers.append(viewer)
            await viewer.connect()
            await viewer.subscribe(f"room:{room.id}")
        await asyncio.sleep(0.1)
        # the clients' own connections each hold a task in this process; the hub's none
        client_tasks = len(viewers)
        assert len(asyncio.all_tasks()) - before <= client_tasks + 2
        assert len(hub.hub.sessions) == 40
    finally:
        for viewer in viewers:
            await viewer.ws.close()


async def test_a_viewer_that_never_says_connect_is_closed_3502(hub: RunningHub) -> None:
    hub.hub.connect_timeout_s = 0.5
    viewer = await open_raw(hub.url)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(viewer.ws.recv(), 4)
    assert viewer.ws.close_code == 3502
    assert not hub.hub.sessions


async def test_a_connection_that_never_finishes_its_handshake_is_dropped(hub: RunningHub) -> None:
    hub.hub.connect_timeout_s = 0.5
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\n")  # and nothing more
    try:
        assert await asyncio.wait_for(reader.read(), 4) == b""  # closed by the hub
    finally:
        writer.close()


async def test_stopping_the_hub_drops_a_half_open_handshake_at_once(resources: Resources) -> None:
    running, stop = await start_hub(resources)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    writer.write(b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\n")  # and nothing more
    await asyncio.sleep(0.2)
    started = time.monotonic()
    try:
        await stop()
        assert time.monotonic() - started < 1.5  # not the close timeout's 3 s
        assert await asyncio.wait_for(reader.read(), 2) == b""
    finally:
        writer.close()


async def test_a_connected_viewer_is_not_closed_by_the_connect_deadline(
    hub: RunningHub, room: Room
) -> None:
    hub.hub.connect_timeout_s = 0.5
    viewer = await open_raw(hub.url)
    await viewer.connect()
    await viewer.subscribe(f"room:{room.id}")
    await asyncio.sleep(2.5)
    assert len(hub.hub.sessions) == 1
    await viewer.ws.close()


async def test_joiners_share_a_snapshot_only_while_no_event_has_passed_it(
    hub: RunningHub, room: Room, client: httpx.AsyncClient
) -> None:
    """Many joins in a row share the snapshot bytes, and one that joins right after a host
    action sees it, in the snapshot or among the publications that follow its reply."""
    viewers: list[RawClient] = []
    try:
        for n in (0, 1, 2):
            for _ in range(5):
                viewer = await open_raw(hub.url)
                viewers.append(viewer)
                await viewer.connect()
                result = (await viewer.subscribe(f"room:{room.id}"))["subscribe"]
                pinned = result["data"]["pinned"]
                if n != 0 or len(viewers) > 5:
                    assert pinned is not None and pinned["id"] == room.products[n]
            response = await client.post(
                f"/api/rooms/{room.id}/pin",
                json={"product_id": room.products[(n + 1) % 3]},
                headers=room.host,
            )
            assert response.status_code == 200
            await viewers[0].publication()  # the pin went out through the hub
    finally:
        for viewer in viewers:
            await viewer.ws.close()


@pytest.mark.parametrize("command_id", [0, 1, 2**40])
@pytest.mark.parametrize("data", [None, b'{"room":{"id":"1"},"viewers":3}'])
def test_a_shared_subscribe_result_is_the_reply_the_encoder_writes(
    command_id: int, data: bytes | None
) -> None:
    result = SubscribeResult(
        recoverable=True,
        epoch="ab12",
        offset=45,
        data=None if data is None else msgspec.Raw(data),
        publications=[] if data is None else [Publication(msgspec.Raw(b"{}"), 46)],
    )
    assert subscribe_reply(command_id, encode(result)) == encode(
        Reply(id=command_id, subscribe=result)
    )
