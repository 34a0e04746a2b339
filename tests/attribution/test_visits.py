"""One person, one visit: a browser follows a share link anonymously (it gets a visitor cookie),
then the room page enters as the signed-in user with that cookie. The dashboard counts one click
and one visitor, and the user is bound to the link's distributor exactly as before."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from attribution.clicks import DEDUP_S
from core.resources import Resources
from tests.attribution.conftest import Auth, People
from tests.attribution.shop import Shop


async def _follow(client: httpx.AsyncClient, code: str) -> None:
    """A browser with no token follows the link: redirected, given (or sending) its cookie."""
    response = await client.get(f"/l/{code}")
    assert response.status_code == 302, response.text


async def _enter(
    client: httpx.AsyncClient, auth: Auth, user: str, room: int, code: str
) -> dict[str, Any]:
    response = await client.post(
        f"/api/rooms/{room}/enter", json={"link_code": code}, headers=auth(user)
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def _entries(res: Resources) -> list[dict[str, Any]]:
    async with res.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, link_id, visitor, user_id, source FROM room_entries ORDER BY id"
        )
    return [dict(r) for r in rows]


async def _numbers(people: People, user: str) -> tuple[int, int]:
    me = await people.dashboard(user)
    return me["clicks"], me["visitors"]


async def _clicks_heard(res: Resources, user: str) -> int:
    entries = await res.redis.xrange("{dashboard#" + user + "}:history")
    return sum(1 for _, fields in entries if b"click.recorded" in fields[b"d"])


async def test_a_browser_click_then_the_signed_in_entry_is_one_click_one_visitor(
    shop: Shop,
    client: httpx.AsyncClient,
    people: People,
    auth: Auth,
    resources: Resources,
) -> None:
    room = await shop.room()
    drop = await shop.drop(room, await shop.product(10_000, 1_000))
    await people.distributor("ann")
    code = await people.link("ann", room)

    await _follow(client, code)
    [click] = await _entries(resources)
    assert click["visitor"].startswith("v:") and click["user_id"] is None
    entered = await _enter(client, auth, "vic", room, code)
    assert entered["deduplicated"] is True and entered["continued_click"] is True
    assert entered["distributor_id"] == (await people.dashboard("ann"))["id"]
    assert await _entries(resources) == [{**click, "user_id": "vic", "visitor": "u:vic"}], (
        "the click is now vic's"
    )
    assert await _numbers(people, "ann") == (1, 1)
    assert await _clicks_heard(resources, "ann") == 1, "no second click.recorded"

    # the page entering again (a reload) and the same browser following the link again
    again = await _enter(client, auth, "vic", room, code)
    assert (again["deduplicated"], again["continued_click"]) == (True, False)
    await _follow(client, code)
    assert await _numbers(people, "ann") == (1, 1)

    # binding is unchanged: vic's order credits ann, through that very click
    order = await shop.buy("vic", drop)
    trail = (await client.get(f"/api/orders/{order}/attribution", headers=auth("vic"))).json()
    assert trail["distributor"]["user_id"] == "ann"
    assert (trail["click"]["id"], trail["click"]["source"]) == (str(click["id"]), "click")
    me = await people.dashboard("ann")
    assert (me["orders"], me["buyers"], me["commission_cents"]["pending"]) == (1, 1, 1_000)


async def test_without_the_cookie_or_after_the_interval_the_entry_is_a_new_one(
    shop: Shop,
    client: httpx.AsyncClient,
    people: People,
    auth: Auth,
    resources: Resources,
) -> None:
    room = await shop.room()
    await people.distributor("ann")
    code = await people.link("ann", room)

    # an app with no cookie jar: its entry is its own (two clicks, two visitors, as before)
    await _follow(client, code)
    client.cookies.clear()
    fresh = await _enter(client, auth, "vic", room, code)
    assert (fresh["deduplicated"], fresh["continued_click"]) == (False, False)
    assert await _numbers(people, "ann") == (2, 2)

    # a forged cookie hands nothing over
    client.cookies.set("ls_vid", "A" * 22 + "." + "B" * 8)
    forged = await _enter(client, auth, "wes", room, code)
    assert forged["continued_click"] is False
    assert await _numbers(people, "ann") == (3, 3)

    # a browser whose click is older than the interval: a new entry by the user
    client.cookies.clear()
    await _follow(client, code)
    async with resources.pool.acquire() as conn:
        await conn.execute(
            "UPDATE room_entries SET created_at = created_at - make_interval(secs => $1)"
            " WHERE user_id IS NULL",
            float(DEDUP_S + 1),
        )
    late = await _enter(client, auth, "xia", room, code)
    assert late["continued_click"] is False and late["deduplicated"] is False
    assert await _numbers(people, "ann") == (5, 5)


async def test_a_click_is_handed_over_once_and_only_through_its_own_link(
    shop: Shop,
    client: httpx.AsyncClient,
    people: People,
    auth: Auth,
    resources: Resources,
) -> None:
    room = await shop.room()
    drop = await shop.drop(room, await shop.product(10_000, 1_000))
    await people.distributor("ann")
    await people.distributor("ben")
    anns, bens = await people.link("ann", room), await people.link("ben", room)

    # the browser clicked ann's link; the page enters through ben's: ben's entry, ann's click
    # stays anonymous, and the order credits ben (the user's latest link)
    await _follow(client, anns)
    through_ben = await _enter(client, auth, "vic", room, bens)
    assert (through_ben["continued_click"], through_ben["deduplicated"]) == (False, False)
    assert [e["user_id"] for e in await _entries(resources)] == [None, "vic"]
    order = await shop.buy("vic", drop)
    trail = (await client.get(f"/api/orders/{order}/attribution", headers=auth("vic"))).json()
    assert trail["distributor"]["user_id"] == "ben"

    # vic's own later entry through ben is newer than the anonymous click through ann: taking
    # that click over would let an older click win, so ann's link gets an entry of its own
    through_ann = await _enter(client, auth, "vic", room, anns)
    assert through_ann["continued_click"] is False
    later = await shop.buy("vic", drop)
    trail = (await client.get(f"/api/orders/{later}/attribution", headers=auth("vic"))).json()
    assert trail["distributor"]["user_id"] == "ann"

    assert await _numbers(people, "ben") == (1, 1)

    # a second account signing in on the same browser finds the click already taken
    clicks, visitors = await _numbers(people, "ann")
    client.cookies.clear()
    await _follow(client, anns)
    first = await _enter(client, auth, "wes", room, anns)
    second = await _enter(client, auth, "yan", room, anns)
    assert (first["continued_click"], second["continued_click"]) == (True, False)
    assert await _numbers(people, "ann") == (clicks + 2, visitors + 2), "wes and yan"


async def test_an_entry_is_either_a_users_or_an_anonymous_browsers(
    shop: Shop, resources: Resources
) -> None:
    room = await shop.room()
    insert = (
        "INSERT INTO room_entries (room_id, visitor, user_id, source) VALUES ($1, $2, $3, 'click')"
    )
    async with resources.pool.acquire() as conn:
        for visitor, user in (("v:abc", "vic"), ("u:someone-else", "vic"), ("u:vic", None)):
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(insert, room, visitor, user)
        await conn.execute(insert, room, "u:vic", "vic")
        await conn.execute(insert, room, "v:abc", None)
