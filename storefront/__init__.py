"""Catalog, flash drops, the buy path, holds, payments, delivery and refunds."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import asyncpg
from starlette.routing import BaseRoute

from core.resources import Resources
from storefront.views import DropView, ProductView

__all__ = ["DropView", "ProductView", "active_drop_view", "product_view", "routes", "worker_tasks"]


def routes() -> list[BaseRoute]:
    return []


def worker_tasks(res: Resources) -> list[Coroutine[Any, Any, None]]:
    return []


async def product_view(conn: asyncpg.Connection, product_id: int) -> ProductView | None:
    """The product card for `product_id`, or None when there is no such product."""
    row = await conn.fetchrow("SELECT * FROM products WHERE id = $1", product_id)
    if row is None:
        return None
    return ProductView(
        id=str(row["id"]), sku=row["sku"], title=row["title"], price_cents=row["price_cents"],
        commission_bps=row["commission_bps"], image_url=row["image_url"],
    )  # fmt: skip


async def active_drop_view(conn: asyncpg.Connection, room_id: int) -> DropView | None:
    """The room's current drop (scheduled or live, else the latest), with stock counts."""
    return None
