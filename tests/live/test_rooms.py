"""Room routes: who may control a room, the status it may move to, and the snapshot's shape."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from core.events import channel_keys
from core.resources import Resources
from tests.live.conftest import Room

Auth = Callable[..., dict[str, str]]


async def _history(resources: Resources, room_id: str) -> list[dict[str, object]]:
    import json

    _, history, _ = channel_keys(f"room:{room_id}")
    entries = await resources.redis.xrange(history)
    return [json.loads(fields[b"d"]) for _, fields in entries]


async def test_create_room_needs_the_host_role(client: httpx.AsyncClient, auth: Auth) -> None:
    assert (await client.post("/api/rooms", json={"title": "x"})).status_code == 401
    denied = await client.post("/api/rooms", json={"title": "x"}, headers=auth("bob", "viewer"))
    assert denied.status_code == 403
    created = await client.post("/api/rooms", json={"title": " Tea "}, headers=auth("al", "host"))
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "scheduled" and body["title"] == "Tea" and body["host_id"] == "al"
    assert isinstance(body["id"], str)


@pytest.mark.parametrize(
    ("body", "status"),
    [({"title": ""}, 422), ({"title": "x" * 201}, 422), ({}, 422), ({"title": "a", "x": 1}, 422)],
)
async def test_create_room_refuses_bad_bodies(
    client: httpx.AsyncClient, auth: Auth, body: dict[str, object], status: int
) -> None:
    response = await client.post("/api/rooms", json=body, headers=auth("al", "host"))
    assert response.status_code == status
    assert response.json()["error"]["code"]


async def test_only_the_host_or_an_admin_controls_the_room(
    client: httpx.AsyncClient, auth: Auth, room: Room
) -> None:
    url = f"/api/rooms/{room.id}/live"
    assert (await client.post(url)).status_code == 401
    other_host = await client.post(url, headers=auth("mallory", "host"))
    assert other_host.status_code == 403 and other_host.json()["error"]["code"] == "not_room_host"
    assert (await client.post(url, headers=auth("root", "admin"))).status_code == 200


async def test_unknown_room_is_404(client: httpx.AsyncClient, room: Room) -> None:
    for method, path in [
        ("GET", "/api/rooms/999"),
        ("POST", "/api/rooms/999/live"),
        ("POST", "/api/rooms/999/end"),
        ("DELETE", "/api/rooms/999/pin"),
        ("GET", "/api/rooms/not-a-number"),
    ]:
        response = await client.request(method, path, headers=room.host)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] in ("room_not_found", "not_found")


async def test_status_moves_forward_only(client: httpx.AsyncClient, room: Room) -> None:
    base = f"/api/rooms/{room.id}"
    live = await client.post(f"{base}/live", headers=room.host)
    assert live.status_code == 200 and live.json()["status"] == "live" and live.json()["live_at"]
    again = await client.post(f"{base}/live", headers=room.host)
    assert again.status_code == 409 and again.json()["error"]["code"] == "room_already_live"
    ended = await client.post(f"{base}/end", headers=room.host)
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    for path in ("live", "end"):
        refused = await client.post(f"{base}/{path}", headers=room.host)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "room_ended"
    pin = await client.post(f"{base}/pin", json={"product_id": room.products[0]}, headers=room.host)
    assert pin.status_code == 409


async def test_database_refuses_a_backward_status(resources: Resources, room: Room) -> None:
    import asyncpg

    async with resources.pool.acquire() as conn:
        await conn.execute(
            "UPDATE rooms SET status = 'live', live_at = now() WHERE id = $1", int(room.id)
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE rooms SET status = 'scheduled' WHERE id = $1", int(room.id))


async def test_pin_and_unpin_publish_events_and_show_in_snapshot(
    client: httpx.AsyncClient, resources: Resources, room: Room
) -> None:
    base = f"/api/rooms/{room.id}"
    product = room.products[1]
    pinned = await client.post(f"{base}/pin", json={"product_id": product}, headers=room.host)
    assert pinned.status_code == 200
    assert pinned.json()["product"]["id"] == product
    snapshot = (await client.get(base)).json()
    assert set(snapshot) == {
        "room",
        "pinned",
        "drop",
        "server_time",
        "viewers",
        "coupons",
        "reservations",
    }
    assert snapshot["pinned"]["id"] == product and snapshot["room"]["pinned_product_id"] == product
    assert snapshot["drop"] is None and snapshot["viewers"] == 0
    assert snapshot["server_time"].endswith("Z")

    # pinning the same card again changes nothing and announces nothing
    await client.post(f"{base}/pin", json={"product_id": product}, headers=room.host)
    unpinned = await client.delete(f"{base}/pin", headers=room.host)
    assert unpinned.status_code == 200 and unpinned.json()["pinned_product_id"] is None
    assert (await client.get(base)).json()["pinned"] is None
    events = await _history(resources, room.id)
    assert [e["type"] for e in events] == ["card.pinned", "card.unpinned"]
    assert events[1]["product_id"] == product


async def test_pin_refuses_unknown_or_malformed_products(
    client: httpx.AsyncClient, room: Room
) -> None:
    base = f"/api/rooms/{room.id}/pin"
    for body in ({"product_id": "424242"}, {"product_id": "abc"}, {"product_id": 5}, {}):
        response = await client.post(base, json=body, headers=room.host)
        assert response.status_code == 422, body


async def test_go_live_and_end_publish_in_order(
    client: httpx.AsyncClient, resources: Resources, room: Room
) -> None:
    base = f"/api/rooms/{room.id}"
    await client.post(f"{base}/live", headers=room.host)
    await client.post(f"{base}/pin", json={"product_id": room.products[0]}, headers=room.host)
    await client.post(f"{base}/end", headers=room.host)
    events = await _history(resources, room.id)
    assert [e["type"] for e in events] == [
        "room.live",
        "card.pinned",
        "card.unpinned",
        "room.ended",
    ]
    snapshot = (await client.get(base)).json()
    assert snapshot["room"]["status"] == "ended" and snapshot["pinned"] is None


async def test_openapi_documents_room_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/api/openapi.json")).json()
    assert {"post", "delete"} <= set(spec["paths"]["/api/rooms/{id}/pin"])
    assert "get" in spec["paths"]["/api/rooms/{id}"]
