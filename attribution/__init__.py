"""Distributors, tracked links, binding, single-level commissions and their ledger.

Storefront calls the three order hooks inside its own transactions; they write attribution's
tables on the same connection and queue dashboard events on the same outbox.
"""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import asyncpg
from starlette.routing import BaseRoute

from core.events import Outbox
from core.resources import Resources
from core.settings import Settings

__all__ = ["credit_order", "order_paid", "order_refunded", "routes", "worker_tasks"]


def routes() -> list[BaseRoute]:
    return []


def worker_tasks(res: Resources) -> list[Coroutine[Any, Any, None]]:
    return []


async def credit_order(
    conn: asyncpg.Connection,
    outbox: Outbox,
    settings: Settings,
    *,
    order_id: int,
    room_id: int,
    product_id: int,
    buyer_id: str,
    amount_cents: int,
    commission_bps: int,
    placed_at: datetime,
) -> None:
    """In the order-creating transaction: snapshot which distributor (if any) this order credits,
    through which click and rule, at which rate."""


async def order_paid(conn: asyncpg.Connection, outbox: Outbox, *, order_id: int) -> None:
    """In the payment transaction: post the pending commission of a credited order."""


async def order_refunded(
    conn: asyncpg.Connection, outbox: Outbox, *, order_id: int, refund_cents: int
) -> None:
    """In the refund transaction: reverse (or, after payout, claw back) commission pro rata."""
