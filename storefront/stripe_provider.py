"""Stripe through its official SDK: a PaymentIntent per payment (confirmed by Stripe.js in the
buyer's page), refunds against it, and webhook events verified by the SDK (`Stripe-Signature`).

Livesell's payment id travels as the PaymentIntent's metadata and as the idempotency key of its
creation, so a retried or repeated start gets the same PaymentIntent back; a refund's id is the
idempotency key of the refund and its metadata, so a retried refund returns the money once.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Literal

import msgspec
import stripe

from core.payment_settings import StripeSettings
from storefront.errors import InvalidSignature
from storefront.payments import (
    STRIPE_SIGNATURE_HEADER,
    Checkout,
    ClientAction,
    EventType,
    PaymentEvent,
    PaymentEventData,
    ProviderRefund,
    Started,
    is_order_id,
)
from storefront.providers import Notice

# how old a signed event may be (Stripe's SDK default): a captured one cannot be replayed later
TOLERANCE_S = 300


class _Metadata(msgspec.Struct, kw_only=True):
    livesell_payment_id: str | None = None
    livesell_refund_id: str | None = None
    order_id: str | None = None


class _Object(msgspec.Struct, kw_only=True):
    """The fields livesell reads of a PaymentIntent or a Refund."""

    id: str
    object: str
    amount: int = 0
    status: str | None = None
    metadata: _Metadata = msgspec.field(default_factory=_Metadata)


class _Data(msgspec.Struct, kw_only=True):
    object: _Object


class _Event(msgspec.Struct, kw_only=True):
    id: str
    type: str
    created: int
    data: _Data


_PAYMENT_TYPES: dict[str, EventType] = {
    "payment_intent.succeeded": "payment.succeeded",
    # a failed attempt leaves the PaymentIntent open for another (Stripe.js retries with the
    # same client secret): only a canceled one has failed for good
    "payment_intent.canceled": "payment.failed",
}
_REFUND_STATUSES: dict[str, EventType] = {
    "succeeded": "refund.succeeded",
    "failed": "refund.failed",
    "canceled": "refund.failed",
}


class StripeProvider:
    name = "stripe"

    def __init__(self, config: StripeSettings) -> None:
        self._config = config
        self._http = stripe.HTTPXClient()
        self._client = stripe.StripeClient(
            config.secret_key,
            base_addresses={"api": config.api_base} if config.api_base else None,
            http_client=self._http,
            max_network_retries=2,
        )

    async def aclose(self) -> None:
        await self._http.close_async()

    def new_payment_id(self) -> str:
        return "ls_pay_" + secrets.token_hex(12)

    async def start(self, payment_id: str, checkout: Checkout) -> Started:
        intent = await self._client.v1.payment_intents.create_async(
            params={
                "amount": checkout.amount_cents,
                "currency": self._config.currency,
                "automatic_payment_methods": {"enabled": True},
                "metadata": {
                    "livesell_payment_id": payment_id,
                    "order_id": str(checkout.order_id),
                },
            },
            options={"idempotency_key": payment_id},
        )
        return Started(
            action=ClientAction(
                flow="stripe",
                client_secret=intent.client_secret,
                publishable_key=self._config.publishable_key,
            ),
            reference=intent.id,
        )

    async def resume(self, payment_id: str, checkout: Checkout) -> Started:
        # the same idempotency key: Stripe answers with the PaymentIntent it created then
        return await self.start(payment_id, checkout)

    async def refund(self, refund: ProviderRefund) -> None:
        if refund.reference is None:
            raise RuntimeError(f"payment {refund.payment_id} has no PaymentIntent id")
        await self._client.v1.refunds.create_async(
            params={
                "payment_intent": refund.reference,
                "amount": refund.amount_cents,
                "metadata": {
                    "livesell_refund_id": refund.refund_id,
                    "livesell_payment_id": refund.payment_id,
                    "order_id": str(refund.order_id),
                },
            },
            options={"idempotency_key": refund.refund_id},
        )

    async def decode_notification(self, headers: Mapping[str, str], body: bytes) -> Notice | None:
        signature = headers.get(STRIPE_SIGNATURE_HEADER)
        if not signature:
            raise InvalidSignature("missing")
        try:
            self._client.construct_event(body, signature, self._config.webhook_secret, TOLERANCE_S)
        except stripe.SignatureVerificationError as exc:
            raise InvalidSignature(_reason(exc)) from None
        except ValueError:
            raise InvalidSignature("malformed") from None
        try:
            event = msgspec.json.decode(body, type=_Event)
        except msgspec.ValidationError:
            return None  # an event of a shape livesell does not read: not about its payments
        return _notice(event)


def _reason(exc: stripe.SignatureVerificationError) -> Literal["stale", "malformed", "mismatch"]:
    message = str(exc).lower()
    if "tolerance" in message:
        return "stale"
    if "unable to extract" in message:
        return "malformed"
    return "mismatch"


def _notice(event: _Event) -> Notice | None:
    obj = event.data.object
    meta = obj.metadata
    if meta.livesell_payment_id is None or not is_order_id(meta.order_id):
        return None  # not a payment livesell started
    if obj.object == "payment_intent" and event.type in _PAYMENT_TYPES:
        kind = _PAYMENT_TYPES[event.type]
        refund_id = None
    elif obj.object == "refund":
        if meta.livesell_refund_id is None or obj.status not in _REFUND_STATUSES:
            return None  # still pending at Stripe: its final event follows
        kind = _REFUND_STATUSES[obj.status]
        refund_id = meta.livesell_refund_id
    else:
        return None
    livesell_event = PaymentEvent(
        id=event.id,
        provider="stripe",
        type=kind,
        created=event.created,
        data=PaymentEventData(
            payment_id=meta.livesell_payment_id,
            order_id=str(meta.order_id),
            amount_cents=obj.amount,
            refund_id=refund_id,
        ),
    )
    return Notice(livesell_event, provider_refund_id=obj.id if refund_id else None)
