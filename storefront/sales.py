"""What a room has sold: its paid orders added up, per drop and in all, for the host's console.

An order counts once it is paid (paid, delivered, or refunded afterwards); refunds are shown apart,
so `revenue_cents` is what the room keeps: paid minus refunded. Held and expired orders never count.
"""

from __future__ import annotations

from core.db import Conn
from storefront.views import DropSales, RoomSales

# by drop (orders are indexed by drop, drops by room), newest drop first
_SALES_SQL = """
SELECT d.id AS drop_id, d.product_id,
       count(o.id) AS orders,
       coalesce(sum(o.quantity - o.refunded_units), 0) AS units,
       coalesce(sum(o.amount_cents), 0) AS paid_cents,
       coalesce(sum(o.refunded_cents), 0) AS refunded_cents
FROM drops d
LEFT JOIN orders o ON o.drop_id = d.id AND o.paid_at IS NOT NULL
WHERE d.room_id = $1
GROUP BY d.id, d.product_id
ORDER BY d.id DESC
"""


async def room_sales(conn: Conn, room_id: int) -> RoomSales:
    drops = [
        DropSales(
            drop_id=str(row["drop_id"]),
            product_id=str(row["product_id"]),
            orders=int(row["orders"]),
            units=int(row["units"]),
            paid_cents=int(row["paid_cents"]),
            refunded_cents=int(row["refunded_cents"]),
            revenue_cents=int(row["paid_cents"]) - int(row["refunded_cents"]),
        )
        for row in await conn.fetch(_SALES_SQL, room_id)
    ]
    return RoomSales(
        room_id=str(room_id),
        orders=sum(drop.orders for drop in drops),
        units=sum(drop.units for drop in drops),
        paid_cents=sum(drop.paid_cents for drop in drops),
        refunded_cents=sum(drop.refunded_cents for drop in drops),
        revenue_cents=sum(drop.revenue_cents for drop in drops),
        drops=drops,
    )
