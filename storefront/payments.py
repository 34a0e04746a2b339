"""Payments: the provider interface, the simulated dev provider, and the signed webhook.

A provider starts payments and later reports their outcome by calling
`POST /api/payments/webhook` with an event signed like Stripe's:

    Livesell-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

The HMAC key is derived from LIVESELL_SECRET. Signatures are compared in constant time and
refused when older than SIGNATURE_TOLERANCE_S (a captured request cannot be replayed later);
events are processed once per provider event id (a provider retrying changes nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Annotated, Literal, Protocol

import msgspec

from core.http import TEXT, Id
from storefront.errors import InvalidSignature

SIGNATURE_HEADER = "Livesell-Signature"
SIGNATURE_TOLERANCE_S = 300


class PaymentEventData(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    payment_id: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=TEXT)]
    order_id: Id
    amount_cents: Annotated[int, msgspec.Meta(ge=0, le=10**12)]
    # the provider's fingerprint of the card or wallet that paid, when it reports one: the
    # same instrument paying for a distributor's own orders and for orders credited to them
    # is a self-referral
    fingerprint: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=TEXT)] | None = (
        None
    )


class PaymentEvent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a provider posts to the webhook."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=TEXT)]
    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=TEXT)]
    type: Literal["payment.succeeded", "payment.failed"]
    # unix seconds
    created: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    data: PaymentEventData


def webhook_key(secret: str) -> bytes:
    """The webhook HMAC key: derived from the app secret, never the secret itself."""
    return hashlib.sha256(b"livesell payments webhook v1\0" + secret.encode()).digest()


def sign(key: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value for `body` (what a provider sends)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(key: bytes, body: bytes, header: str | None, now: float | None = None) -> None:
    """Raise InvalidSignature unless `header` signs `body` with `key`, recently."""
    if not header:
        raise InvalidSignature("missing")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        raise InvalidSignature("malformed") from None
    if abs((time.time() if now is None else now) - t) > SIGNATURE_TOLERANCE_S:
        raise InvalidSignature("stale")
    expected = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    # several v1 values are allowed (key rotation); any match counts, each compared in constant time
    if not any(hmac.compare_digest(expected, given) for given in parts.get("v1", [])):
        raise InvalidSignature("mismatch")


class Checkout(msgspec.Struct, frozen=True):
    order_id: int
    amount_cents: int
    buyer_id: str


class PaymentProvider(Protocol):
    """A payment provider: starts payments; reports outcomes later through the webhook."""

    name: str

    def new_payment_id(self) -> str:
        """The provider's id for a payment about to be started."""
        ...

    async def start(self, payment_id: str, checkout: Checkout) -> None:
        """Ask the provider to collect `checkout.amount_cents`. Its outcome arrives as a signed
        webhook event, possibly before this returns (the simulated provider) or much later."""
        ...

    async def refund(self, payment_id: str, amount_cents: int) -> None:
        """Return money for a payment (the order's refund already committed)."""
        ...


class WebhookSender(Protocol):
    async def __call__(self, body: bytes, signature: str) -> None: ...


class SimulatedProvider:
    """Dev mode's provider: approves every payment at once by posting a signed
    `payment.succeeded` event to the webhook handler, exactly as a real provider would."""

    name = "simulated"

    def __init__(self, key: bytes, send: WebhookSender) -> None:
        self._key = key
        self._send = send
        self.refunds: list[tuple[str, int]] = []

    def new_payment_id(self) -> str:
        return "sim_pay_" + secrets.token_hex(8)

    async def start(self, payment_id: str, checkout: Checkout) -> None:
        event = PaymentEvent(
            id="sim_evt_" + secrets.token_hex(8),
            provider=self.name,
            type="payment.succeeded",
            created=int(time.time()),
            data=PaymentEventData(
                payment_id=payment_id,
                order_id=str(checkout.order_id),
                amount_cents=checkout.amount_cents,
            ),
        )
        body = msgspec.json.encode(event)
        await self._send(body, sign(self._key, body))

    async def refund(self, payment_id: str, amount_cents: int) -> None:
        self.refunds.append((payment_id, amount_cents))
