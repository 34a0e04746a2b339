"""Orders after checkout: reading them, delivery, refunds, and holds that expire.

Every path that gives units back releases them in PostgreSQL first, and only after commit
returns them to the gate and tells viewers (`stock.changed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import asyncpg

import attribution
from core.auth import Principal
from core.db import Conn
from core.errors import OrderNotFound
from core.events import Outbox
from core.resources import Resources
from storefront import billing, outbound
from storefront.conn import must
from storefront.errors import OrderStateConflict, RefundTooLarge, ReturnWindowClosed
from storefront.rooms import check_host, fetch_room
from storefront.views import OrderView

if TYPE_CHECKING:
    from storefront.shop import Shop

log = logging.getLogger("livesell.storefront.orders")

EXPIRY_BATCH = 200


def order_from_row(row: asyncpg.Record) -> OrderView:
    """The order as the API shows it; its return window is the one fixed at delivery."""
    return OrderView(
        id=str(row["id"]),
        drop_id=str(row["drop_id"]),
        room_id=str(row["room_id"]),
        product_id=str(row["product_id"]),
        buyer_id=row["buyer_id"],
        quantity=row["quantity"],
        unit_price_cents=row["unit_price_cents"],
        amount_cents=row["amount_cents"],
        commission_bps=row["commission_bps"],
        status=row["status"],
        refunded_units=row["refunded_units"],
        refunded_cents=row["refunded_cents"],
        hold_expires_at=row["hold_expires_at"],
        created_at=row["created_at"],
        paid_at=row["paid_at"],
        delivered_at=row["delivered_at"],
        refunded_at=row["refunded_at"],
        expired_at=row["expired_at"],
        return_window_ends_at=row["return_window_ends_at"],
        refund_reason=row["refund_reason"],
        discount_cents=row["discount_cents"],
        coupon_claim_id=None if row["coupon_claim_id"] is None else str(row["coupon_claim_id"]),
    )


async def visible_order(
    conn: Conn, order_id: int, who: Principal, *, lock: bool = False
) -> asyncpg.Record:
    """The order if `who` is its buyer or an admin; anyone else learns nothing (404)."""
    row = await conn.fetchrow(
        "SELECT * FROM orders WHERE id = $1" + (" FOR UPDATE" if lock else ""), order_id
    )
    if row is None or not (who.is_admin or row["buyer_id"] == who.user_id):
        raise OrderNotFound(order_id)
    return row


@dataclass
class Returned:
    """Units released in PostgreSQL that should go back to the gate after commit."""

    drop_id: int
    buyer_id: str
    units: list[int] = field(default_factory=list)
    on_sale: bool = True


async def release_units(conn: Conn, order: asyncpg.Record, count: int | None = None) -> Returned:
    """Release `count` (default all) of the order's live claims and the buyer's quota for them.
    Runs inside the caller's transaction; the order row must be locked."""
    limit = "" if count is None else f"LIMIT {int(count)}"
    units = [
        r["unit_no"]
        for r in await conn.fetch(
            f"""UPDATE stock_claims SET state = 'released', released_at = now()
                WHERE id IN (SELECT id FROM stock_claims
                             WHERE order_id = $1 AND state <> 'released'
                             ORDER BY unit_no DESC {limit})
                RETURNING unit_no""",
            order["id"],
        )
    ]
    if units:
        await conn.execute(
            """UPDATE drop_buyers SET live_units = live_units - $3
               WHERE drop_id = $1 AND buyer_id = $2""",
            order["drop_id"],
            order["buyer_id"],
            len(units),
        )
    on_sale = await conn.fetchval(
        "SELECT closed_at IS NULL AND now() < ends_at FROM drops WHERE id = $1", order["drop_id"]
    )
    return Returned(order["drop_id"], order["buyer_id"], units, bool(on_sale))


async def after_release(shop: Shop, outbox: Outbox, returned: Returned) -> None:
    """After commit: units back on sale (when the drop still sells) and viewers told."""
    if not returned.units:
        return
    if returned.on_sale:
        try:
            await shop.gate.release(returned.drop_id, returned.buyer_id, returned.units)
        except Exception as exc:  # noqa: BLE001 - reconciliation returns them later
            log.warning("drop %d: units not returned to the gate yet: %r", returned.drop_id, exc)
    await outbox.flush(shop.res.publisher)
    await shop.stock.changed(returned.drop_id, returned=True)


