"""Distributors, links, clicks and room entry through the HTTP API: binding, dedup, floods,
forged codes, visibility of dashboards and trails, and what the dashboard channel receives."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

import attribution
from attribution.clicks import VISITOR_LIMIT
from attribution.codes import new_link_code
from core.resources import Resources
from tests.attribution.conftest import Auth, People
from tests.attribution.shop import Shop
from tests.published import published


async def _entries(res: Resources) -> int:
    async with res.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM room_entries"))


async def _events(res: Resources, channel: str) -> list[dict[str, Any]]:
    return [json.loads(data) for data in await published(res.redis, channel)]


async def test_becoming_a_distributor_is_idempotent_and_validated(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    first = await client.post("/api/distributors", json={"team": "red"}, headers=auth("ann"))
    assert first.status_code == 201
    again = await client.post("/api/distributors", json={"team": "blue"}, headers=auth("ann"))
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["team"]) == (first.json()["id"], "red")
    assert isinstance(first.json()["id"], str)
    assert (await client.post("/api/distributors", json={})).status_code == 401
    for bad in ({"team": ""}, {"team": "x" * 65}, {"team": 5}, {"squad": "red"}):
        response = await client.post("/api/distributors", json=bad, headers=auth("bob"))
        assert response.status_code == 422, bad
        assert response.json()["error"]["code"] == "unprocessable"


async def test_links_need_a_distributor_and_a_real_room(
    shop: Shop, client: httpx.AsyncClient, auth: Auth, people: People
) -> None:
    room = await shop.room()
    product = await shop.product(1_000, 500)
    refused = await client.post("/api/links", json={"room_id": str(room)}, headers=auth("zed"))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_a_distributor"
    await people.distributor("ann")
    for body, status in (
        ({"room_id": "999"}, 404),
        ({"room_id": str(room), "product_id": "999"}, 404),
        ({"room_id": 1}, 422),
        ({"room_id": "abc"}, 422),
    ):
        response = await client.post("/api/links", json=body, headers=auth("ann"))
        assert response.status_code == status, body
    made = await client.post(
        "/api/links", json={"room_id": str(room), "product_id": str(product)}, headers=auth("ann")
    )
    assert made.status_code == 201
    link = made.json()
    assert link["url"].endswith("/l/" + link["code"]) and link["url"].startswith("http")
    same = await client.post(
        "/api/links", json={"room_id": str(room), "product_id": str(product)}, headers=auth("ann")
    )
    assert same.json()["code"] == link["code"], "one link per room and product"
    room_only = await people.link("ann", room)
    assert room_only != link["code"]
    followed = await client.get(f"/l/{link['code']}")
    assert followed.headers["location"] == f"/r/{room}?via={link['code']}&product={product}"


async def test_forged_and_unknown_codes_are_404_with_nothing_recorded(
    shop: Shop, client: httpx.AsyncClient, people: People, resources: Resources
) -> None:
    room = await shop.room()
    await people.distributor("ann")
    code = await people.link("ann", room)
    forged = code[:-1] + ("A" if code[-1] != "A" else "B")  # tag no longer matches
    unknown = new_link_code(resources.settings.secret)  # authentic-looking, never issued
    for bad in (forged, unknown, "short", "x" * 300, "%00%27"):
        response = await client.get(f"/l/{bad}")
        assert response.status_code == 404, bad
        assert response.json()["error"]["code"] in ("link_not_found", "not_found")
        assert "set-cookie" not in response.headers
    entered = await client.post(
        f"/api/rooms/{room}/enter",
        json={"link_code": forged},
        headers={"Authorization": (await _token(client, "vic"))},
    )
    assert entered.status_code == 404
    assert await _entries(resources) == 0
    assert await _events(resources, "dashboard#ann") == []
    assert await resources.redis.keys("*entry*") == [], "no rate or dedup state either"


async def _token(client: httpx.AsyncClient, sub: str) -> str:
    minted = await client.post("/api/dev/token", json={"sub": sub, "roles": ["viewer"]})
    return "Bearer " + minted.json()["token"]


async def test_click_redirects_sets_a_visitor_cookie_and_dedups_repeats(
    shop: Shop, client: httpx.AsyncClient, people: People, resources: Resources, auth: Auth
) -> None:
    room = await shop.room()
    await people.distributor("ann")
    await people.distributor("ben")
    a, b = await people.link("ann", room), await people.link("ben", room)

    probe = await client.head(f"/l/{a}")
    assert probe.status_code == 302 and await _entries(resources) == 0, "previews are no clicks"
    first = await client.get(f"/l/{a}")
    assert first.status_code == 302 and first.headers["location"] == f"/r/{room}?via={a}"
    cookie = first.headers["set-cookie"]
    assert cookie.startswith("ls_vid=") and "HttpOnly" in cookie
    assert "ls_vid" in client.cookies
    again = await client.get(f"/l/{a}")  # a refresh: same visitor, same link
    assert again.status_code == 302 and "set-cookie" not in again.headers
    assert await _entries(resources) == 1
    assert await resources.redis.keys("*entry*"), "the gate keeps its dedup and rate state"
    await client.get(f"/l/{b}")
    await client.get(f"/l/{a}")  # back to a after b: a new latest entry, recorded
    assert await _entries(resources) == 3
    client.cookies.clear()
    await client.get(f"/l/{a}")  # another browser
    clicks = await _events(resources, "dashboard#ann")
    assert [e["type"] for e in clicks] == ["click.recorded"] * 3
    assert clicks[0]["link_code"] == a and clicks[0]["room_id"] == str(room)
    assert [e["count"] for e in clicks] == [1, 1, 1]
    me = await people.dashboard("ann")
    assert (me["clicks"], me["visitors"]) == (3, 2)

    # a burst is recorded in shared batches; the dashboard hears every click, counted
    burst = await asyncio.gather(
        *(client.get(f"/l/{a}", headers=auth(f"fan-{i}")) for i in range(12))
    )
    assert {r.status_code for r in burst} == {302}
    clicks = await _events(resources, "dashboard#ann")
    assert sum(e["count"] for e in clicks) == 3 + 12
    assert (await people.dashboard("ann"))["clicks"] == 15


async def test_click_floods_are_rate_limited(
    shop: Shop, client: httpx.AsyncClient, people: People, resources: Resources, auth: Auth
) -> None:
    room = await shop.room()
    await people.distributor("ann")
    await people.distributor("ben")
    a, b = await people.link("ann", room), await people.link("ben", room)
    statuses = []
    for i in range(VISITOR_LIMIT + 5):
        response = await client.get(f"/l/{a if i % 2 else b}", headers=auth("bot"))
        statuses.append(response.status_code)
    assert statuses[:VISITOR_LIMIT] == [302] * VISITOR_LIMIT
    assert statuses[VISITOR_LIMIT:] == [429] * 5
    limited = await client.get(f"/l/{a}", headers=auth("bot"))
    assert limited.json()["error"]["code"] == "click_rate_limited"
    assert await _entries(resources) == VISITOR_LIMIT
    assert (await client.get(f"/l/{a}", headers=auth("someone-else"))).status_code == 302


async def test_enter_binds_the_user_and_only_within_the_window(
    shop: Shop,
    client: httpx.AsyncClient,
    people: People,
    resources: Resources,
    auth: Auth,
) -> None:
    room, other_room = await shop.room(), await shop.room()
    drop = await shop.drop(room, await shop.product(10_000, 1_000))
    await people.distributor("ann")
    code = await people.link("ann", room)
    elsewhere = await people.link("ann", other_room)

    mismatch = await client.post(
        f"/api/rooms/{room}/enter", json={"link_code": elsewhere}, headers=auth("vic")
    )
    assert mismatch.status_code == 422 and mismatch.json()["error"]["code"] == "link_room_mismatch"
    assert (
        await client.post("/api/rooms/999/enter", json={}, headers=auth("vic"))
    ).status_code == 404
    assert (await client.post(f"/api/rooms/{room}/enter", json={})).status_code == 401

    entered = await people.enter("vic", room, code)
    assert entered == {
        "room_id": str(room),
        "link_code": code,
        "distributor_id": (await people.dashboard("ann"))["id"],
        "deduplicated": False,
        "continued_click": False,
    }
    assert (await people.enter("vic", room, code))["deduplicated"] is True
    # an anonymous click binds nobody: only the identified buyer's own entries count
    await client.get(f"/l/{code}")
    await people.enter("anon-buyer", room)
    bound = await shop.buy("vic", drop)
    unbound = await shop.buy("anon-buyer", drop)
    # an entry older than the window no longer earns credit
    await people.enter("late", room, code)
    async with resources.pool.acquire() as conn:
        await conn.execute(
            "UPDATE room_entries SET created_at = now() - make_interval(secs => $1) "
            "WHERE user_id = 'late'",
            resources.settings.attribution_window_s + 60.0,
        )
    expired = await shop.buy("late", drop)
    admin = auth("ops", "admin")
    rules = []
    for order in (bound, unbound, expired):
        trail = (await client.get(f"/api/orders/{order}/attribution", headers=admin)).json()
        rules.append((trail["rule"], trail["distributor"] and trail["distributor"]["user_id"]))
    assert rules == [("last", "ann"), ("none", None), ("none", None)]


async def test_dashboards_and_trails_are_private(
    shop: Shop, client: httpx.AsyncClient, people: People, auth: Auth
) -> None:
    room = await shop.room()
    drop = await shop.drop(room, await shop.product(10_000, 1_000))
    ann = await people.distributor("ann")
    ben = await people.distributor("ben")
    await people.click("vic", await people.link("ann", room))
    order = await shop.buy("vic", drop)

    assert (await client.get(f"/api/distributors/{ann}", headers=auth("ann"))).status_code == 200
    peeking = await client.get(f"/api/distributors/{ann}", headers=auth("ben", "distributor"))
    assert peeking.status_code == 404
    assert (await client.get(f"/api/distributors/{ben}", headers=auth("ann"))).status_code == 404
    assert (
        await client.get(f"/api/distributors/{ann}", headers=auth("o", "admin"))
    ).status_code == 200
    assert (await client.get("/api/distributors/me", headers=auth("vic"))).status_code == 403
    assert (await client.get("/api/distributors/me")).status_code == 401

    url = f"/api/orders/{order}/attribution"
    for user, status in (("vic", 200), ("ann", 200), ("ben", 404), ("eve", 404)):
        assert (await client.get(url, headers=auth(user))).status_code == status, user
    assert (await client.get(url)).status_code == 401
    assert (await client.get("/api/orders/abc/attribution", headers=auth("vic"))).status_code == 404


async def test_a_purchase_moves_the_distributors_dashboard_and_the_room_leaderboard(
    shop: Shop, client: httpx.AsyncClient, people: People, resources: Resources
) -> None:
    room = await shop.room()
    drop = await shop.drop(room, await shop.product(10_000, 1_000))
    await people.distributor("ann", team="red")
    code = await people.link("ann", room)
    for buyer in ("v1", "v2"):
        await people.click(buyer, code)
    first = await shop.buy("v1", drop)
    await shop.buy("v1", drop, quantity=2)
    await shop.buy("v2", drop)
    async with resources.pool.acquire() as conn:  # v1's second purchase came 3 days later
        await conn.execute(
            "UPDATE orders SET paid_at = paid_at - interval '3 days' WHERE id = $1", first
        )

    me = await people.dashboard("ann")
    assert (me["buyers"], me["orders"], me["gmv_cents"]) == (2, 3, 40_000)
    assert me["commission_cents"]["pending"] == 4_000
    assert me["community"] == {
        "repeat_buyers": 1,
        "repeat_buyer_rate_bps": 5_000,
        "average_order_value_cents": 13_333,
        "purchase_frequency": 1.5,
        "per_buyer_value_cents": 20_000,
        "avg_days_between_purchases": 3.0,
    }
    events = await _events(resources, "dashboard#ann")
    kinds = [e["type"] for e in events if e["type"] != "click.recorded"]
    assert kinds == ["commission.pending"] * 3, "each purchase reaches the dashboard at once"
    pending = [e for e in events if e["type"] == "commission.pending"][1]
    assert (pending["amount_cents"], pending["commission_cents"], pending["commission_bps"]) == (
        20_000,
        2_000,
        1_000,
    )
    # the latest-value snapshots follow on the next refresh pass, one per dashboard and room
    assert await attribution.refresh_stats(resources) == 2
    assert await attribution.refresh_stats(resources) == 0, "nothing moved since"
    stats = (await _events(resources, "dashboard#ann"))[-1]
    assert stats["type"] == "stats.changed"
    assert stats["stats"] == me
    board = [e for e in await _events(resources, f"room:{room}") if "leaderboard" in e["type"]]
    assert [e["type"] for e in board] == ["leaderboard.changed"], "one coalesced update per pass"
    latest = board[-1]["leaderboard"]
    assert latest["distributors"][0]["gmv_cents"] == 40_000
    assert latest["teams"] == [
        {"rank": 1, "team": "red", "gmv_cents": 40_000, "orders": 3, "distributors": 1}
    ]
    fetched = (await client.get(f"/api/rooms/{room}/leaderboard")).json()
    assert fetched == latest
    assert (await client.get("/api/rooms/999/leaderboard")).status_code == 404


@pytest.mark.parametrize("path", ["/api/distributors", "/api/links", "/api/rooms/{id}/enter"])
async def test_routes_are_documented(client: httpx.AsyncClient, path: str) -> None:
    spec = (await client.get("/api/openapi.json")).json()
    assert "post" in spec["paths"][path]
    assert "/l/{code}" in spec["paths"] and "/api/admin/payouts/{id}.csv" in spec["paths"]
    assert attribution.routes()


async def test_a_link_followed_with_a_token_in_the_query_binds_that_user(
    shop: Shop, client: httpx.AsyncClient, people: People, resources: Resources, auth: Auth
) -> None:
    room = await shop.room()
    drop = await shop.drop(room, await shop.product(10_000, 1_000))
    await people.distributor("ann")
    code = await people.link("ann", room)
    token = auth("vic")["Authorization"].removeprefix("Bearer ")
    followed = await client.get(f"/l/{code}", params={"token": token})
    assert followed.status_code == 302 and "set-cookie" not in followed.headers
    # a bad token on a share link does not block the viewer: they arrive anonymous
    stale = await client.get(f"/l/{code}", params={"token": "not-a-token"})
    assert stale.status_code == 302 and stale.headers["set-cookie"].startswith("ls_vid=")
    order = await shop.buy("vic", drop)
    trail = await client.get(f"/api/orders/{order}/attribution", headers=auth("vic"))
    assert trail.json()["distributor"]["user_id"] == "ann"
    assert trail.json()["click"]["link_code"] == code


async def test_clicks_keep_working_after_redis_forgets_its_scripts(
    shop: Shop, client: httpx.AsyncClient, people: People, resources: Resources
) -> None:
    room = await shop.room()
    await people.distributor("ann")
    code = await people.link("ann", room)
    assert (await client.get(f"/l/{code}")).status_code == 302
    await resources.redis.script_flush()  # what a Redis restart does to the script cache
    client.cookies.clear()
    assert (await client.get(f"/l/{code}")).status_code == 302
    assert await _entries(resources) == 2
    assert len(await _events(resources, "dashboard#ann")) == 2
