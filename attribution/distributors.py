"""Distributors and their links: becoming one, minting links, resolving link codes."""

from __future__ import annotations

import asyncpg
import msgspec

from attribution.codes import link_code_is_authentic, new_link_code
from attribution.errors import LinkNotFound
from attribution.views import DistributorView, LinkList, LinkSummary, LinkView
from core.db import Conn
from core.errors import ProductNotFound, RoomNotFound
from core.settings import Settings


class Link(msgspec.Struct, frozen=True, kw_only=True):
    """A resolved link: immutable once created, so processes may cache it."""

    id: int
    code: str
    distributor_id: int
    distributor_user_id: str
    room_id: int
    product_id: int | None


def distributor_view(row: asyncpg.Record) -> DistributorView:
    return DistributorView(
        id=str(row["id"]), user_id=row["user_id"], team=row["team"], created_at=row["created_at"]
    )


async def become_distributor(conn: Conn, user_id: str, team: str | None = None) -> DistributorView:
    """Make `user_id` a distributor (any user may); a repeat call returns the existing one
    unchanged, its team included."""
    view, _ = await register_distributor(conn, user_id, team)
    return view


async def register_distributor(
    conn: Conn, user_id: str, team: str | None = None
) -> tuple[DistributorView, bool]:
    """`become_distributor`, also telling whether this call created the distributor."""
    row = await conn.fetchrow(
        """INSERT INTO distributors (user_id, team) VALUES ($1, $2)
           ON CONFLICT (user_id) DO NOTHING
           RETURNING id, user_id, team, created_at""",
        user_id,
        team.strip() if team else None,
    )
    if row is not None:
        return distributor_view(row), True
    existing = await conn.fetchrow(
        "SELECT id, user_id, team, created_at FROM distributors WHERE user_id = $1", user_id
    )
    assert existing is not None
    return distributor_view(existing), False


async def distributor_by_user(conn: Conn, user_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, user_id, team, created_at FROM distributors WHERE user_id = $1", user_id
    )


def link_url(settings: Settings, code: str) -> str:
    return f"{settings.api_base_url}/l/{code}"


def link_view(settings: Settings, link: Link) -> LinkView:
    return LinkView(
        code=link.code,
        url=link_url(settings, link.code),
        distributor_id=str(link.distributor_id),
        room_id=str(link.room_id),
        product_id=None if link.product_id is None else str(link.product_id),
    )


async def create_link(
    conn: Conn,
    settings: Settings,
    distributor_id: int,
    room_id: int,
    product_id: int | None = None,
) -> LinkView:
    """The distributor's link into a room (optionally landing on a product); one per target, so
    asking again returns the same code."""
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM rooms WHERE id = $1)", room_id):
        raise RoomNotFound(room_id)
    if product_id is not None and not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM products WHERE id = $1)", product_id
    ):
        raise ProductNotFound(product_id)
    await conn.execute(
        """INSERT INTO links (code, distributor_id, room_id, product_id)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (distributor_id, room_id, product_id) DO NOTHING""",
        new_link_code(settings.secret),
        distributor_id,
        room_id,
        product_id,
    )
    row = await conn.fetchrow(
        _LINK_QUERY + " WHERE l.distributor_id = $1 AND l.room_id = $2"
        " AND l.product_id IS NOT DISTINCT FROM $3",
        distributor_id,
        room_id,
        product_id,
    )
    assert row is not None
    return link_view(settings, _link(row))


async def list_links(
    conn: Conn, settings: Settings, distributor_id: int, *, limit: int, before: int | None = None
) -> LinkList:
    """The distributor's links newest first with the clicks each brought: at most `limit`, older
    than the link id `before` when given."""
    rows = await conn.fetch(
        # one pass over the distributor's entries counts the clicks of the whole page
        """WITH page AS (
               SELECT id, code, room_id, product_id, created_at FROM links
               WHERE distributor_id = $1 AND ($2::bigint IS NULL OR id < $2)
               ORDER BY id DESC LIMIT $3
           ), clicks AS (
               SELECT link_id, count(*) AS clicks FROM room_entries
               WHERE distributor_id = $1 AND link_id IN (SELECT id FROM page)
               GROUP BY link_id
           )
           SELECT page.*, coalesce(clicks.clicks, 0) AS clicks
           FROM page LEFT JOIN clicks ON clicks.link_id = page.id
           ORDER BY page.id DESC""",
        distributor_id,
        before,
        limit + 1,
    )
    links = [
        LinkSummary(
            code=r["code"],
            url=link_url(settings, r["code"]),
            room_id=str(r["room_id"]),
            product_id=None if r["product_id"] is None else str(r["product_id"]),
            created_at=r["created_at"],
            clicks=int(r["clicks"]),
        )
        for r in rows[:limit]
    ]
    next_before = str(rows[limit - 1]["id"]) if len(rows) > limit else None
    return LinkList(links=links, next_before=next_before)


_LINK_QUERY = """SELECT l.id, l.code, l.distributor_id, d.user_id, l.room_id, l.product_id
                 FROM links l JOIN distributors d ON d.id = l.distributor_id"""


def _link(row: asyncpg.Record) -> Link:
    return Link(
        id=row["id"],
        code=row["code"],
        distributor_id=row["distributor_id"],
        distributor_user_id=row["user_id"],
        room_id=row["room_id"],
        product_id=row["product_id"],
    )


async def resolve_link(conn: Conn, settings: Settings, code: str) -> Link:
    """The link behind `code`; LinkNotFound for forged (bad tag) or unknown codes alike."""
    if not link_code_is_authentic(settings.secret, code):
        raise LinkNotFound()
    row = await conn.fetchrow(_LINK_QUERY + " WHERE l.code = $1", code)
    if row is None:
        raise LinkNotFound()
    return _link(row)


class LinkCache:
    """Per-process cache of resolved links (they never change), bounded in size."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self._links: dict[str, Link] = {}
        self._max = max_entries

    async def resolve(self, pool: asyncpg.Pool, settings: Settings, code: str) -> Link:
        found = self._links.get(code)
        if found is not None:
            return found
        if not link_code_is_authentic(settings.secret, code):
            raise LinkNotFound()
        async with pool.acquire() as conn:
            link = await resolve_link(conn, settings, code)
        if len(self._links) >= self._max:
            self._links.pop(next(iter(self._links)))  # oldest first: dicts keep insertion order
        self._links[code] = link
        return link
