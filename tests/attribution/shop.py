"""What storefront will do around attribution, done with plain SQL so attribution is testable
on its own: rooms, products, drops and orders, with the order hooks called inside the same
transactions exactly as storefront calls them. Once storefront lands, each method maps to one
HTTP call (buy, pay webhook, deliver, refund) and these helpers can be swapped for those calls.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

import attribution
from core.events import Outbox
from core.resources import Resources
from core.settings import Settings


class Shop:
    def __init__(self, res: Resources, settings: Settings | None = None) -> None:
        self.res = res
        self.settings = settings or res.settings

    def under(self, **changes: object) -> Shop:
        """The same shop deciding attribution under other settings (e.g. attribution="first")."""
        return Shop(self.res, msgspec.structs.replace(self.settings, **changes))

    async def room(self, host: str = "host-1", title: str = "room") -> int:
        async with self.res.pool.acquire() as conn:
            return int(
                await conn.fetchval(
                    """INSERT INTO rooms (host_id, title, status, live_at)
                       VALUES ($1, $2, 'live', now()) RETURNING id""",
                    host,
                    title,
                )
            )

    async def product(self, price_cents: int, commission_bps: int, sku: str | None = None) -> int:
        async with self.res.pool.acquire() as conn:
            count = await conn.fetchval("SELECT count(*) FROM products")
            return int(
                await conn.fetchval(
                    """INSERT INTO products (sku, title, price_cents, commission_bps, created_by)
                       VALUES ($1, $2, $3, $4, 'host-1') RETURNING id""",
                    sku or f"SKU-{count + 1}",
                    "product",
                    price_cents,
                    commission_bps,
                )
            )

    async def drop(self, room_id: int, product_id: int, quantity: int = 1000) -> int:
        async with self.res.pool.acquire() as conn:
            price = await conn.fetchval(
                "SELECT price_cents FROM products WHERE id = $1", product_id
            )
            return int(
                await conn.fetchval(
                    """INSERT INTO drops (room_id, product_id, price_cents, quantity,
                                          per_buyer_limit, starts_at, ends_at)
                       VALUES ($1, $2, $3, $4, 10, now() - interval '1 minute',
                               now() + interval '1 hour') RETURNING id""",
                    room_id,
                    product_id,
                    price,
                    quantity,
                )
            )

    async def place(self, buyer: str, drop_id: int, quantity: int = 1) -> int:
        """A won buy: the held order, credited in the same transaction (storefront's buy path)."""
        async with self.res.pool.acquire() as conn:
            async with conn.transaction():
                drop = await conn.fetchrow(
                    """SELECT d.room_id, d.product_id, d.price_cents, p.commission_bps
                       FROM drops d JOIN products p ON p.id = d.product_id WHERE d.id = $1""",
                    drop_id,
                )
                assert drop is not None
                order = await conn.fetchrow(
                    """INSERT INTO orders (drop_id, room_id, product_id, buyer_id, quantity,
                                           unit_price_cents, amount_cents, commission_bps,
                                           hold_expires_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + interval '15 minutes')
                       RETURNING id, created_at""",
                    drop_id,
                    drop["room_id"],
                    drop["product_id"],
                    buyer,
                    quantity,
                    drop["price_cents"],
                    drop["price_cents"] * quantity,
                    drop["commission_bps"],
                )
                assert order is not None
                await attribution.credit_order(
                    conn,
                    Outbox(),
                    self.settings,
                    order_id=order["id"],
                    room_id=drop["room_id"],
                    product_id=drop["product_id"],
                    buyer_id=buyer,
                    amount_cents=drop["price_cents"] * quantity,
                    commission_bps=drop["commission_bps"],
                    placed_at=order["created_at"],
                )
        return int(order["id"])

    async def pay(self, order_id: int) -> None:
        """The payment webhook: the order becomes paid and the commission pending."""
        outbox = Outbox()
        async with self.res.pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute(
                    """UPDATE orders SET status = 'paid', paid_at = coalesce(paid_at, now())
                       WHERE id = $1 AND status IN ('held', 'paid')""",
                    order_id,
                )
                await attribution.order_paid(conn, outbox, order_id=order_id)
        await outbox.flush(self.res.publisher)

    async def buy(self, buyer: str, drop_id: int, quantity: int = 1) -> int:
        order_id = await self.place(buyer, drop_id, quantity)
        await self.pay(order_id)
        return order_id

    async def deliver(self, order_id: int, days_ago: float = 0) -> None:
        async with self.res.pool.acquire() as conn:
            await conn.execute(
                """UPDATE orders SET status = 'delivered', delivered_at = $2
                   WHERE id = $1 AND status = 'paid'""",
                order_id,
                datetime.now(UTC) - timedelta(days=days_ago),
            )

    async def deliver_past_window(self, order_id: int) -> None:
        await self.deliver(order_id, days_ago=self.settings.return_window_s / 86_400 + 1)

    async def refund(self, order_id: int, cents: int) -> None:
        """A refund: storefront updates the order, then calls the hook in the same transaction."""
        outbox = Outbox()
        async with self.res.pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute(
                    """UPDATE orders SET refunded_cents = refunded_cents + $2,
                           refunded_at = now(),
                           status = CASE WHEN refunded_cents + $2 = amount_cents
                                         THEN 'refunded' ELSE status END
                       WHERE id = $1""",
                    order_id,
                    cents,
                )
                await attribution.order_refunded(
                    conn, outbox, order_id=order_id, refund_cents=cents
                )
        await outbox.flush(self.res.publisher)

    async def expire(self, order_id: int) -> None:
        async with self.res.pool.acquire() as conn:
            await conn.execute(
                "UPDATE orders SET status = 'expired', expired_at = now() WHERE id = $1", order_id
            )

    async def window_passes(self, order_id: int) -> None:
        """Move a delivered order's delivery back past the return window."""
        async with self.res.pool.acquire() as conn:
            await conn.execute(
                "UPDATE orders SET delivered_at = $2 WHERE id = $1 AND delivered_at IS NOT NULL",
                order_id,
                datetime.now(UTC) - timedelta(seconds=self.settings.return_window_s, days=1),
            )
