"""The hub with the real Centrifugo SDKs, unmodified: live host actions, and recovery of exactly
the events missed while disconnected."""

from __future__ import annotations

import httpx
import pytest

from tests.live.conftest import Room, RunningHub
from tests.live.sdk import NodeViewer, PythonViewer, node_available

HOST_ACTIONS_WHILE_AWAY = ["card.pinned", "card.unpinned", "room.live"]


async def _act_while_away(client: httpx.AsyncClient, room: Room) -> None:
    base = f"/api/rooms/{room.id}"
    pinned = await client.post(
        f"{base}/pin", json={"product_id": room.products[1]}, headers=room.host
    )
    assert pinned.status_code == 200
    assert (await client.delete(f"{base}/pin", headers=room.host)).status_code == 200
    assert (await client.post(f"{base}/live", headers=room.host)).status_code == 200


async def test_python_sdk_live_then_recovers_exactly_the_missed_events(
    hub: RunningHub, room: Room, client: httpx.AsyncClient
) -> None:
    viewer = PythonViewer(hub.url, f"room:{room.id}")
    await viewer.start()
    try:
        first = await viewer.next("subscribed")
        assert first["recovered"] is False and first["data"]["room"]["id"] == room.id
        await client.post(
            f"/api/rooms/{room.id}/pin", json={"product_id": room.products[0]}, headers=room.host
        )
        live = await viewer.next("publication")
        assert live["data"]["type"] == "card.pinned"

        await viewer.disconnect()
        await _act_while_away(client, room)
        await viewer.connect()
        again = await viewer.next("subscribed")
        assert again["wasRecovering"] is True and again["recovered"] is True
        missed = [(await viewer.next("publication"))["data"]["type"] for _ in range(3)]
        assert missed == HOST_ACTIONS_WHILE_AWAY
        assert viewer.events.queue.empty() or all(
            m.get("data", {}).get("type") == "viewers.changed"
            for m in list(viewer.events.queue._queue)  # type: ignore[attr-defined]
        ), "nothing delivered twice"
    finally:
        await viewer.disconnect()


async def test_python_sdk_guest_cannot_subscribe_to_a_dashboard(hub: RunningHub) -> None:
    viewer = PythonViewer(hub.url, "dashboard#someone")
    await viewer.client.connect()
    await viewer.sub.subscribe()
    try:
        refused = await viewer.next("unsubscribed")
        assert refused["code"] == 103
    finally:
        await viewer.disconnect()


@pytest.mark.skipif(
    not node_available(), reason="node or tests/js/node_modules missing (make test installs it)"
)
async def test_node_sdk_live_then_recovers_exactly_the_missed_events(
    hub: RunningHub, room: Room, client: httpx.AsyncClient
) -> None:
    viewer = await NodeViewer.start(hub.url, f"room:{room.id}")
    try:
        first = await viewer.next("subscribed")
        assert first["recoverable"] is True and first["data"]["room"]["id"] == room.id
        await client.post(
            f"/api/rooms/{room.id}/pin", json={"product_id": room.products[0]}, headers=room.host
        )
        assert (await viewer.next("publication"))["data"]["type"] == "card.pinned"

        await viewer.tell("disconnect")
        await viewer.next("disconnected")
        await _act_while_away(client, room)
        await viewer.tell("connect")
        again = await viewer.next("subscribed")
        assert again["wasRecovering"] is True and again["recovered"] is True
        missed = [(await viewer.next("publication"))["data"]["type"] for _ in range(3)]
        assert missed == HOST_ACTIONS_WHILE_AWAY
    finally:
        await viewer.stop()


@pytest.mark.skipif(
    not node_available(), reason="node or tests/js/node_modules missing (make test installs it)"
)
async def test_node_sdk_guest_cannot_subscribe_to_a_dashboard(hub: RunningHub) -> None:
    viewer = await NodeViewer.start(hub.url, "dashboard#someone")
    try:
        refused = await viewer.next("unsubscribed")
        assert refused["code"] == 103
    finally:
        await viewer.stop()
