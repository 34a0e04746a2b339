"""Paying for orders: starting a payment and settling it when the provider's news arrives.

News comes by livesell's own signed webhook (`handle_webhook`) or by a shipped provider's route
(`handle_notification`, verified with that provider's SDK); each decodes it into a PaymentEvent,
and `settle` applies every event to the same state machine (migrations 0011 and 0013)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

import attribution
from core.auth import Principal
from core.db import Conn
from core.errors import OrderNotFound
from core.events import Outbox
from core.http import decode_json
from core.resources import Resources
from storefront import outbound, provider_refunds
from storefront.buy.verdicts import Absent, Granted
from storefront.conn import must
from storefront.errors import (
    InvalidSignature,
    OrderStateConflict,
    PaymentMismatch,
    PaymentsUnavailable,
    ProviderNotConfigured,
    ProviderUnavailable,
)
from storefront.events import OrderPlaced, mask_buyer
from storefront.payments import (
    Checkout,
    ClientAction,
    PaymentEvent,
    PaymentProvider,
    ProviderRefund,
    Started,
    verify,
    webhook_key,
)
from storefront.providers import NotifiedProvider, build_provider
from storefront.views import OrderStatus, PaymentOutcome, PaymentStarted, PayRequest, WebhookAck

if TYPE_CHECKING:
    from storefront.shop import Shop

log = logging.getLogger("livesell.storefront.billing")


def default_provider(shop: Shop) -> PaymentProvider | None:
    """The payment provider a shop starts with: the one LIVESELL_PAYMENTS names (the simulated
    one by default in dev mode), or none (paying then answers 503 payments_unavailable)."""

    async def deliver(body: bytes, signature: str) -> None:
        # the simulated provider's events take the path an HTTP webhook takes
        await handle_webhook(shop, body, signature)

    return build_provider(shop.res.settings, deliver)


def _provider(shop: Shop) -> PaymentProvider:
    if shop.payments is None:
        raise PaymentsUnavailable()
    return shop.payments


# A provider may deliver the outcome before `start` returns (the simulated provider does, in this
# task): the webhook leaves the order's new status here, so the answer to the buyer needs no read.
_settled_here: ContextVar[dict[int, OrderStatus] | None] = ContextVar("settled_here", default=None)


# Start paying a held order, in one statement: lock the order and, when its buyer asks while
# the hold lasts, record a payment attempt unless one is already live (pending or succeeded: the
# database allows one per order, so concurrent pays cannot charge an order twice). The row tells
# why nothing was recorded.
# $1 order, $2 the asking user, $3 provider, $4 the provider's payment id
START_PAYMENT_SQL = """
WITH target AS (
    SELECT id, buyer_id, status, amount_cents, now() < hold_expires_at AS open
    FROM orders WHERE id = $1 FOR UPDATE
), started AS (
    INSERT INTO payments (order_id, provider, provider_payment_id, amount_cents)
    SELECT id, $3, $4, amount_cents FROM target WHERE buyer_id = $2 AND status = 'held' AND open
    ON CONFLICT (order_id) WHERE status IN ('pending', 'succeeded') DO NOTHING
    RETURNING id
)
SELECT buyer_id, status, amount_cents, open, EXISTS (SELECT 1 FROM started) AS started
FROM target
"""

# The order's live attempt, when START_PAYMENT_SQL found one (a statement of its own: the one
# that waited for the concurrent insert does not see it).
LIVE_ATTEMPT_SQL = """
SELECT provider, provider_payment_id, amount_cents FROM payments
WHERE order_id = $1 AND status IN ('pending', 'succeeded')
"""


async def start_payment(
    shop: Shop,
    order_id: int,
    who: Principal,
    asked: PayRequest | None = None,
    client_ip: str | None = None,
) -> PaymentStarted:
    """Start paying a held order (only its buyer may), or hand back the live attempt."""
    res = shop.res
    provider = _provider(shop)
    payment_id = provider.new_payment_id()
    asked = asked or PayRequest()
    live: asyncpg.Record | None = None
    async with res.pool.acquire() as conn:
        while True:
            row = await conn.fetchrow(
                START_PAYMENT_SQL, order_id, who.user_id, provider.name, payment_id
            )
            if row is None or row["buyer_id"] != who.user_id:
                raise OrderNotFound(order_id)  # only the buyer pays; anyone else learns nothing
            if row["status"] != "held":
                raise OrderStateConflict(order_id, row["status"], "pay")
            if not row["open"]:
                raise OrderStateConflict(order_id, "expired", "pay")
            if row["started"]:
                break
            # another pay started this order's payment: hand back that attempt, start nothing
            # (unless it failed in the meantime, when this pay tries again)
            live = await conn.fetchrow(LIVE_ATTEMPT_SQL, order_id)
            if live is not None:
                status = await conn.fetchval("SELECT status FROM orders WHERE id = $1", order_id)
                break
    if live is not None:  # (the connection is back in the pool while the provider answers)
        return await _resume(provider, order_id, who, asked, client_ip, live, status)
    checkout = Checkout(
        order_id=order_id,
        amount_cents=row["amount_cents"],
        buyer_id=who.user_id,
        openid=asked.openid,
        client_ip=client_ip,
    )
    settled: dict[int, OrderStatus] = {}
    token = _settled_here.set(settled)
    try:
        started = await provider.start(payment_id, checkout) or Started()
    except Exception as exc:
        log.error("provider %s refused payment %s: %r", provider.name, payment_id, exc)
        await _abandon(res, provider.name, payment_id)
        raise ProviderUnavailable(provider.name) from exc
    finally:
        _settled_here.reset(token)
    async with res.pool.acquire() as conn:
        if started.reference is not None:
            await conn.execute(
                """UPDATE payments SET provider_reference = $3
                   WHERE provider = $1 AND provider_payment_id = $2""",
                provider.name,
                payment_id,
                started.reference,
            )
        status = settled.get(order_id)
        if status is None:  # the outcome comes later (or came by another path): as it stands now
            status = await conn.fetchval("SELECT status FROM orders WHERE id = $1", order_id)
    return _started(order_id, payment_id, provider.name, status, started.action)


async def _resume(
    provider: PaymentProvider,
    order_id: int,
    who: Principal,
    asked: PayRequest,
    client_ip: str | None,
    live: asyncpg.Record,
    status: OrderStatus,
) -> PaymentStarted:
    """Another pay started this order's payment: hand back that attempt (and the buyer's next
    step for it), start nothing."""
    action = ClientAction()
    if status == "held" and live["provider"] == provider.name:
        checkout = Checkout(
            order_id=order_id,
            amount_cents=live["amount_cents"],
            buyer_id=who.user_id,
            openid=asked.openid,
            client_ip=client_ip,
        )
        try:
            resumed = await provider.resume(live["provider_payment_id"], checkout)
        except Exception as exc:
            log.error(
                "provider %s: payment %s cannot be resumed: %r",
                provider.name,
                live["provider_payment_id"],
                exc,
            )
            raise ProviderUnavailable(provider.name) from exc
        if resumed is not None:
            action = resumed.action
    return _started(order_id, live["provider_payment_id"], live["provider"], status, action)


def _started(
    order_id: int, payment_id: str, provider: str, status: OrderStatus, action: ClientAction
) -> PaymentStarted:
    return PaymentStarted(
        order_id=str(order_id),
        payment_id=payment_id,
        provider=provider,
        order_status=status,
        flow=action.flow,
        wechat_jsapi=action.wechat_jsapi,
        h5_url=action.h5_url,
        client_secret=action.client_secret,
        publishable_key=action.publishable_key,
    )


async def _abandon(res: Resources, provider: str, payment_id: str) -> None:
    """The provider did not take the payment: it failed, so the buyer may start another."""
    async with res.pool.acquire() as conn:
        await conn.execute(
            """UPDATE payments SET status = 'failed', settled_at = now()
               WHERE provider = $1 AND provider_payment_id = $2 AND status = 'pending'""",
            provider,
            payment_id,
        )


@dataclass
class _Settlement:
    outcome: PaymentOutcome
    outbox: Outbox = field(default_factory=Outbox)
    granted: Granted | None = None
    drop_id: int = 0
    stock_moved: bool = False
    refund: ProviderRefund | None = None
    # the order's status after settling, when this settlement set it
    order_status: OrderStatus | None = None


# Record a provider event and settle its payment, in one statement. Nothing changes unless the
# event is new (its key makes a concurrent delivery of the same event wait for this one), names
# the payment exactly (order and amount), and finds it pending: the final states are never
# overwritten (the row's `was` tells the caller what the event met). A succeeded payment then
# moves a held order to paid and its held claims to sold; an order in any other state is left to
# `_settle_unheld`.
# $1 provider, $2 event id, $3 event type, $4 order id as the event says, $5 the provider's
# payment id, $6 amount
SETTLE_SQL = """
WITH event AS (
    INSERT INTO payment_events (provider, event_id, event_type, order_id, outcome)
    VALUES ($1, $2, $3, $4, 'processing')
    ON CONFLICT (provider, event_id) DO NOTHING
    RETURNING true AS first
), locked AS (
    -- the order first, then its payment: the lock order of pay and refund too
    SELECT id FROM orders WHERE id = $4 AND EXISTS (SELECT 1 FROM event) FOR UPDATE
), payment AS (
    SELECT id, status FROM payments
    WHERE provider = $1 AND provider_payment_id = $5 AND amount_cents = $6
      AND order_id = (SELECT id FROM locked)
    FOR UPDATE
), settled AS (
    UPDATE payments
    SET status = CASE WHEN $3 = 'payment.failed' THEN 'failed' ELSE 'succeeded' END,
        settled_at = now()
    WHERE id = (SELECT id FROM payment WHERE status = 'pending')
    RETURNING id, order_id, status
), paid AS (
    UPDATE orders SET status = 'paid', paid_at = now()
    WHERE id = (SELECT order_id FROM settled WHERE status = 'succeeded') AND status = 'held'
    RETURNING id, drop_id, room_id, product_id, buyer_id, quantity
), sold AS (
    UPDATE stock_claims SET state = 'sold'
    WHERE order_id = (SELECT id FROM paid) AND state = 'held'
)
SELECT EXISTS (SELECT 1 FROM event) AS first, payment.status AS was,
       settled.id AS payment_row, settled.status AS payment_status,
       paid.id AS paid_order_id, paid.drop_id, paid.room_id, paid.product_id, paid.buyer_id,
       paid.quantity, now() AS now
