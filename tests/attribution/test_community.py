"""Community analytics and room funnels: the SQL's figures equal a pure-Python computation over
the same generated history (10,000 orders by 1,000 buyers, refunds), to the cent; CSV on
request."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import httpx
import pytest

from core.resources import Resources
from load_tests.community import History, community_truth, generate
from tests.attribution.conftest import Auth


@pytest.fixture
async def history(resources: Resources) -> History:
    async with resources.pool.acquire() as conn:
        return await generate(conn, orders=10_000, buyers=1_000)


QUERIES = [
    ({}, {}),
    ({"team": "red"}, {"team": "red"}),
    (
        {"from": "2025-04-01T00:00:00Z", "to": "2025-07-01T00:00:00Z"},
        {"since": datetime(2025, 4, 1, tzinfo=UTC), "until": datetime(2025, 7, 1, tzinfo=UTC)},
    ),
    (
        {"team": "blue", "from": "2025-10-01T00:00:00Z"},
        {"team": "blue", "since": datetime(2025, 10, 1, tzinfo=UTC)},
    ),
]


async def test_community_equals_a_pure_python_computation(
    history: History, client: httpx.AsyncClient, auth: Auth
) -> None:
    assert len(history.orders) >= 10_000
    assert len({o.buyer for o in history.orders}) == 1_000
    assert sum(1 for o in history.orders if o.refunded_cents) > 500
    for params, truth_args in QUERIES:
        response = await client.get(
            "/api/admin/community", params=params, headers=auth("op-1", "admin")
        )
        assert response.status_code == 200, response.text
        assert response.json() == community_truth(history, **truth_args), params  # type: ignore[arg-type]


async def test_community_as_csv(history: History, client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.get(
        "/api/admin/community", headers={**auth("op-1", "admin"), "Accept": "text/csv"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    truth = community_truth(history)
    figures = {(r["section"], r["name"], r["metric"]): r["value"] for r in rows}
    assert figures[("community", "", "gmv_cents")] == str(truth["gmv_cents"])
    first = truth["cohorts"][0]
    assert figures[("cohort", first["month"], "ltv_cents")] == str(first["ltv_cents"])


async def test_room_funnel(history: History, client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.get("/api/admin/rooms/1/funnel", headers=auth("op-1", "admin"))
    assert response.status_code == 200, response.text
    body = response.json()
    orders = history.orders
    assert body == {
        "room_id": "1",
        "viewers": history.entries,
        "link_clicks": history.entries,
        "chat_posters": 0,
        "coupon_claims": 0,
        "buyers": len({o.buyer for o in orders}),
        "paid": len(orders),
        "refunded": sum(1 for o in orders if o.refunded_cents),
    }
    csv_response = await client.get(
        "/api/admin/rooms/1/funnel", headers={**auth("op-1", "admin"), "Accept": "text/csv"}
    )
    assert f"1,paid,{len(orders)}" in csv_response.text
    missing = await client.get("/api/admin/rooms/999/funnel", headers=auth("op-1", "admin"))
    assert missing.status_code == 404
