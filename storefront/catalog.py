"""Products and drops: creating them, reading them with PostgreSQL's stock truth, closing drops."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from core.db import Conn
from core.errors import RoomEnded, UnknownProduct
from core.events import Outbox
from storefront.conn import must
from storefront.errors import DropInProgress, DropNotActive, DropNotFound, SkuTaken
from storefront.events import DropClosed, DropScheduled, DropStarted
from storefront.rooms import fetch_room
from storefront.views import DropStatus, DropView, ProductPage, ProductView

PRODUCT_COLUMNS = "id, sku, title, price_cents, commission_bps, image_url"


def product_from_row(row: asyncpg.Record) -> ProductView:
    return ProductView(
        id=str(row["id"]),
        sku=row["sku"],
        title=row["title"],
        price_cents=row["price_cents"],
        commission_bps=row["commission_bps"],
        image_url=row["image_url"],
    )


async def insert_product(
    conn: Conn,
    *,
    sku: str,
    title: str,
    price_cents: int,
    commission_bps: int,
    image_url: str | None,
    created_by: str,
) -> ProductView:
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO products (sku, title, price_cents, commission_bps, image_url,
                                      created_by)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING {PRODUCT_COLUMNS}""",
            sku,
            title,
            price_cents,
            commission_bps,
            image_url,
            created_by,
        )
    except asyncpg.UniqueViolationError:
        raise SkuTaken(sku) from None
    return product_from_row(must(row))


