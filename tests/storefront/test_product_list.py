"""Hosts list products: their own with `mine=1`, newest first, a bounded page at a time."""

from __future__ import annotations

from typing import Any

import httpx

from tests.storefront.conftest import HOST, Auth


async def _create(client: httpx.AsyncClient, auth: Auth, owner: str, sku: str) -> dict[str, Any]:
    body = {"sku": sku, "title": f"title {sku}", "price_cents": 1_000, "commission_bps": 500}
    response = await client.post("/api/products", json=body, headers=auth(owner, "host"))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def _list(
    client: httpx.AsyncClient, headers: dict[str, str], query: str = ""
) -> httpx.Response:
    return await client.get(f"/api/products{query}", headers=headers)


async def test_mine_lists_the_hosts_own_products_newest_first_in_pages(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    mine = [await _create(client, auth, HOST, f"MINE-{i}") for i in range(5)]
    theirs = await _create(client, auth, "other-host", "THEIRS-1")
    await _create(client, auth, HOST, "MINE-5")  # newest of all
    newest = (await _list(client, auth(HOST, "host"), "?mine=1&limit=100")).json()
    assert [p["sku"] for p in newest["products"]] == [f"MINE-{i}" for i in range(5, -1, -1)]
    assert newest["next_before"] is None
    assert newest["products"][-1] == mine[0], "the same product cards as GET /api/products/{id}"

    # page by page, following next_before, nothing missed or repeated
    seen: list[str] = []
    query = "?mine=1&limit=2"
    pages = 0
    while True:
        page = (await _list(client, auth(HOST, "host"), query)).json()
        pages += 1
        assert len(page["products"]) <= 2
        seen += [p["sku"] for p in page["products"]]
        if page["next_before"] is None:
            break
        assert page["next_before"] == page["products"][-1]["id"]
        query = f"?mine=1&limit=2&before={page['next_before']}"
    assert pages == 3
    assert seen == [p["sku"] for p in newest["products"]]

    # without mine: the whole catalog, the other host's product included
    everything = (await _list(client, auth("admin-1", "admin"))).json()
    assert theirs["sku"] in [p["sku"] for p in everything["products"]]
    assert len(everything["products"]) == 7
    other = (await _list(client, auth("other-host", "host"), "?mine=true")).json()
    assert [p["sku"] for p in other["products"]] == ["THEIRS-1"]
    nobody = (await _list(client, auth("new-host", "host"), "?mine=1")).json()
    assert nobody == {"products": [], "next_before": None}


async def test_listing_is_for_hosts_and_refuses_bad_queries(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    await _create(client, auth, HOST, "ONE")
    assert (await _list(client, {})).status_code == 401
    viewer = await _list(client, auth("bob", "viewer"), "?mine=1")
    assert viewer.status_code == 403
    for query in (
        "?limit=0",
        "?limit=101",
        "?limit=ten",
        "?before=-1",
        "?before=abc",
        "?mine=maybe",
        "?page=2",
        "?limit=1&limit=2",
    ):
        response = await _list(client, auth(HOST, "host"), query)
        assert response.status_code == 422, query
        assert response.json()["error"]["code"] == "unprocessable", query
    assert (await _list(client, auth(HOST, "host"), "?before=1")).json()["products"] == []


async def test_the_listing_is_documented(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/api/openapi.json")).json()
    listing = spec["paths"]["/api/products"]["get"]
    assert {p["name"] for p in listing["parameters"] if p["in"] == "query"} == {
        "mine",
        "limit",
        "before",
    }
    assert "post" in spec["paths"]["/api/products"], "creating products is still there"
