"""What storefront shows the outside and accepts from it: the wire types of its HTTP routes.

Outbound views carry ids as strings. Inbound bodies forbid unknown fields, so a typo is a 422
naming the field rather than a silently ignored value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from attribution import ReferralCode
from core.http import TEXT, Id
from storefront.payments import PayFlow, WeChatJsapiParams

DropStatus = Literal["scheduled", "live", "sold_out", "closed", "ended"]
OrderStatus = Literal["held", "paid", "delivered", "expired", "refunded"]

MAX_QUANTITY = 100_000
MAX_STARTS_IN_S = 7 * 86_400
MAX_DURATION_S = 7 * 86_400
PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


class ProductView(msgspec.Struct, kw_only=True):
    id: str
    sku: str
    title: str
    price_cents: int
    commission_bps: int
    image_url: str | None = None


class DropView(msgspec.Struct, kw_only=True):
    id: str
    room_id: str
    product_id: str
    price_cents: int
    quantity: int
    per_buyer_limit: int
    starts_at: datetime
    ends_at: datetime
    status: DropStatus
    remaining: int
    sold: int
    held: int


class OrderView(msgspec.Struct, kw_only=True):
    id: str
    drop_id: str
    room_id: str
    product_id: str
    buyer_id: str
    quantity: int
    unit_price_cents: int
    amount_cents: int
    commission_bps: int
    status: OrderStatus
    refunded_units: int
    refunded_cents: int
    hold_expires_at: datetime
    created_at: datetime
    paid_at: datetime | None = None
    delivered_at: datetime | None = None
    refunded_at: datetime | None = None
    expired_at: datetime | None = None
    # delivered orders: until when the buyer may return them
    return_window_ends_at: datetime | None = None
    refund_reason: str | None = None
    # what a coupon claim took off price × quantity (amount_cents is after it)
    discount_cents: int = 0
    coupon_claim_id: str | None = None


class ProductPage(msgspec.Struct, kw_only=True):
    """Products newest first; `next_before` is the `before` of the next (older) page, null on
    the last page."""

    products: list[ProductView]
    next_before: str | None


# --- inbound bodies ---

Cents = Annotated[int, msgspec.Meta(ge=0, le=10**12)]


class NewProduct(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=TEXT)]
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=TEXT)]
    price_cents: Cents
    commission_bps: Annotated[int, msgspec.Meta(ge=0, le=10_000)]
    # printable ASCII without spaces (`\S` differs between Python and ECMA-262 regexes)
    image_url: (
        Annotated[str, msgspec.Meta(max_length=2000, pattern=r"^https?://[!-~]+$(?!\n)")] | None
    ) = None


class NewDrop(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    product_id: Id
    price_cents: Cents
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
    per_buyer_limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
    starts_in_s: Annotated[int, msgspec.Meta(ge=0, le=MAX_STARTS_IN_S)] = 0
    duration_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_DURATION_S)] = 300


class BuyRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)] = 1
    # one of the buyer's coupon claims (GET /api/me/coupons), applied to this order
    coupon_claim_id: Id | None = None
    # a distributor's referral code: credits that distributor for this order
    referral_code: ReferralCode | None = None


class PayRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Optional: what the buyer's client knows that a provider needs. Inside WeChat, the buyer's
    openid for the merchant's app id makes a WeChat Pay payment a JSAPI one (H5 otherwise)."""

    openid: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=TEXT)] | None = None


class RefundRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # units to refund; absent = everything not yet refunded
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=500, pattern=TEXT)] | None = None


class ProductQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`GET /api/products` query: `mine=1` keeps the caller's own products; `before` continues
    from the previous page's `next_before`."""

    mine: bool = False
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE
    before: Id | None = None


# --- outbound results ---


class BuyResult(msgspec.Struct, kw_only=True):
    order_id: str
    status: Literal["held"]
    hold_expires_at: datetime
    amount_cents: int


class PaymentStarted(msgspec.Struct, kw_only=True):
    order_id: str
    payment_id: str
    provider: str
    # the order after the provider answered (the simulated provider settles at once)
    order_status: OrderStatus
    # what the buyer's page does next (docs/payments.md): nothing ("none": the simulated
    # provider), WeixinJSBridge with `wechat_jsapi`, a redirect to `h5_url`, or Stripe.js
    # confirming the PaymentIntent of `client_secret` with `publishable_key`
    flow: PayFlow = "none"
    wechat_jsapi: WeChatJsapiParams | None = None
    h5_url: str | None = None
    client_secret: str | None = None
    publishable_key: str | None = None


# What settling a provider event did: paid a held order; paid an order whose hold had expired
# (stock re-claimed); refunded it when no stock was left; refunded a payment that did not pay
# its order; recorded a failed payment; acknowledged news about a payment already settled; or
# recorded, without applying, an event that contradicts a payment's final state.
PaymentOutcome = Literal[
    "paid",
    "paid_after_expiry",
    "refunded_no_stock",
    "duplicate_payment_refunded",
    "failed",
    "already_settled",
    "contradicts_final_state",
    "refund_succeeded",
    "refund_failed",
    "ignored",
]


class WebhookAck(msgspec.Struct, kw_only=True):
    received: bool
    duplicate: bool = False
    outcome: PaymentOutcome


class DropSales(msgspec.Struct, kw_only=True):
    """One drop's paid orders: `units` still sold (refunded units left out), money in cents."""

    drop_id: str
    product_id: str
    orders: int
    units: int
    paid_cents: int
    refunded_cents: int
    revenue_cents: int


class RoomSales(msgspec.Struct, kw_only=True):
    """A room's paid orders in all and per drop (newest first); revenue = paid − refunded."""

    room_id: str
    orders: int
    units: int
    paid_cents: int
    refunded_cents: int
    revenue_cents: int
    drops: list[DropSales]


# --- what the shipped providers post (their own formats; described for the OpenAPI document) ---


class WeChatPayResource(msgspec.Struct, kw_only=True):
    algorithm: Literal["AEAD_AES_256_GCM"]
    ciphertext: str
    nonce: str
    associated_data: str = ""
    original_type: str = ""


class WeChatPayNotification(msgspec.Struct, kw_only=True):
    """A WeChat Pay API v3 notification: signed in the Wechatpay-* headers, its resource
    encrypted with the merchant's APIv3 key (TRANSACTION.SUCCESS, REFUND.SUCCESS, ...)."""

    id: str
    create_time: str
    event_type: str
    resource_type: Literal["encrypt-resource"]
    resource: WeChatPayResource
    summary: str = ""


class StripeEventData(msgspec.Struct, kw_only=True):
    object: dict[str, Any]


class StripeEvent(msgspec.Struct, kw_only=True):
    """A Stripe event, signed in the Stripe-Signature header (payment_intent.succeeded,
    payment_intent.canceled, refund.updated, ...)."""

    id: str
    object: Literal["event"]
    type: str
    created: int
    data: StripeEventData