async def fetch_product(conn: Conn, product_id: int) -> ProductView | None:
    row = await conn.fetchrow(f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1", product_id)
    return product_from_row(row) if row is not None else None


async def list_products(
    conn: Conn, *, created_by: str | None, limit: int, before: int | None
) -> ProductPage:
    """Products newest first (those `created_by` made, when given), at most `limit`, older than
    the product id `before` when given."""
    rows = await conn.fetch(
        f"""SELECT {PRODUCT_COLUMNS} FROM products
            WHERE ($1::text IS NULL OR created_by = $1) AND ($2::bigint IS NULL OR id < $2)
            ORDER BY id DESC LIMIT $3""",
        created_by,
        before,
        limit + 1,
    )
    page = [product_from_row(row) for row in rows[:limit]]
    return ProductPage(products=page, next_before=page[-1].id if len(rows) > limit else None)


# --- drops ---


class StockCounts:
    __slots__ = ("quantity", "held", "sold")

    def __init__(self, quantity: int, held: int, sold: int) -> None:
        self.quantity, self.held, self.sold = quantity, held, sold

    @property
    def remaining(self) -> int:
        return self.quantity - self.held - self.sold


# a drop's room, and its live claims by state (released claims are history), in one round trip
_STOCK = """
SELECT d.room_id, d.quantity,
       count(*) FILTER (WHERE c.state = 'held') AS held,
       count(*) FILTER (WHERE c.state = 'sold') AS sold
FROM drops d
LEFT JOIN stock_claims c ON c.drop_id = d.id AND c.state <> 'released'
WHERE d.id = $1
GROUP BY d.id
"""


async def drop_stock(conn: Conn, drop_id: int) -> tuple[int, StockCounts]:
    """The drop's room id and its stock counts, as PostgreSQL has them."""
    row = must(await conn.fetchrow(_STOCK, drop_id))
    return row["room_id"], StockCounts(row["quantity"], row["held"], row["sold"])


def drop_status(row: asyncpg.Record, counts: StockCounts, now: datetime) -> DropStatus:
    if row["close_reason"] == "host":
        return "closed"
    if row["close_reason"] == "ended" or now >= row["ends_at"]:
        return "ended"
    if now < row["starts_at"]:
        return "scheduled"
    if counts.remaining <= 0:
        return "sold_out"
    return "live"


async def drop_view_of(conn: Conn, row: asyncpg.Record) -> DropView:
    _, counts = await drop_stock(conn, row["id"])
    now = await conn.fetchval("SELECT now()")
    return DropView(
        id=str(row["id"]),
        room_id=str(row["room_id"]),
        product_id=str(row["product_id"]),
        price_cents=row["price_cents"],
        quantity=row["quantity"],
        per_buyer_limit=row["per_buyer_limit"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        status=drop_status(row, counts, now),
        remaining=counts.remaining,
        sold=counts.sold,
        held=counts.held,
    )


async def fetch_drop_row(conn: Conn, drop_id: int, *, lock: str = "") -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT * FROM drops WHERE id = $1 {lock}", drop_id)
    if row is None:
        raise DropNotFound(drop_id)
    return row


async def drop_view(conn: Conn, drop_id: int) -> DropView:
    return await drop_view_of(conn, await fetch_drop_row(conn, drop_id))


async def current_drop_view(conn: Conn, room_id: int) -> DropView | None:
    """The room's scheduled or live drop, else its most recent one."""
    row = await conn.fetchrow(
        """SELECT * FROM drops WHERE room_id = $1
           ORDER BY (closed_at IS NULL AND ends_at > now()) DESC, starts_at DESC, id DESC
           LIMIT 1""",
        room_id,
    )
    return await drop_view_of(conn, row) if row is not None else None


async def insert_drop(
    conn: Conn,
    outbox: Outbox,
    *,
    room_id: int,
    product_id: int,
    price_cents: int,
    quantity: int,
    per_buyer_limit: int,
    starts_in_s: int,
    duration_s: int,
    created_by: str,
) -> DropView:
    """Create a drop with its units, inside the caller's transaction. The caller checked who may;
    this checks what may (room not ended, product exists, no other drop running in the room)."""
    room = await fetch_room(conn, room_id, lock=True)
    if room.status == "ended":
        raise RoomEnded(room_id)
    if await fetch_product(conn, product_id) is None:
        raise UnknownProduct(product_id)
    running = await conn.fetchval(
        "SELECT id FROM drops WHERE room_id = $1 AND closed_at IS NULL AND ends_at > now() LIMIT 1",
        room_id,
    )
    if running is not None:
        raise DropInProgress(room_id, running)
    per_buyer_limit = min(per_buyer_limit, quantity)
    row = await conn.fetchrow(
        """INSERT INTO drops (room_id, product_id, price_cents, quantity, per_buyer_limit,
                              starts_at, ends_at, created_by, started_at)
           SELECT $1, $2, $3, $4, $5, now() + $6::interval, now() + $6::interval + $7::interval,
                  $8, CASE WHEN $6::interval = interval '0' THEN now() END
           RETURNING *""",
        room_id,
        product_id,
        price_cents,
        quantity,
        per_buyer_limit,
        timedelta(seconds=starts_in_s),
        timedelta(seconds=duration_s),
        created_by,
    )
    row = must(row)
    await conn.execute(
        "INSERT INTO drop_units (drop_id, unit_no) SELECT $1, generate_series(1, $2)",
        row["id"],
        quantity,
    )
    view = await drop_view_of(conn, row)
    now = await conn.fetchval("SELECT now()")
    if row["started_at"] is not None:
        outbox.room(room_id, DropStarted(drop=view, server_time=now))
    else:
        outbox.room(room_id, DropScheduled(drop=view, server_time=now))
    return view


async def close_drop_row(conn: Conn, outbox: Outbox, drop_id: int, reason: str) -> DropView:
    """Close a drop (reason "host" early, "ended" by time); DropNotActive when already over."""
    row = await fetch_drop_row(conn, drop_id, lock="FOR UPDATE")
    if row["closed_at"] is not None:
        raise DropNotActive(drop_id, "closed" if row["close_reason"] == "host" else "ended")
    if reason == "host" and await conn.fetchval("SELECT now() >= $1::timestamptz", row["ends_at"]):
        raise DropNotActive(drop_id, "ended")
    row = must(
        await conn.fetchrow(
            """UPDATE drops SET closed_at = LEAST(now(), ends_at), close_reason = $2
           WHERE id = $1 RETURNING *""",
            drop_id,
            reason,
        )
    )
    view = await drop_view_of(conn, row)
    outbox.room(
        row["room_id"],
        DropClosed(
            drop_id=view.id,
            reason="host" if reason == "host" else "ended",
            remaining=view.remaining,
            sold=view.sold,
            held=view.held,
        ),
    )
    return view


async def start_due_drops(conn: Conn, outbox: Outbox) -> list[int]:
    """Announce `drop.started` for drops whose start time has come (each exactly once)."""
    rows = await conn.fetch(
        """UPDATE drops SET started_at = now()
           WHERE id IN (SELECT id FROM drops
                        WHERE started_at IS NULL AND closed_at IS NULL AND starts_at <= now()
                        ORDER BY starts_at LIMIT 100 FOR UPDATE SKIP LOCKED)
           RETURNING *"""
    )
    now = await conn.fetchval("SELECT now()")
    for row in rows:
        outbox.room(
            row["room_id"], DropStarted(drop=await drop_view_of(conn, row), server_time=now)
        )
    return [row["id"] for row in rows]


async def end_due_drops(conn: Conn, outbox: Outbox) -> list[int]:
    """Close drops whose time ran out, announcing `drop.closed` (reason "ended") once each."""
    ids = await conn.fetch(
        """SELECT id FROM drops WHERE closed_at IS NULL AND ends_at <= now()
           ORDER BY ends_at LIMIT 100 FOR UPDATE SKIP LOCKED"""
    )
    for record in ids:
        await close_drop_row(conn, outbox, record["id"], "ended")
    return [record["id"] for record in ids]
