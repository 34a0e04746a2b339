"""Payments: the provider interface, the simulated dev provider, and livesell's signed webhook.

A provider starts payments and later reports their outcome. Providers livesell ships (WeChat Pay,
Stripe: storefront/wechatpay_provider.py, storefront/stripe_provider.py) are reached through
their SDKs and report on routes of their own, verified with their SDK; any other provider reports
by calling `POST /api/payments/webhook` with an event signed like Stripe's:

    Livesell-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

The HMAC key is derived from LIVESELL_SECRET. Signatures are compared in constant time and
refused when older than SIGNATURE_TOLERANCE_S (a captured request cannot be replayed later);
events are processed once per provider event id (a provider retrying changes nothing). Every
route decodes its provider's news into one `PaymentEvent`, and one state machine settles it.
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
# the shipped providers' signature headers
STRIPE_SIGNATURE_HEADER = "Stripe-Signature"
WECHATPAY_HEADERS = (
    "Wechatpay-Signature",
    "Wechatpay-Timestamp",
    "Wechatpay-Nonce",
    "Wechatpay-Serial",
    "Wechatpay-Signature-Type",
)


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
    # refund events: livesell's id of the refund (sent to the provider when it was requested)
    refund_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=TEXT)] | None = None


EventType = Literal["payment.succeeded", "payment.failed", "refund.succeeded", "refund.failed"]


class PaymentEvent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a provider posts to the webhook."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=TEXT)]
    provider: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=TEXT)]
    type: EventType
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


class Checkout(msgspec.Struct, frozen=True, kw_only=True):
    order_id: int
    amount_cents: int
    buyer_id: str
    # what the buyer's client said about itself: WeChat's openid of the buyer (inside WeChat, for
    # a JSAPI payment) and the buyer's address (WeChat's H5 payments need it)
    openid: str | None = None
    client_ip: str | None = None


class WeChatJsapiParams(msgspec.Struct, frozen=True, kw_only=True):
    """The arguments of WeixinJSBridge `getBrandWCPayRequest` / `wx.requestPayment`, signed."""

    appId: str
    timeStamp: str
    nonceStr: str
    package: str
    signType: str
    paySign: str


PayFlow = Literal["none", "wechat_jsapi", "wechat_h5", "stripe"]


class ClientAction(msgspec.Struct, frozen=True, kw_only=True):
    """What the buyer's page does to pay: nothing (the simulated provider settles at once), call
    WeixinJSBridge with `wechat_jsapi`, go to `h5_url`, or confirm a Stripe PaymentIntent."""

    flow: PayFlow = "none"
    wechat_jsapi: WeChatJsapiParams | None = None
    h5_url: str | None = None
    client_secret: str | None = None
    publishable_key: str | None = None


class Started(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's answer to `start`: the buyer's next step, and the provider's own id for the
    payment when it assigns one (a Stripe PaymentIntent)."""

    action: ClientAction = ClientAction()
    reference: str | None = None


class ProviderRefund(msgspec.Struct, frozen=True, kw_only=True):
    """Money to return at the provider. `refund_id` is livesell's, sent as the provider's
    idempotency key (Stripe) or out_refund_no (WeChat Pay): a retried request returns it once."""

    refund_id: str
    provider: str
    payment_id: str
    reference: str | None
    order_id: int
    amount_cents: int
    payment_amount_cents: int


class PaymentProvider(Protocol):
    """A payment provider: starts payments; reports outcomes later (through its webhook)."""

    name: str

    def new_payment_id(self) -> str:
        """Livesell's id for a payment about to be started (the provider's out_trade_no)."""
        ...

    async def start(self, payment_id: str, checkout: Checkout) -> Started | None:
        """Ask the provider to collect `checkout.amount_cents`. Its outcome arrives as a
        webhook event, possibly before this returns (the simulated provider) or much later."""
        ...

    async def resume(self, payment_id: str, checkout: Checkout) -> Started | None:
        """The buyer's next step for a payment already started (a second pay while it is
        pending); None when there is nothing more for the buyer to do."""
        ...

    async def refund(self, refund: ProviderRefund) -> None:
        """Ask the provider to return money (the order's refund already committed); the outcome
        arrives as a `refund.succeeded` or `refund.failed` event."""
        ...


class WebhookSender(Protocol):
    async def __call__(self, body: bytes, signature: str) -> None: ...


def is_order_id(value: str | None) -> bool:
    """Whether a provider's copy of an order id is one livesell could have sent."""
    return value is not None and 0 < len(value) <= 18 and value.isascii() and value.isdigit()


def new_refund_id() -> str:
    """Livesell's id for a refund at the provider (WeChat's out_refund_no: at most 64 of
    [0-9A-Za-z_-|*@])."""
    return "lsr_" + secrets.token_hex(12)


class SimulatedProvider:
    """Dev mode's provider: approves every payment and every refund at once by posting a signed
    event to the webhook handler, exactly as a provider livesell does not ship would."""

    name = "simulated"

    def __init__(self, key: bytes, send: WebhookSender) -> None:
        self._key = key
        self._send = send
        self.refunds: list[ProviderRefund] = []

    def new_payment_id(self) -> str:
        return "sim_pay_" + secrets.token_hex(8)

    async def start(self, payment_id: str, checkout: Checkout) -> Started | None:
        await self._post("payment.succeeded", payment_id, checkout.order_id, checkout.amount_cents)
        return None

    async def resume(self, payment_id: str, checkout: Checkout) -> Started | None:
        return None

    async def refund(self, refund: ProviderRefund) -> None:
        self.refunds.append(refund)
        await self._post(
            "refund.succeeded",
            refund.payment_id,
            refund.order_id,
            refund.amount_cents,
            refund.refund_id,
        )

    async def _post(
        self,
        kind: EventType,
        payment_id: str,
        order_id: int,
        amount_cents: int,
        refund_id: str | None = None,
    ) -> None:
        event = PaymentEvent(
            id="sim_evt_" + secrets.token_hex(8),
            provider=self.name,
            type=kind,
            created=int(time.time()),
            data=PaymentEventData(
                payment_id=payment_id,
                order_id=str(order_id),
                amount_cents=amount_cents,
                refund_id=refund_id,
            ),
        )
        body = msgspec.json.encode(event)
        await self._send(body, sign(self._key, body))