FROM (VALUES (1)) AS one
LEFT JOIN payment ON true LEFT JOIN settled ON true LEFT JOIN paid ON true
"""


async def handle_webhook(shop: Shop, body: bytes, signature: str | None) -> WebhookAck:
    """Livesell's own signed webhook: verify, decode, settle."""
    verify(webhook_key(shop.res.settings.secret), body, signature)
    return await settle(shop, decode_json(body, PaymentEvent))


async def handle_notification(
    shop: Shop,
    provider_name: str,
    headers: Mapping[str, str],
    body: bytes,
    signed_in: tuple[str, ...],
) -> WebhookAck:
    """A shipped provider's notification: verified and decoded with its SDK, then settled like
    any other event. Events that concern no payment or refund are acknowledged and ignored.
    Without the signature headers `signed_in` it is refused before anything else."""
    if not all(headers.get(name) for name in signed_in):
        raise InvalidSignature("missing")
    provider = shop.payments
    if (
        provider is None
        or provider.name != provider_name
        or not isinstance(provider, NotifiedProvider)
    ):
        raise ProviderNotConfigured(provider_name)
    notice = await provider.decode_notification(headers, body)
    if notice is None:
        return WebhookAck(received=True, outcome="ignored")
    return await settle(shop, notice.event, notice.provider_refund_id)


