"""Products and drops: creation rules, who may, the lifecycle events viewers see."""

from __future__ import annotations

import httpx

import storefront
from core.events import Outbox
from core.resources import Resources
from storefront import Shop
from storefront.events import mask_buyer
from storefront.worker import run_schedule
from tests.storefront.conftest import HOST, Auth, Buy, StartDrop, room_events


async def test_products_create_read_and_refuse_bad_input(
    client: httpx.AsyncClient, auth: Auth, resources: Resources
) -> None:
    body = {"sku": "SILK-1", "title": "真丝围巾", "price_cents": 29_900, "commission_bps": 2000}
    created = await client.post("/api/products", json=body, headers=auth(HOST, "host"))
    assert created.status_code == 201
    product = created.json()
    assert product == {**body, "id": product["id"], "image_url": None}
    assert (await client.get(f"/api/products/{product['id']}")).json() == product

    duplicate = await client.post("/api/products", json=body, headers=auth(HOST, "host"))
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "sku_taken"
    for bad in (
        {**body, "sku": "X", "commission_bps": 10_001},
        {**body, "sku": "Y", "price_cents": -1},
        {**body, "sku": ""},
        {**body, "sku": "Z", "image_url": "javascript:alert(1)"},
    ):
        refused = await client.post("/api/products", json=bad, headers=auth(HOST, "host"))
        assert refused.status_code == 422, bad
    viewer = await client.post("/api/products", json={**body, "sku": "V"}, headers=auth("bob"))
    assert viewer.status_code == 403
    assert (await client.get("/api/products/999")).status_code == 404
    async with resources.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM products") == 1


async def test_only_the_rooms_host_starts_and_closes_drops(
    client: httpx.AsyncClient, auth: Auth, room_id: int, product_id: str, start_drop: StartDrop
) -> None:
    body = {"product_id": product_id, "price_cents": 100, "quantity": 3, "per_buyer_limit": 1}
    url = f"/api/rooms/{room_id}/drops"
    assert (await client.post(url, json=body, headers=auth("zed", "host"))).status_code == 403
    assert (await client.post(url, json=body, headers=auth("bob", "viewer"))).status_code == 403
    missing = await client.post("/api/rooms/999/drops", json=body, headers=auth(HOST, "host"))
    assert missing.status_code == 404
    unknown = await client.post(url, json={**body, "product_id": "999"}, headers=auth(HOST, "host"))
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_product"
    zero = await client.post(url, json={**body, "quantity": 0}, headers=auth(HOST, "host"))
    assert zero.status_code == 422

    drop = await start_drop()
    busy = await client.post(url, json=body, headers=auth(HOST, "host"))
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "drop_in_progress"
    close_url = f"/api/drops/{drop['id']}/close"
    assert (await client.post(close_url, headers=auth("zed", "host"))).status_code == 403
    assert (await client.post(close_url, headers=auth(HOST, "host"))).status_code == 200
    twice = await client.post(close_url, headers=auth(HOST, "host"))
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "drop_not_active"


async def test_drop_lifecycle_events(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    shop: Shop,
    room_id: int,
) -> None:
    drop = await start_drop(starts_in_s=60, quantity=2, per_buyer_limit=2)
    events = await room_events(resources, room_id)
    assert [e["type"] for e in events] == ["drop.scheduled"]
    assert events[0]["drop"]["id"] == drop["id"] and events[0]["server_time"]

    # its start time comes: the worker announces it once, and sales open
    async with resources.pool.acquire() as conn:
        await conn.execute(
            "UPDATE drops SET starts_at = now() - interval '1 second' WHERE id = $1",
            int(drop["id"]),
        )
    await resources.redis.delete(f"{{drop:{drop['id']}}}:gate")  # rebuilt with the new start
    await run_schedule(shop)
    await run_schedule(shop)
    events = await room_events(resources, room_id)
    started = [e for e in events if e["type"] == "drop.started"]
    assert len(started) == 1 and started[0]["drop"]["status"] == "live"
    assert (await buy(drop["id"], "bob", 2)).status_code == 201
    types = [e["type"] for e in await room_events(resources, room_id)]
    assert types[-2:] == ["stock.changed", "drop.sold_out"]

    # its end time comes: closed once with reason "ended"; buying is refused
    async with resources.pool.acquire() as conn:
        await conn.execute(
            "UPDATE drops SET ends_at = now() - interval '1 millisecond' WHERE id = $1",
            int(drop["id"]),
        )
    await run_schedule(shop)
    await run_schedule(shop)
    closed = [e for e in await room_events(resources, room_id) if e["type"] == "drop.closed"]
    assert len(closed) == 1
    assert closed[0] == {
        "type": "drop.closed",
        "drop_id": drop["id"],
        "reason": "ended",
        "remaining": 0,
        "sold": 0,
        "held": 2,
    }
    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert view["status"] == "ended"


async def test_active_drop_view_and_public_helpers(
    resources: Resources, room_id: int, product_id: str, buy: Buy
) -> None:
    async with resources.pool.acquire() as conn:
        assert await storefront.active_drop_view(conn, room_id) is None
        card = await storefront.product_view(conn, int(product_id))
        assert card is not None and card.sku == "TEA-1"
        assert await storefront.product_view(conn, 999) is None
        outbox = Outbox()
        async with conn.transaction():
            first = await storefront.create_drop(
                conn,
                outbox,
                room_id=room_id,
                product_id=int(product_id),
                price_cents=500,
                quantity=3,
                per_buyer_limit=1,
                created_by=HOST,
            )
            await storefront.close_drop(conn, outbox, int(first.id))
            second = await storefront.create_drop(
                conn,
                outbox,
                room_id=room_id,
                product_id=int(product_id),
                price_cents=500,
                quantity=3,
                per_buyer_limit=1,
                created_by=HOST,
            )
    assert (await buy(second.id, "bob")).status_code == 201
    async with resources.pool.acquire() as conn:
        view = await storefront.active_drop_view(conn, room_id)
    assert view is not None and view.id == second.id
    assert (view.status, view.remaining, view.held, view.sold) == ("live", 2, 1, 0)


def test_buyer_masking() -> None:
    assert mask_buyer("张三") == "张*"
    assert mask_buyer("alice") == "a***e"
    assert mask_buyer("张三丰") == "张**"
    assert mask_buyer("x") == "*"
    assert mask_buyer("bo") == "b*"


async def test_openapi_documents_storefront_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/api/openapi.json")).json()["paths"]
    buy = paths["/api/drops/{id}/buy"]["post"]
    assert {"201", "409", "429"} <= set(buy["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in buy["parameters"])
    for path in ("/api/products", "/api/payments/webhook", "/api/orders/{id}/refund"):
        assert path in paths


async def test_drop_closed_through_the_public_function_stops_sales(
    resources: Resources, start_drop: StartDrop, buy: Buy
) -> None:
    drop = await start_drop(quantity=3)
    assert (await buy(drop["id"], "bob")).status_code == 201
    async with resources.pool.acquire() as conn, conn.transaction():
        await storefront.close_drop(conn, Outbox(), int(drop["id"]))
    for buyer in ("carol", "dave"):
        refused = await buy(drop["id"], buyer)
        assert refused.status_code == 409 and refused.json()["error"]["status"] == "closed"
    gate = await resources.redis.hget(f"{{drop:{drop['id']}}}:gate", "closed")
    assert gate == b"1", "the gate learned of the close from PostgreSQL's refusal"
