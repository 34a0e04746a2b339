"""`GET /api/rooms/{id}/sales`: what a room's paid orders add up to, for its host's console."""

from __future__ import annotations

import httpx

from tests.storefront.conftest import HOST, Auth, Buy, StartDrop


async def _bought(
    client: httpx.AsyncClient, auth: Auth, buy: Buy, drop_id: str, buyer: str, quantity: int,
    pay: bool = True,
) -> str:  # fmt: skip
    held = await buy(drop_id, buyer, quantity)
    assert held.status_code == 201, held.text
    order_id: str = held.json()["order_id"]
    if pay:
        paid = await client.post(f"/api/orders/{order_id}/pay", headers=auth(buyer))
        assert paid.json()["order_status"] == "paid", paid.text
    return order_id


async def test_sales_add_up_paid_orders_per_drop_minus_refunds(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy, room_id: int
) -> None:
    empty = await client.get(f"/api/rooms/{room_id}/sales", headers=auth(HOST, "host"))
    assert empty.status_code == 200, empty.text
    assert (empty.json()["orders"], empty.json()["revenue_cents"], empty.json()["drops"]) == (
        0, 0, [],
    )  # fmt: skip

    first = await start_drop(price_cents=9_900, quantity=5, per_buyer_limit=3)
    await _bought(client, auth, buy, first["id"], "bob", 2)
    refunded = await _bought(client, auth, buy, first["id"], "cleo", 1)
    await _bought(client, auth, buy, first["id"], "dan", 1, pay=False)  # held: not a sale
    refund = await client.post(f"/api/orders/{refunded}/refund", headers=auth("cleo"))
    assert refund.status_code == 200, refund.text
    closed = await client.post(f"/api/drops/{first['id']}/close", headers=auth(HOST, "host"))
    assert closed.status_code == 200, closed.text
    second = await start_drop(price_cents=5_000, quantity=3, per_buyer_limit=3)
    await _bought(client, auth, buy, second["id"], "bob", 3)

    response = await client.get(f"/api/rooms/{room_id}/sales", headers=auth(HOST, "host"))
    assert response.status_code == 200, response.text
    sales = response.json()
    assert sales["room_id"] == str(room_id)
    assert (sales["orders"], sales["units"]) == (3, 5)
    assert (sales["paid_cents"], sales["refunded_cents"]) == (3 * 9_900 + 15_000, 9_900)
    assert sales["revenue_cents"] == 2 * 9_900 + 15_000
    by_drop = {row["drop_id"]: row for row in sales["drops"]}
    assert [row["drop_id"] for row in sales["drops"]] == [second["id"], first["id"]]
    assert by_drop[first["id"]]["revenue_cents"] == 2 * 9_900
    assert (by_drop[first["id"]]["orders"], by_drop[first["id"]]["units"]) == (2, 2)
    assert by_drop[second["id"]]["revenue_cents"] == 15_000
    assert by_drop[second["id"]]["product_id"] == second["product_id"]


async def test_only_the_rooms_host_sees_its_sales(
    client: httpx.AsyncClient, auth: Auth, room_id: int
) -> None:
    path = f"/api/rooms/{room_id}/sales"
    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers=auth("bob"))).status_code == 403
    other_host = await client.get(path, headers=auth("zed", "host"))
    assert other_host.status_code == 403
    assert (await client.get(path, headers=auth("root", "admin"))).status_code == 200
    missing = await client.get("/api/rooms/999999/sales", headers=auth(HOST, "host"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "room_not_found"
    spec = (await client.get("/api/openapi.json")).json()
    assert "get" in spec["paths"]["/api/rooms/{id}/sales"]
