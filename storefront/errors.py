"""Storefront refusals. Each carries its data; core.http maps them to the JSON error shape."""

from __future__ import annotations

from core.errors import (
    BadRequest,
    Conflict,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unprocessable,
)


class SkuTaken(Conflict):
    code = "sku_taken"

    def __init__(self, sku: str) -> None:
        super().__init__(f"a product with sku {sku!r} already exists", sku=sku)


class DropInProgress(Conflict):
    code = "drop_in_progress"

    def __init__(self, room_id: int, drop_id: int) -> None:
        super().__init__(
            f"room {room_id} already has drop {drop_id} scheduled or live; close it first",
            drop_id=str(drop_id),
        )


class DropNotFound(NotFound):
    code = "drop_not_found"

    def __init__(self, drop_id: int) -> None:
        super().__init__(f"no drop {drop_id}", drop_id=str(drop_id))


class DropNotActive(Conflict):
    code = "drop_not_active"

    def __init__(self, drop_id: int, status: str) -> None:
        super().__init__(
            f"drop {drop_id} is {status}, not live", drop_id=str(drop_id), status=status
        )


class SoldOut(Conflict):
    code = "sold_out"

    def __init__(self, drop_id: int, remaining: int) -> None:
        message = f"drop {drop_id} is sold out"
        if remaining > 0:
            message = f"drop {drop_id} has only {remaining} left"
        super().__init__(message, drop_id=str(drop_id), remaining=remaining)


class LimitReached(TooManyRequests):
    code = "limit_reached"

    def __init__(self, drop_id: int, per_buyer_limit: int, holding: int) -> None:
        super().__init__(
            f"at most {per_buyer_limit} per buyer for drop {drop_id}; you hold {holding}",
            drop_id=str(drop_id),
            per_buyer_limit=per_buyer_limit,
            holding=holding,
        )


class IdempotencyKeyRequired(BadRequest):
    code = "idempotency_key_required"

    def __init__(self) -> None:
        super().__init__("send an Idempotency-Key header (1 to 255 printable characters)")


class IdempotencyMismatch(Unprocessable):
    code = "idempotency_mismatch"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request", key=key
        )


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"

    def __init__(self, key: str) -> None:
        super().__init__(
            f"a request with Idempotency-Key {key!r} is still being processed; retry shortly",
            key=key,
        )


class GateBusy(ServiceUnavailable):
    code = "unavailable"

    def __init__(self, drop_id: int) -> None:
        super().__init__(
            f"stock for drop {drop_id} is being rebuilt; retry shortly", drop_id=str(drop_id)
        )


class OrderStateConflict(Conflict):
    """The order's status refuses the action (pay a refunded order, deliver a held one...)."""

    code = "order_state"

    def __init__(self, order_id: int, status: str, action: str) -> None:
        super().__init__(
            f"order {order_id} is {status}; cannot {action}",
            order_id=str(order_id),
            status=status,
        )


class ReturnWindowClosed(Conflict):
    code = "return_window_closed"

    def __init__(self, order_id: int) -> None:
        super().__init__(
            f"the return window of order {order_id} has passed; ask support",
            order_id=str(order_id),
        )


class RefundTooLarge(Unprocessable):
    code = "refund_too_large"

    def __init__(self, order_id: int, refundable_units: int) -> None:
        super().__init__(
            f"order {order_id} has {refundable_units} refundable units",
            field="quantity",
            refundable_units=refundable_units,
        )


class InvalidSignature(BadRequest):
    code = "invalid_signature"

    def __init__(self, reason: str) -> None:
        super().__init__(f"webhook signature rejected: {reason}", reason=reason)


class PaymentMismatch(Unprocessable):
    code = "payment_mismatch"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class PaymentsUnavailable(ServiceUnavailable):
    code = "payments_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "no payment provider is configured: set LIVESELL_PAYMENTS to wechatpay or stripe "
            "with its credentials (docs/payments.md), or LIVESELL_DEV=1 for the simulated one"
        )


class ProviderNotConfigured(NotFound):
    """A provider's notification route, when that provider is not the one configured."""

    code = "provider_not_configured"

    def __init__(self, provider: str) -> None:
        super().__init__(
            f"{provider} is not the configured payment provider (LIVESELL_PAYMENTS)",
            provider=provider,
        )


class ProviderUnavailable(ServiceUnavailable):
    """The payment provider did not take the payment (down, or refused the request); the
    attempt is recorded as failed and the buyer may pay again."""

    code = "provider_unavailable"

    def __init__(self, provider: str) -> None:
        super().__init__(f"the payment provider {provider} did not answer; pay again in a moment")


class BuyRateLimited(TooManyRequests):
    """Too many buy attempts from one user or one address in a short window (not the per-buyer
    limit of a drop, which is `limit_reached`)."""

    code = "rate_limited"

    def __init__(self, subject: str, retry_after_s: int) -> None:
        super().__init__(
            f"too many buy attempts from this {subject}; retry in {retry_after_s} s",
            retry_after_s=retry_after_s,
        )


class CouponNotFound(NotFound):
    code = "coupon_not_found"

    def __init__(self, coupon_id: int) -> None:
        super().__init__(f"no coupon {coupon_id}", coupon_id=str(coupon_id))


class CouponInvalid(Unprocessable):
    """A coupon's terms that cannot be accepted (both or neither kind of discount...)."""

    code = "coupon_invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class CouponsGone(Conflict):
    code = "coupons_gone"

    def __init__(self, coupon_id: int) -> None:
        super().__init__(f"coupon {coupon_id} is all claimed", coupon_id=str(coupon_id))


class CouponNotActive(Conflict):
    code = "coupon_not_active"

    def __init__(self, coupon_id: int, status: str) -> None:
        super().__init__(
            f"coupon {coupon_id} is {status}: not claimable now",
            coupon_id=str(coupon_id),
            status=status,
        )


class CouponLimitReached(TooManyRequests):
    """The per-user limit of a coupon (the same situation as a drop's per-buyer limit)."""

    code = "limit_reached"

    def __init__(self, coupon_id: int, per_user_limit: int) -> None:
        super().__init__(
            f"at most {per_user_limit} per user for coupon {coupon_id}",
            coupon_id=str(coupon_id),
            per_user_limit=per_user_limit,
        )


class CouponGateBusy(ServiceUnavailable):
    code = "unavailable"

    def __init__(self, coupon_id: int) -> None:
        super().__init__(
            f"coupon {coupon_id} is being rebuilt; retry shortly", coupon_id=str(coupon_id)
        )


class CouponClaimNotFound(NotFound):
    """No such claim among the buyer's own."""

    code = "coupon_claim_not_found"

    def __init__(self, claim_id: int) -> None:
        super().__init__(f"you hold no coupon claim {claim_id}", claim_id=str(claim_id))


class CouponClaimUsed(Conflict):
    code = "coupon_claim_used"

    def __init__(self, claim_id: int) -> None:
        super().__init__(
            f"coupon claim {claim_id} is applied to another order", claim_id=str(claim_id)
        )


class CouponNotApplicable(Unprocessable):
    """The claim exists and is the buyer's, but not for this order: expired, another room or
    product, or below the minimum spend."""

    code = "coupon_not_applicable"

    def __init__(self, claim_id: int, reason: str) -> None:
        super().__init__(
            f"coupon claim {claim_id} does not apply: {reason}",
            claim_id=str(claim_id),
            reason=reason,
        )