async def _stored_outcome(conn: Conn, event: PaymentEvent) -> WebhookAck:
    stored = await conn.fetchval(
        "SELECT outcome FROM payment_events WHERE provider = $1 AND event_id = $2",
        event.provider,
        event.id,
    )
    return WebhookAck(received=True, duplicate=True, outcome=stored)


async def _settle_refund_event(
    shop: Shop, event: PaymentEvent, provider_refund_id: str | None
) -> WebhookAck:
    async with shop.res.pool.acquire() as conn, conn.transaction():
        first, outcome = await provider_refunds.settle_refund(conn, event, provider_refund_id)
        if not first:
            return await _stored_outcome(conn, event)
        await conn.execute(
            "UPDATE payment_events SET outcome = $3 WHERE provider = $1 AND event_id = $2",
            event.provider,
            event.id,
            outcome,
        )
    return WebhookAck(received=True, outcome=outcome)


async def settle(
    shop: Shop, event: PaymentEvent, provider_refund_id: str | None = None
) -> WebhookAck:
    """Settle a verified provider event once; a replayed event id is acknowledged as such, and
    an event about a payment (or refund) already settled changes nothing."""
    if event.type in ("refund.succeeded", "refund.failed"):
        return await _settle_refund_event(shop, event, provider_refund_id)
    res = shop.res
    async with res.pool.acquire() as conn:
        async with conn.transaction():
            data = event.data
            row = must(
                await conn.fetchrow(
                    SETTLE_SQL,
                    event.provider,
                    event.id,
                    event.type,
                    int(data.order_id),
                    data.payment_id,
                    data.amount_cents,
                )
            )
            if not row["first"]:
                return await _stored_outcome(conn, event)
            match row["was"], row["payment_status"]:
                case None, _:
                    raise await _mismatch(conn, event)
                case "pending", "failed":
                    settlement = _Settlement("failed")
                case "pending", "succeeded" if row["paid_order_id"] is not None:
                    settlement = await _settle_paid(conn, res, row, event)
                case "pending", "succeeded":
                    settlement = await _settle_unheld(conn, shop, event, row["payment_row"])
                case final, _:
                    settlement = _Settlement(_final_outcome(final, event))
            await conn.execute(
                "UPDATE payment_events SET outcome = $3 WHERE provider = $1 AND event_id = $2",
                event.provider,
                event.id,
                settlement.outcome,
            )
    # committed
    if settlement.granted is not None:
        await shop.gate.commit(settlement.drop_id, settlement.granted)
    await settlement.outbox.flush(res.publisher)
    if settlement.stock_moved:
        await shop.stock.changed(settlement.drop_id, sold=True)
    if settlement.refund is not None:
        await refund_at_provider(shop, settlement.refund)
    settled = _settled_here.get()
    if settled is not None and settlement.order_status is not None:
        settled[int(event.data.order_id)] = settlement.order_status
    return WebhookAck(received=True, outcome=settlement.outcome)


