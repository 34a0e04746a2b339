"""Coupons' wire types: what the routes accept and show, and the room events they publish."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from core.events import Event
from core.http import TEXT, Id

MAX_WINDOW_S = 30 * 86_400
CouponStatus = Literal["scheduled", "active", "gone", "ended"]


class NewCoupon(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Exactly one of `amount_off_cents` and `percent_off_bps`."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=120, pattern=TEXT)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    claim_duration_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW_S)]
    valid_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW_S)]
    amount_off_cents: Annotated[int, msgspec.Meta(ge=1, le=10**10)] | None = None
    percent_off_bps: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    min_spend_cents: Annotated[int, msgspec.Meta(ge=0, le=10**10)] = 0
    per_user_limit: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1
    claim_starts_in_s: Annotated[int, msgspec.Meta(ge=0, le=MAX_WINDOW_S)] = 0
    product_id: Id | None = None


class ClaimRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A claim has no options; the body may be empty."""


class CouponView(msgspec.Struct, kw_only=True):
    id: str
    room_id: str
    product_id: str | None
    title: str
    amount_off_cents: int | None
    percent_off_bps: int | None
    min_spend_cents: int
    quantity: int
    per_user_limit: int
    claim_starts_at: datetime
    claim_ends_at: datetime
    valid_s: int
    remaining: int
    status: CouponStatus


class CouponList(msgspec.Struct, kw_only=True):
    coupons: list[CouponView]


class ClaimView(msgspec.Struct, kw_only=True):
    claim_id: str
    coupon_id: str
    expires_at: datetime


class MyClaim(msgspec.Struct, kw_only=True):
    claim_id: str
    coupon_id: str
    room_id: str
    product_id: str | None
    title: str
    amount_off_cents: int | None
    percent_off_bps: int | None
    min_spend_cents: int
    claimed_at: datetime
    expires_at: datetime


class MyClaims(msgspec.Struct, kw_only=True):
    """The caller's claims not applied to a live order and not expired, soonest expiry first."""

    claims: list[MyClaim]


class CouponReleased(Event, tag="coupon.released"):
    coupon: CouponView
    remaining: int


class CouponRemaining(Event, tag="coupon.remaining"):
    coalesce: ClassVar[bool] = True

    coupon_id: str
    quantity: int
    remaining: int

    def coalesce_key(self) -> str:
        return f"coupon.remaining:{self.coupon_id}"
