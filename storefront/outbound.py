"""The outbound webhooks of an order's facts: `order.paid`, `order.refunded`, `order.delivered`.

Each is written by `core.webhooks.enqueue` inside the transaction that makes the change, from
the order row as that transaction left it, so a committed payment's notification is durable and
a rolled-back one has none. Event ids are stable per fact (a replayed provider event writes
nothing new): `order.paid:<order>`, `order.delivered:<order>`, `order.refunded:<refund row>`.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from core import webhooks
from core.db import Conn
from storefront.conn import must


def _order(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "order_id": str(row["id"]),
        "room_id": str(row["room_id"]),
        "drop_id": str(row["drop_id"]),
        "product_id": str(row["product_id"]),
        "buyer_id": row["buyer_id"],
        "quantity": row["quantity"],
        "unit_price_cents": row["unit_price_cents"],
        "discount_cents": row["discount_cents"],
        "amount_cents": row["amount_cents"],
        "coupon_claim_id": (
            None if row["coupon_claim_id"] is None else str(row["coupon_claim_id"])
        ),
        "status": row["status"],
    }


async def order_paid(conn: Conn, order_id: int) -> None:
    """In the payment's transaction, after the order moved to paid."""
    row = must(await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id))
    await webhooks.enqueue(
        conn, "order.paid", f"order.paid:{order_id}", {**_order(row), "paid_at": row["paid_at"]}
    )


async def order_delivered(conn: Conn, row: asyncpg.Record) -> None:
    """In the delivery's transaction; `row` is the order as delivered."""
    await webhooks.enqueue(
        conn,
        "order.delivered",
        f"order.delivered:{row['id']}",
        {
            **_order(row),
            "delivered_at": row["delivered_at"],
            "return_window_ends_at": row["return_window_ends_at"],
        },
    )


async def order_refunded(conn: Conn, row: asyncpg.Record, refund: asyncpg.Record) -> None:
    """In the refund's transaction; `row` is the order after it, `refund` the refunds row (one
    event per refund: a partial refund and a later one are two events)."""
    await webhooks.enqueue(
        conn,
        "order.refunded",
        f"order.refunded:{refund['id']}",
        {
            **_order(row),
            "refund_id": str(refund["id"]),
            "refund_units": refund["units"],
            "refund_cents": refund["amount_cents"],
            "reason": refund["reason"],
            "refunded_units": row["refunded_units"],
            "refunded_cents": row["refunded_cents"],
            "refunded_at": refund["created_at"],
        },
    )