async def expire_holds(shop: Shop) -> int:
    """Expire held orders past `hold_expires_at` (a batch); returns how many expired."""
    res = shop.res
    outbox = Outbox()
    returned: list[Returned] = []
    async with res.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT * FROM orders WHERE status = 'held' AND hold_expires_at <= now()
               ORDER BY hold_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
            EXPIRY_BATCH,
        )
        for row in rows:
            returned.append(await release_units(conn, row))
            await conn.execute(
                "UPDATE orders SET status = 'expired', expired_at = now() WHERE id = $1",
                row["id"],
            )
    for item in returned:
        await after_release(shop, outbox, item)
    return len(rows)


async def deliver(res: Resources, order_id: int, who: Principal) -> OrderView:
    """Mark a paid order delivered, which starts its return window: the window's end is fixed on
    the order now, with this process's `return_window_s`, and never recomputed."""
    async with res.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1 FOR UPDATE", order_id)
        if row is None:
            raise OrderNotFound(order_id)
        check_host(await fetch_room(conn, row["room_id"]), who)
        if row["status"] != "paid":
            raise OrderStateConflict(order_id, row["status"], "deliver")
        row = must(
            await conn.fetchrow(
                """UPDATE orders SET status = 'delivered', delivered_at = now(),
                                 return_window_ends_at = now() + $2::interval
               WHERE id = $1 RETURNING *""",
                order_id,
                timedelta(seconds=res.settings.return_window_s),
            )
        )
        await outbound.order_delivered(conn, row)
    return order_from_row(row)


async def refund(
    shop: Shop,
    order_id: int,
    who: Principal,
    *,
    quantity: int | None,
    reason: str | None,
) -> OrderView:
    """Refund some or all units of a paid order. The buyer may before delivery and within the
    return window after it; an admin any time. Units go back on sale while the drop is live, and
    the money goes back to the buyer through the payment's provider once the refund committed."""
    res = shop.res
    outbox = Outbox()
    async with res.pool.acquire() as conn, conn.transaction():
        row = await visible_order(conn, order_id, who, lock=True)
        if row["status"] not in ("paid", "delivered"):
            raise OrderStateConflict(order_id, row["status"], "refund")
        if not who.is_admin and row["delivered_at"] is not None:
            window_open = await conn.fetchval(
                "SELECT now() <= $1::timestamptz", row["return_window_ends_at"]
            )
            if not window_open:
                raise ReturnWindowClosed(order_id)
        refundable = row["quantity"] - row["refunded_units"]
        units = refundable if quantity is None else quantity
        if units > refundable:
            raise RefundTooLarge(order_id, refundable)
        returned = await release_units(conn, row, units)
        # pro rata to the cent: after r of q units, floor(amount × r / q) is refunded in all
        # (orders_refund_pro_rata), so a discounted order's last unit returns what is left
        refunded_units = row["refunded_units"] + units
        cents = row["amount_cents"] * refunded_units // row["quantity"] - row["refunded_cents"]
        actor = "admin" if who.is_admin and who.user_id != row["buyer_id"] else "buyer"
        row = must(
            await conn.fetchrow(
                """UPDATE orders SET refunded_units = refunded_units + $2,
                                 refunded_cents = refunded_cents + $3,
                                 refunded_at = now(),
                                 refund_reason = $4,
                                 status = CASE WHEN refunded_units + $2 = quantity
                                               THEN 'refunded' ELSE status END
               WHERE id = $1 RETURNING *""",
                order_id,
                units,
                cents,
                reason or f"{actor} request",
            )
        )
        refund_row = must(
            await conn.fetchrow(
                """INSERT INTO refunds (order_id, units, amount_cents, reason, requested_by)
                   VALUES ($1, $2, $3, $4, $5) RETURNING *""",
                order_id,
                units,
                cents,
                reason or f"{actor} request",
                who.user_id,
            )
        )
        await outbound.order_refunded(conn, row, refund_row)
        await attribution.order_refunded(conn, outbox, order_id=order_id, refund_cents=cents)
        provider_refund = await billing.take_back(conn, order_id, cents)
    await after_release(shop, outbox, returned)
    if not returned.units:
        await outbox.flush(res.publisher)
    await billing.refund_at_provider(shop, provider_refund)
    return order_from_row(row)