def _final_outcome(status: str, event: PaymentEvent) -> PaymentOutcome:
    """An event about a payment already settled: the same news again is acknowledged; news that
    contradicts the final state is recorded and reported, never applied."""
    if (status, event.type) in (
        ("succeeded", "payment.succeeded"),
        ("refunded", "payment.succeeded"),
        ("failed", "payment.failed"),
    ):
        return "already_settled"
    log.warning(
        "provider %s: event %s says %s for payment %s of order %s, which is %s; "
        "recorded, not applied",
        event.provider,
        event.id,
        event.type,
        event.data.payment_id,
        event.data.order_id,
        status,
    )
    return "contradicts_final_state"


async def take_back(conn: Conn, order_id: int, cents: int) -> ProviderRefund | None:
    """In a refund's transaction: record `cents` of the order's payment as returned; the
    request to send to the provider after commit (None when there is nothing to send)."""
    return await provider_refunds.take_back(conn, order_id, cents)


async def refund_at_provider(shop: Shop, refund: ProviderRefund | None) -> None:
    """Return a refund's money at the provider (after the refund that took it back committed).
    A request the provider did not take stays `requested` for an operator to send again."""
    if refund is None:
        return
    if shop.payments is None:
        log.error(
            "refund %s of %d cents: no payment provider is configured; not sent",
            refund.refund_id,
            refund.amount_cents,
        )
        return
    await provider_refunds.send(shop.payments, refund)


async def _mismatch(conn: Conn, event: PaymentEvent) -> PaymentMismatch:
    """Why the event names no payment of ours (the transaction is about to roll back)."""
    data = event.data
    payment = await conn.fetchrow(
        """SELECT order_id, amount_cents FROM payments
           WHERE provider = $1 AND provider_payment_id = $2""",
        event.provider,
        data.payment_id,
    )
    if payment is None or str(payment["order_id"]) != data.order_id:
        return PaymentMismatch(f"no payment {data.payment_id} for order {data.order_id}")
    return PaymentMismatch(
        f"payment {data.payment_id} is for {payment['amount_cents']} cents, "
        f"the event says {data.amount_cents}"
    )


async def _settle_paid(
    conn: Conn, res: Resources, paid: asyncpg.Record, event: PaymentEvent
) -> _Settlement:
    """The held order is paid now (SETTLE_SQL moved it): post the commission, tell the room."""
    order_id = paid["paid_order_id"]
    settlement = _Settlement("paid", drop_id=paid["drop_id"], stock_moved=True, order_status="paid")
    await attribution.order_paid(
        conn,
        settlement.outbox,
        order_id=order_id,
        settings=res.settings,
        payment_fingerprint=event.data.fingerprint,
    )
    await outbound.order_paid(conn, order_id)
    _order_placed(settlement.outbox, paid, paid["now"])
    return settlement


def _order_placed(outbox: Outbox, order: asyncpg.Record, placed_at: datetime) -> None:
    """The room's ticker line for a paid order (the buyer masked)."""
    outbox.room(
        order["room_id"],
        OrderPlaced(
            drop_id=str(order["drop_id"]),
            product_id=str(order["product_id"]),
            buyer=mask_buyer(order["buyer_id"]),
            quantity=order["quantity"],
            placed_at=placed_at,
        ),
    )


