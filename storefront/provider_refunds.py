"""Returning money at the provider: the request written with the refund that took it back, sent
after commit under livesell's refund id, and settled once by the provider's notification."""

from __future__ import annotations

import logging

from core.db import Conn
from storefront.conn import must
from storefront.errors import PaymentMismatch
from storefront.payments import PaymentEvent, PaymentProvider, ProviderRefund, new_refund_id
from storefront.views import PaymentOutcome

log = logging.getLogger("livesell.storefront.refunds")

# Record a refund request for a payment livesell just took `cents` back from (in the same
# transaction); the row the provider's refund names. $1 payment row, $2 cents, $3 refund id
REQUEST_SQL = """
WITH requested AS (
    INSERT INTO payment_refunds (refund_id, payment_id, amount_cents) VALUES ($3, $1, $2)
    RETURNING refund_id
)
SELECT requested.refund_id, p.provider, p.provider_payment_id, p.provider_reference,
       p.order_id, p.amount_cents AS payment_amount_cents
FROM requested, payments AS p WHERE p.id = $1
"""


async def request_refund(conn: Conn, payment_row: int, cents: int) -> ProviderRefund:
    """In the transaction that took `cents` back from a payment: the request to send after
    commit."""
    row = must(await conn.fetchrow(REQUEST_SQL, payment_row, cents, new_refund_id()))
    return ProviderRefund(
        refund_id=row["refund_id"],
        provider=row["provider"],
        payment_id=row["provider_payment_id"],
        reference=row["provider_reference"],
        order_id=row["order_id"],
        amount_cents=cents,
        payment_amount_cents=row["payment_amount_cents"],
    )


# Give back part or all of an order's payment, in the refund's own transaction: the payment
# records it (and is refunded once all of it is back), so no later refund sends the same money
# again. $1 order, $2 cents
TAKE_BACK_SQL = """
UPDATE payments
SET refunded_cents = refunded_cents + $2,
    status = CASE WHEN refunded_cents + $2 = amount_cents THEN 'refunded' ELSE status END
WHERE order_id = $1 AND status = 'succeeded'
RETURNING id
"""


async def take_back(conn: Conn, order_id: int, cents: int) -> ProviderRefund | None:
    """In a refund's transaction: record `cents` of the order's payment as returned, and the
    request that returns them at the provider after commit; None when there is nothing to send."""
    if cents <= 0:
        return None
    payment_row: int | None = await conn.fetchval(TAKE_BACK_SQL, order_id, cents)
    if payment_row is None:
        log.error("order %d: refund of %d cents finds no succeeded payment", order_id, cents)
        return None
    return await request_refund(conn, payment_row, cents)


async def refund_whole(conn: Conn, payment_row: int) -> ProviderRefund | None:
    """A succeeded payment that pays for nothing: all of it goes back."""
    cents: int | None = await conn.fetchval(
        """UPDATE payments SET status = 'refunded', refunded_cents = amount_cents
           WHERE id = $1 AND status = 'succeeded' RETURNING amount_cents""",
        payment_row,
    )
    if not cents:
        return None
    return await request_refund(conn, payment_row, cents)


async def send(provider: PaymentProvider, refund: ProviderRefund | None) -> None:
    """Ask the provider to return a refund's money (after the refund committed). A request the
    provider did not take stays `requested`, with its id, for an operator to send again."""
    if refund is None:
        return
    if provider.name != refund.provider:
        log.error(
            "refund %s of %d cents is for a %s payment, but the provider is %s; not sent",
            refund.refund_id,
            refund.amount_cents,
            refund.provider,
            provider.name,
        )
        return
    try:
        await provider.refund(refund)
    except Exception as exc:  # noqa: BLE001 - recorded in PostgreSQL; an operator retries
        log.error(
            "provider refund %s of %s (%d cents) failed: %r",
            refund.refund_id,
            refund.payment_id,
            refund.amount_cents,
            exc,
        )


# Record a provider's refund news and settle the request it names, in one statement: nothing
# changes unless the event is new and names a request exactly (refund id, payment, amount, and
# the order when the event says it); only a requested refund moves.
# $1 provider, $2 event id, $3 event type, $4 order id as the event says (0: it does not say),
# $5 livesell's payment id, $6 amount, $7 refund id, $8 the provider's refund id
SETTLE_REFUND_SQL = """
WITH target AS (
    SELECT r.id, r.status, p.order_id FROM payment_refunds AS r
    JOIN payments AS p ON p.id = r.payment_id
    WHERE r.refund_id = $7 AND p.provider = $1 AND p.provider_payment_id = $5
      AND r.amount_cents = $6 AND ($4::bigint = 0 OR p.order_id = $4::bigint)
), event AS (
    INSERT INTO payment_events (provider, event_id, event_type, order_id, outcome)
    VALUES ($1, $2, $3, coalesce((SELECT order_id FROM target), nullif($4::bigint, 0)),
            'processing')
    ON CONFLICT (provider, event_id) DO NOTHING
    RETURNING true AS first
), refund AS (
    SELECT id, status FROM payment_refunds
    WHERE id = (SELECT id FROM target) AND EXISTS (SELECT 1 FROM event)
    FOR UPDATE
), settled AS (
    UPDATE payment_refunds
    SET status = CASE WHEN $3 = 'refund.failed' THEN 'failed' ELSE 'succeeded' END,
        settled_at = now(), provider_refund_id = coalesce($8, provider_refund_id)
    WHERE id = (SELECT id FROM refund WHERE status = 'requested')
    RETURNING status
)
SELECT EXISTS (SELECT 1 FROM event) AS first, refund.status AS was, settled.status AS settled
FROM (VALUES (1)) AS one LEFT JOIN refund ON true LEFT JOIN settled ON true
"""


async def settle_refund(
    conn: Conn, event: PaymentEvent, provider_refund_id: str | None = None
) -> tuple[bool, PaymentOutcome]:
    """In a transaction: settle the refund request `event` names. (first time seen, outcome);
    PaymentMismatch when it names no request of ours."""
    data = event.data
    if data.refund_id is None:
        raise PaymentMismatch(f"refund event {event.id} names no refund_id")
    row = must(
        await conn.fetchrow(
            SETTLE_REFUND_SQL,
            event.provider,
            event.id,
            event.type,
            int(data.order_id),
            data.payment_id,
            data.amount_cents,
            data.refund_id,
            provider_refund_id,
        )
    )
    if not row["first"]:
        return False, "already_settled"
    match row["was"], row["settled"]:
        case None, _:
            raise PaymentMismatch(
                f"no refund {data.refund_id} of {data.amount_cents} cents "
                f"for payment {data.payment_id}"
            )
        case "requested", "succeeded":
            return True, "refund_succeeded"
        case "requested", _:
            log.error(
                "provider %s: refund %s of payment %s (%d cents) failed; the buyer has not "
                "been paid back",
                event.provider,
                data.refund_id,
                data.payment_id,
                data.amount_cents,
            )
            return True, "refund_failed"
        case final, _ if final == event.type.removeprefix("refund."):
            return True, "already_settled"
        case final, _:
            log.warning(
                "provider %s: event %s says %s for refund %s, which is %s; recorded, not applied",
                event.provider,
                event.id,
                event.type,
                data.refund_id,
                final,
            )
            return True, "contradicts_final_state"
