"""Catalog, flash drops, the buy path, holds, payments, delivery and refunds.

The public surface other packages (and the demo seeder) call is `__all__`; everything else is
internal to storefront.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from core.db import Conn
from core.events import Outbox
from storefront import catalog
from storefront.buy.placing import rehearse_orders
from storefront.coupons import claims
from storefront.coupons.views import CouponList, CouponView
from storefront.shop import Shop
from storefront.views import DropView, OrderView, ProductPage, ProductView
from storefront.worker import reconcile_drop, worker_tasks

__all__ = [
    "CouponList",
    "CouponView",
    "DropView",
    "Shop",
    "OrderView",
    "ProductPage",
    "ProductView",
    "active_drop_view",
    "close_drop",
    "create_drop",
    "create_product",
    "list_products",
    "middleware",
    "product_view",
    "reconcile_drop",
    "room_coupons",
    "rehearse_orders",
    "routes",
    "worker_tasks",
]


def routes() -> list[BaseRoute]:
    from storefront.api import routes as storefront_routes
    from storefront.coupons.api import coupon_routes

    return storefront_routes() + coupon_routes()


def middleware() -> list[Middleware]:
    """ASGI middleware the API app runs in front of its router: the buy route's refusals that
    the gate's recent memory proves, answered before routing."""
    from storefront.buy.early import EarlyRefusals

    return [Middleware(EarlyRefusals)]


async def product_view(conn: Conn, product_id: int) -> ProductView | None:
    """The product card for `product_id`, or None when there is no such product."""
    return await catalog.fetch_product(conn, product_id)


async def list_products(
    conn: Conn, *, created_by: str | None = None, limit: int = 50, before: int | None = None
) -> ProductPage:
    """Products newest first, a page at a time (only those `created_by` made, when given);
    pass the page's `next_before` as `before` for the next one."""
    return await catalog.list_products(conn, created_by=created_by, limit=limit, before=before)


async def room_coupons(conn: Conn, room_id: int) -> CouponList:
    """The room's coupons still claimable or soon to be, newest first, with what remains."""
    return await claims.room_coupons(conn, room_id, claimable_only=True)


async def active_drop_view(conn: Conn, room_id: int) -> DropView | None:
    """The room's current drop (scheduled or live, else the latest), with stock counts from
    PostgreSQL; None when the room never had one."""
    return await catalog.current_drop_view(conn, room_id)


async def create_product(
    conn: Conn,
    *,
    sku: str,
    title: str,
    price_cents: int,
    commission_bps: int,
    created_by: str,
    image_url: str | None = None,
) -> ProductView:
    """Insert a product (SkuTaken when the sku exists)."""
    return await catalog.insert_product(
        conn,
        sku=sku,
        title=title,
        price_cents=price_cents,
        commission_bps=commission_bps,
        image_url=image_url,
        created_by=created_by,
    )


async def create_drop(
    conn: Conn,
    outbox: Outbox,
    *,
    room_id: int,
    product_id: int,
    price_cents: int,
    quantity: int,
    per_buyer_limit: int,
    starts_in_s: int = 0,
    duration_s: int = 300,
    created_by: str,
) -> DropView:
    """Create a drop and its units in the caller's transaction; flush `outbox` after commit to
    announce it. The gate is built on the first buy attempt (or by the worker)."""
    return await catalog.insert_drop(
        conn,
        outbox,
        room_id=room_id,
        product_id=product_id,
        price_cents=price_cents,
        quantity=quantity,
        per_buyer_limit=per_buyer_limit,
        starts_in_s=starts_in_s,
        duration_s=duration_s,
        created_by=created_by,
    )


async def close_drop(conn: Conn, outbox: Outbox, drop_id: int) -> DropView:
    """Close a drop early (e.g. when its room ends), in the caller's transaction; attempts
    already refused by PostgreSQL; the gate learns it from the worker or the next build."""
    return await catalog.close_drop_row(conn, outbox, drop_id, "host")