async def _settle_unheld(
    conn: Conn, shop: Shop, event: PaymentEvent, payment_row: int
) -> _Settlement:
    """A payment that just succeeded, for an order no longer held: re-claim stock for an expired
    hold (or refund when there is none left); refund it when the order was settled by another
    payment (which only rows older than one live attempt per order can lead to)."""
    data = event.data
    order = must(
        await conn.fetchrow("SELECT * FROM orders WHERE id = $1 FOR UPDATE", int(data.order_id))
    )
    settlement = _Settlement("paid", drop_id=order["drop_id"])
    match order["status"]:
        case "held":
            # SETTLE_SQL moves a held order; no path leads back to held
            raise RuntimeError(f"order {order['id']} still held after its payment settled")
        case "expired":
            granted = await _reclaim(conn, shop, order)
            if granted is None:
                settlement.refund = await provider_refunds.refund_whole(conn, payment_row)
                return await _refund_unfillable(conn, order, settlement)
            settlement.granted = granted
            settlement.outcome = "paid_after_expiry"
        case _:
            # this payment is not the one that paid the order: give its money back
            settlement.refund = await provider_refunds.refund_whole(conn, payment_row)
            settlement.outcome = "duplicate_payment_refunded"
            return settlement
    placed_at = await conn.fetchval(
        "UPDATE orders SET status = 'paid', paid_at = now() WHERE id = $1 RETURNING paid_at",
        order["id"],
    )
    await attribution.order_paid(
        conn,
        settlement.outbox,
        order_id=order["id"],
        settings=shop.res.settings,
        payment_fingerprint=data.fingerprint,
    )
    await outbound.order_paid(conn, order["id"])
    settlement.stock_moved = True
    settlement.order_status = "paid"
    _order_placed(settlement.outbox, order, placed_at)
    return settlement


async def _reclaim(conn: Conn, shop: Shop, order: asyncpg.Record) -> Granted | None:
    """A payment for an expired hold: take free units again, through the gate so nobody else is
    handed them, and claim them in PostgreSQL. None when there are not enough."""
    gate = shop.gate
    drop_id, buyer_id, quantity = order["drop_id"], order["buyer_id"], order["quantity"]
    outcome = await gate.acquire(drop_id, buyer_id, quantity, mode="late")
    if isinstance(outcome, Absent):
        await gate.build(shop.res.pool, drop_id)
        outcome = await gate.acquire(drop_id, buyer_id, quantity, mode="late")
    if not isinstance(outcome, Granted):
        return None
    try:
        async with conn.transaction():  # a savepoint: a refusal leaves the rest intact
            await conn.execute(
                """INSERT INTO stock_claims (drop_id, unit_no, order_id, state)
                   SELECT $1, unnest($2::integer[]), $3, 'sold'""",
                drop_id,
                outcome.units,
                order["id"],
            )
            await conn.execute(
                """INSERT INTO drop_buyers (drop_id, buyer_id, per_buyer_limit, live_units)
                   SELECT id, $2, per_buyer_limit, $3 FROM drops WHERE id = $1
                   ON CONFLICT (drop_id, buyer_id)
                   DO UPDATE SET live_units = drop_buyers.live_units + EXCLUDED.live_units""",
                drop_id,
                buyer_id,
                quantity,
            )
    except (asyncpg.UniqueViolationError, asyncpg.CheckViolationError) as exc:
        log.info("order %d: expired hold cannot be re-claimed: %s", order["id"], exc)
        await gate.release(drop_id, buyer_id, outcome.units, granted=outcome)
        return None
    except BaseException:
        await gate.release(drop_id, buyer_id, outcome.units, granted=outcome)
        raise
    return outcome


async def _refund_unfillable(
    conn: Conn,
    order: asyncpg.Record,
    settlement: _Settlement,
) -> _Settlement:
    """The hold expired and its stock is gone: the order is refunded in full, automatically."""
    reason = "hold expired before payment and the drop has no stock left"
    refunded = must(
        await conn.fetchrow(
            """UPDATE orders SET status = 'refunded', paid_at = now(), refunded_at = now(),
                                 refunded_units = quantity, refunded_cents = amount_cents,
                                 refund_reason = $2
               WHERE id = $1 RETURNING *""",
            order["id"],
            reason,
        )
    )
    refund = must(
        await conn.fetchrow(
            """INSERT INTO refunds (order_id, units, amount_cents, reason, requested_by)
               VALUES ($1, $2, $3, $4, 'system') RETURNING *""",
            order["id"],
            order["quantity"],
            order["amount_cents"],
            reason,
        )
    )
    await outbound.order_refunded(conn, refunded, refund)
    settlement.outcome = "refunded_no_stock"
    settlement.order_status = "refunded"
    return settlement
