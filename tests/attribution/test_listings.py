"""A distributor's own lists: their links with the clicks each brought, and their payouts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

import attribution
from core.resources import Resources
from tests.attribution.conftest import Auth, People
from tests.attribution.shop import Shop


async def _get(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> Any:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _walk(client: httpx.AsyncClient, path: str, key: str, headers: dict[str, str]) -> Any:
    """Every item of a newest-first list, one item per page, following next_before."""
    items: list[Any] = []
    query = "?limit=1"
    while True:
        page = await _get(client, path + query, headers)
        assert len(page[key]) <= 1
        items += page[key]
        if page["next_before"] is None:
            return items
        query = f"?limit=1&before={page['next_before']}"


async def test_a_distributor_lists_their_links_with_clicks_newest_first(
    shop: Shop, client: httpx.AsyncClient, people: People, auth: Auth
) -> None:
    first_room, second_room = await shop.room(), await shop.room()
    product = await shop.product(5_000, 1_000)
    await people.distributor("ann")
    await people.distributor("ben")
    oldest = await people.link("ann", first_room)
    on_product = await people.link("ann", second_room, product)
    newest = await people.link("ann", second_room)
    bens = await people.link("ben", first_room)
    for viewer in ("v1", "v2", "v3"):
        await people.click(viewer, oldest)
    await people.click("v1", on_product)
    await people.click("v4", bens)

    me = auth("ann", "distributor")
    listed = await _get(client, "/api/distributors/me/links", me)
    assert [link["code"] for link in listed["links"]] == [newest, on_product, oldest]
    assert listed["next_before"] is None
    assert [link["clicks"] for link in listed["links"]] == [0, 1, 3]
    middle = listed["links"][1]
    assert middle["url"].endswith("/l/" + on_product) and middle["url"].startswith("http")
    assert (middle["room_id"], middle["product_id"]) == (str(second_room), str(product))
    assert listed["links"][0]["product_id"] is None
    assert datetime.fromisoformat(middle["created_at"]).tzinfo is not None
    assert (
        sum(link["clicks"] for link in listed["links"]) == (await people.dashboard("ann"))["clicks"]
    ), "the links' clicks add up to the dashboard's"

    assert await _walk(client, "/api/distributors/me/links", "links", me) == listed["links"]
    theirs = await _get(client, "/api/distributors/me/links", auth("ben", "distributor"))
    assert [(link["code"], link["clicks"]) for link in theirs["links"]] == [(bens, 1)]


async def test_a_distributor_sees_their_own_payouts_newest_first(
    shop: Shop, client: httpx.AsyncClient, people: People, auth: Auth, resources: Resources
) -> None:
    room = await shop.room()
    drop = await shop.drop(room, await shop.product(10_000, 1_000))  # 1000 commission a unit
    await people.distributor("ann")
    await people.distributor("ben")
    await people.click("buyer-a", await people.link("ann", room))
    await people.click("buyer-b", await people.link("ben", room))

    async def earn(buyer: str, units: int) -> None:
        order = await shop.buy(buyer, drop, quantity=units)
        await shop.deliver_past_window(order)
        await attribution.settle(resources)

    async def pay() -> str:
        batch = await attribution.run_payout(resources, created_by="ops")
        assert batch.id is not None
        return batch.id

    me, them = auth("ann", "distributor"), auth("ben", "distributor")
    assert await _get(client, "/api/distributors/me/payouts", me) == {
        "payouts": [],
        "next_before": None,
    }
    await earn("buyer-a", 1)
    await earn("buyer-b", 2)
    both = await pay()
    await earn("buyer-a", 3)
    only_ann = await pay()
    await earn("buyer-b", 1)
    only_ben = await pay()

    history = await _get(client, "/api/distributors/me/payouts", me)
    assert [(p["batch_id"], p["amount_cents"], p["state"]) for p in history["payouts"]] == [
        (only_ann, 3_000, "paid"),
        (both, 1_000, "paid"),
    ]
    assert history["next_before"] is None
    stamps = [datetime.fromisoformat(p["created_at"]) for p in history["payouts"]]
    assert stamps == sorted(stamps, reverse=True)
    paid = (await people.dashboard("ann"))["commission_cents"]["paid"]
    assert sum(p["amount_cents"] for p in history["payouts"]) == paid
    assert (
        await _walk(client, "/api/distributors/me/payouts", "payouts", me) == (history["payouts"])
    )

    bens = await _get(client, "/api/distributors/me/payouts", them)
    assert [(p["batch_id"], p["amount_cents"]) for p in bens["payouts"]] == [
        (only_ben, 1_000),
        (both, 2_000),
    ]


async def test_the_lists_are_the_callers_own_and_refuse_bad_queries(
    client: httpx.AsyncClient, people: People, auth: Auth
) -> None:
    await people.distributor("ann")
    for path in ("/api/distributors/me/links", "/api/distributors/me/payouts"):
        assert (await client.get(path)).status_code == 401, path
        stranger = await client.get(path, headers=auth("zed", "distributor"))
        assert stranger.status_code == 403, path
        assert stranger.json()["error"]["code"] == "not_a_distributor"
        for query in ("?limit=0", "?limit=101", "?before=x", "?before=-3", "?sort=asc"):
            refused = await client.get(path + query, headers=auth("ann", "distributor"))
            assert refused.status_code == 422, path + query
            assert refused.json()["error"]["code"] == "unprocessable"

    spec = (await client.get("/api/openapi.json")).json()
    for path in ("/api/distributors/me/links", "/api/distributors/me/payouts"):
        operation = spec["paths"][path]["get"]
        assert {p["name"] for p in operation["parameters"]} == {"limit", "before"}
        assert "200" in operation["responses"] and "403" in operation["responses"]
