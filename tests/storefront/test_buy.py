"""The buy path as a client sees it: held orders, refusals with the contract's codes, bad input
that writes nothing, and Idempotency-Key semantics."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from core.resources import Resources
from storefront.views import BuyResult
from tests.storefront.conftest import Auth, Buy, StartDrop, stock_truth


async def _counts(res: Resources) -> dict[str, int]:
    async with res.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM orders) AS orders,
                      (SELECT count(*) FROM stock_claims) AS claims,
                      (SELECT count(*) FROM idempotency_keys) AS keys,
                      (SELECT count(*) FROM drop_buyers) AS quotas"""
        )
    return dict(row)


async def test_winner_gets_a_held_order_with_the_contract_shape(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=5, per_buyer_limit=2, price_cents=9_900)
    response = await buy(drop["id"], "bob", quantity=2)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"order_id", "status", "hold_expires_at", "amount_cents"}
    assert body["status"] == "held" and body["amount_cents"] == 19_800
    assert isinstance(body["order_id"], str)

    order = await client.get(f"/api/orders/{body['order_id']}", headers=auth("bob", "viewer"))
    assert order.status_code == 200
    assert order.json()["commission_bps"] == 1500, "the product's rate is snapshotted"
    assert order.json()["status"] == "held"

    view = (await client.get(f"/api/drops/{drop['id']}")).json()
    assert (view["remaining"], view["held"], view["sold"]) == (3, 2, 0)


async def test_a_winners_body_is_the_apis_json_byte_for_byte(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    """The 201 body is written by PostgreSQL (storefront_place_order, stored for replays in the
    same statement): it is exactly what msgspec writes for the same BuyResult."""
    drop = await start_drop(quantity=5, per_buyer_limit=2, price_cents=1_234)
    response = await buy(drop["id"], "cai", quantity=1)
    assert response.status_code == 201, response.text
    async with resources.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT id, hold_expires_at, amount_cents FROM orders WHERE id = $1",
            int(response.json()["order_id"]),
        )
    expected = BuyResult(
        order_id=str(row["id"]),
        status="held",
        hold_expires_at=row["hold_expires_at"],
        amount_cents=row["amount_cents"],
    )
    assert response.content == msgspec.json.encode(expected)


async def test_sold_out_and_limit_reached(
    start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=3, per_buyer_limit=2)
    assert (await buy(drop["id"], "bob", 2)).status_code == 201
    over = await buy(drop["id"], "bob", 1)
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "limit_reached"
    assert over.json()["error"]["holding"] == 2

    too_many = await buy(drop["id"], "carol", 2)
    assert too_many.status_code == 409
    assert too_many.json()["error"]["code"] == "sold_out"
    assert too_many.json()["error"]["remaining"] == 1
    assert (await buy(drop["id"], "carol", 1)).status_code == 201
    gone = await buy(drop["id"], "dave", 1)
    assert gone.status_code == 409 and gone.json()["error"]["code"] == "sold_out"
    truth = await stock_truth(resources, drop["id"])
    assert truth["held"] == 3 and truth["ordered_units"] == 3


