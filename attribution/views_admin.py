"""Wire types of the admin and operator routes: reviews, commission rules, withdrawals,
community analytics and room funnels."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from attribution.views import Id, Team
from core.http import TEXT

Bps = Annotated[int, msgspec.Meta(ge=0, le=10_000)]
Cents = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
Note = Annotated[str, msgspec.Meta(max_length=1000, pattern=TEXT)]
# an RFC 3339 time (the query's bounds)
When = Annotated[
    datetime,
    msgspec.Meta(
        extra_json_schema={
            "pattern": r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3])"
            r":[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]0[0-9]:00)$(?!\n)"
        }
    ),
]


# reviews


class ReviewQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    status: Literal["open", "approved", "rejected"] = "open"
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class ReviewDecision(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    decision: Literal["approve", "reject"]
    note: Note | None = None


class ReviewView(msgspec.Struct, kw_only=True):
    """A flagged order: why, and (once decided) who decided what. `commission_cents` is what
    is still pending on it."""

    order_id: str
    room_id: str
    buyer_id: str
    distributor_id: str
    distributor_user_id: str
    amount_cents: int
    commission_cents: int
    reasons: list[str]
    signals: dict[str, Any]
    status: Literal["open", "approved", "rejected"]
    flagged_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    note: str | None = None


class ReviewList(msgspec.Struct, kw_only=True):
    reviews: list[ReviewView]


# commission rules


class RateBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A rate (`commission_bps`) or a fixed amount per unit (`commission_cents`): exactly one."""

    product_id: Id | None = None
    commission_bps: Bps | None = None
    commission_cents: Cents | None = None


class ProductCommissionBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    commission_bps: Bps | None = None
    commission_cents: Cents | None = None


class RateView(msgspec.Struct, kw_only=True):
    distributor_id: str | None
    product_id: str | None
    commission_bps: int | None
    commission_cents: int | None
    updated_at: datetime | None = None


class RateList(msgspec.Struct, kw_only=True):
    distributor_id: str
    rates: list[RateView]


class Tier(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Team
    min_confirmed_gmv_cents: Cents
    bonus_bps: Bps


class TierList(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    tiers: Annotated[list[Tier], msgspec.Meta(max_length=50)]


# withdrawals


class WithdrawalBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    amount_cents: Annotated[int, msgspec.Meta(ge=1, le=10**12)]


class WithdrawalDecision(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    decision: Literal["approve", "reject"]
    note: Note | None = None


class WithdrawalView(msgspec.Struct, kw_only=True):
    id: str
    distributor_id: str
    amount_cents: int
    fee_cents: int
    net_cents: int
    status: Literal["requested", "approved", "paid", "rejected"]
    requested_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    note: str | None = None
    paid_at: datetime | None = None
    payout_batch_id: str | None = None


class WithdrawalList(msgspec.Struct, kw_only=True):
    """The caller's balance, what of it may still be withdrawn, and their withdrawals."""

    balance_cents: int
    reserved_cents: int
    available_cents: int
    minimum_cents: int
    fee_cents: int
    fee_bps: int
    withdrawals: list[WithdrawalView]


# analytics


class CommunityQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    team: Team | None = None
    # RFC 3339 times or dates; `from` inclusive, `to` exclusive, on paid_at
    from_: When | None = msgspec.field(default=None, name="from")
    to: When | None = None


class Cohort(msgspec.Struct, kw_only=True):
    month: str  # YYYY-MM of the buyers' first purchase (UTC)
    buyers: int
    orders: int
    gmv_cents: int
    ltv_cents: int


class Contribution(msgspec.Struct, kw_only=True):
    id: str | None  # distributor id (None for a team row)
    name: str | None  # distributor's user id, or the team (None: no team)
    orders: int
    buyers: int
    gmv_cents: int
    share_bps: int


class CommunityView(msgspec.Struct, kw_only=True):
    """Paid orders in the period (of the team's distributors when `team` is given), net of
    refunds. Ratios are computed from the integer totals: rates in basis points, money in whole
    cents rounded down, `purchase_frequency` to three decimals."""

    team: str | None
    members: int
    buyers: int
    orders: int
    gmv_cents: int
    refunded_cents: int
    repeat_buyers: int
    repeat_purchase_rate_bps: int
    purchase_frequency: float
    average_order_value_cents: int
    avg_repurchase_gap_s: int | None
    gmv_per_buyer_cents: int
    cohorts: list[Cohort]
    distributors: list[Contribution]
    teams: list[Contribution]


class FunnelView(msgspec.Struct, kw_only=True):
    room_id: str
    viewers: int
    link_clicks: int
    chat_posters: int
    coupon_claims: int
    buyers: int
    paid: int
    refunded: int


class WithdrawalQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    status: Literal["requested", "approved", "paid", "rejected"] = "requested"
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class WithdrawalQueue(msgspec.Struct, kw_only=True):
    withdrawals: list[WithdrawalView]