async def test_quantity_above_the_per_buyer_limit_is_refused(
    start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=10, per_buyer_limit=2)
    response = await buy(drop["id"], "bob", 3)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "limit_reached"
    assert (await _counts(resources))["orders"] == 0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"quantity": 0}, 422, "quantity"),
        ({"quantity": -1}, 422, "quantity"),
        ({"quantity": "2"}, 422, "quantity"),
        ({"quantity": 1, "price_cents": 1}, 422, None),
    ],
)
async def test_bad_bodies_are_refused_and_write_nothing(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    resources: Resources,
    body: dict[str, object],
    status: int,
    field: str | None,
) -> None:
    drop = await start_drop()
    response = await client.post(
        f"/api/drops/{drop['id']}/buy",
        json=body,
        headers={**auth("bob", "viewer"), "Idempotency-Key": "k1"},
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == "unprocessable"
    if field:
        assert response.json()["error"]["field"] == field
    assert (await _counts(resources))["orders"] == 0
    assert (await client.get(f"/api/drops/{drop['id']}")).json()["remaining"] == 5


async def test_body_that_is_not_json_is_400(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop
) -> None:
    drop = await start_drop()
    response = await client.post(
        f"/api/drops/{drop['id']}/buy",
        content=b"{quantity: 1",
        headers={**auth("bob", "viewer"), "Idempotency-Key": "k1"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("key", [None, "", "x" * 256])
async def test_missing_or_bad_idempotency_key_is_400(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    resources: Resources,
    key: str | None,
) -> None:
    drop = await start_drop()
    headers = auth("bob", "viewer")
    if key is not None:
        headers["Idempotency-Key"] = key
    response = await client.post(
        f"/api/drops/{drop['id']}/buy", json={"quantity": 1}, headers=headers
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "idempotency_key_required"
    assert (await _counts(resources))["orders"] == 0


async def test_unknown_drop_is_404(buy: Buy, start_drop: StartDrop, resources: Resources) -> None:
    await start_drop()
    for drop_id, code in (("999999", "drop_not_found"), ("abc", "not_found")):
        response = await buy(drop_id, "bob")
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == code
    assert (await _counts(resources))["orders"] == 0


async def test_wrong_role_and_no_token(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, resources: Resources
) -> None:
    drop = await start_drop()
    url = f"/api/drops/{drop['id']}/buy"
    as_host = await client.post(
        url, json={"quantity": 1}, headers={**auth("hana", "host"), "Idempotency-Key": "k"}
    )
    assert as_host.status_code == 403 and as_host.json()["error"]["code"] == "forbidden"
    anonymous = await client.post(url, json={"quantity": 1}, headers={"Idempotency-Key": "k"})
    assert anonymous.status_code == 401
    assert (await _counts(resources))["orders"] == 0


async def test_not_started_closed_and_ended_drops_are_not_active(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    scheduled = await start_drop(starts_in_s=3600)
    assert scheduled["status"] == "scheduled"
    early = await buy(scheduled["id"], "bob")
    assert early.status_code == 409
    assert early.json()["error"] == {
        "code": "drop_not_active",
        "message": f"drop {scheduled['id']} is scheduled, not live",
        "drop_id": scheduled["id"],
        "status": "scheduled",
    }
    closed = await client.post(f"/api/drops/{scheduled['id']}/close", headers=auth("hana", "host"))
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    late = await buy(scheduled["id"], "bob")
    assert late.status_code == 409 and late.json()["error"]["status"] == "closed"

    # a drop whose time ran out (moved into the past in PostgreSQL, gate rebuilt from it)
    ended = await start_drop()
    async with resources.pool.acquire() as conn:
        await conn.execute(
            """UPDATE drops SET starts_at = now() - interval '2 hours',
                                ends_at = now() - interval '1 hour' WHERE id = $1""",
            int(ended["id"]),
        )
    await resources.redis.flushall()
    response = await buy(ended["id"], "bob")
    assert response.status_code == 409 and response.json()["error"]["status"] == "ended"
    assert (await _counts(resources))["orders"] == 0


async def test_replay_returns_the_stored_response_byte_for_byte(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=5, per_buyer_limit=1)
    first = await buy(drop["id"], "bob", key="checkout-1")
    assert first.status_code == 201
    again = await buy(drop["id"], "bob", key="checkout-1")
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers.get("idempotent-replayed") == "true"
    # a replay is not an attempt: the buyer is at the limit, yet gets the stored 201
    await resources.redis.flushall()  # and it survives Redis losing everything
    after_flush = await buy(drop["id"], "bob", key="checkout-1")
    assert after_flush.status_code == 201 and after_flush.content == first.content
    assert (await _counts(resources))["orders"] == 1
    # the key is the buyer's: another buyer's same key is a different request
    other = await buy(drop["id"], "carol", key="checkout-1")
    assert other.status_code == 201 and other.json()["order_id"] != first.json()["order_id"]


async def test_same_key_different_body_is_422(
    start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=5, per_buyer_limit=3)
    assert (await buy(drop["id"], "bob", 1, key="k")).status_code == 201
    changed = await buy(drop["id"], "bob", 2, key="k")
    assert changed.status_code == 422
    assert changed.json()["error"]["code"] == "idempotency_mismatch"
    truth = await stock_truth(resources, drop["id"])
    assert truth["ordered_units"] == 1


async def test_same_key_on_another_drop_is_422_and_returns_the_units(
    client: httpx.AsyncClient, auth: Auth, start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    first = await start_drop(quantity=5)
    assert (await buy(first["id"], "bob", 1, key="k")).status_code == 201
    await client.post(f"/api/drops/{first['id']}/close", headers=auth("hana", "host"))
    second = await start_drop(quantity=2)
    response = await buy(second["id"], "bob", 1, key="k")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_mismatch"
    # the unit the gate handed out before PostgreSQL refused the key is back on sale
    assert (await buy(second["id"], "carol", 2)).status_code == 201


async def test_concurrent_duplicates_make_one_order(
    start_drop: StartDrop, buy: Buy, resources: Resources
) -> None:
    drop = await start_drop(quantity=10, per_buyer_limit=1)
    responses = await asyncio.gather(*(buy(drop["id"], "bob", key="double-tap") for _ in range(20)))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.content for r in responses}) == 1, "every duplicate sees the same response"
    assert (await _counts(resources))["orders"] == 1
    truth = await stock_truth(resources, drop["id"])
    assert truth["held"] == 1
