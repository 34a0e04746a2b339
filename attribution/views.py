"""Attribution's wire types: request bodies (strict) and the views the API and dashboards send."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from core.http import NOT_BLANK, TEXT, Id

Team = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NOT_BLANK)]
ReferralCode = Annotated[
    str,
    msgspec.Meta(
        min_length=4,
        max_length=16,
        pattern=r"^[A-Za-z0-9]+$(?!\n)",
        description="a distributor's referral code (letters and digits, any case)",
    ),
]
LinkCode = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=TEXT)]
PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


class BecomeDistributor(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    team: Team | None = None


class DistributorView(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    team: str | None
    created_at: datetime


class CreateLink(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    room_id: Id
    product_id: Id | None = None


class LinkView(msgspec.Struct, kw_only=True):
    code: str
    url: str
    distributor_id: str
    room_id: str
    product_id: str | None = None


class PageQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A page of a newest-first list: at most `limit` items, older than `before` (the previous
    page's `next_before`) when given."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE
    before: Id | None = None


class LinkSummary(msgspec.Struct, kw_only=True):
    """One of the caller's links, with the clicks (entries into the room) it brought."""

    code: str
    url: str
    room_id: str
    product_id: str | None
    created_at: datetime
    clicks: int


class LinkList(msgspec.Struct, kw_only=True):
    """The caller's links newest first; `next_before` continues the list, null on its last page."""

    links: list[LinkSummary]
    next_before: str | None


class EnterRoom(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    link_code: LinkCode | None = None
    # a distributor's referral code: binds the caller to its distributor, ahead of links
    referral_code: ReferralCode | None = None


class EnterResult(msgspec.Struct, kw_only=True):
    room_id: str
    link_code: str | None
    distributor_id: str | None
    # true when the same visitor entered through the same link moments ago: nothing new recorded
    deduplicated: bool
    # true when this browser's anonymous click through the link, moments ago, became the
    # caller's entry (one person, one click, one visitor); it binds them as their own click would
    continued_click: bool = False


class CommissionTotals(msgspec.Struct, kw_only=True):
    pending: int
    confirmed: int
    paid: int
    reversed: int


class CommunityMetrics(msgspec.Struct, kw_only=True):
    repeat_buyers: int
    repeat_buyer_rate_bps: int
    average_order_value_cents: int
    purchase_frequency: float
    per_buyer_value_cents: int
    avg_days_between_purchases: float | None


class DashboardView(msgspec.Struct, kw_only=True):
    """A distributor's numbers. Orders, buyers and GMV count paid orders credited to them, net of
    refunds, excluding self-referrals (counted apart)."""

    id: str
    user_id: str
    team: str | None
    clicks: int
    visitors: int
    buyers: int
    orders: int
    gmv_cents: int
    commission_cents: CommissionTotals
    balance_cents: int
    self_referral_orders: int
    community: CommunityMetrics


class DistributorRank(msgspec.Struct, kw_only=True):
    rank: int
    distributor_id: str
    user_id: str
    team: str | None
    gmv_cents: int
    orders: int


class TeamRank(msgspec.Struct, kw_only=True):
    rank: int
    team: str
    gmv_cents: int
    orders: int
    distributors: int


class LeaderboardView(msgspec.Struct, kw_only=True):
    room_id: str
    distributors: list[DistributorRank]
    teams: list[TeamRank]


class DistributorRef(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    team: str | None


class ClickRef(msgspec.Struct, kw_only=True):
    id: str
    at: datetime
    link_code: str
    source: Literal["click", "enter"]


class Posting(msgspec.Struct, kw_only=True):
    kind: Literal["accrue", "reverse", "confirm", "payout", "clawback", "review"]
    # the change to what the distributor is owed for this order (confirm moves, so it is 0 here)
    pending_cents: int
    payable_cents: int
    at: datetime
    note: str | None = None  # an admin's decision and reason (`review`)


class CommissionTrail(msgspec.Struct, kw_only=True):
    state: Literal["none", "pending", "under_review", "confirmed", "reversed"]
    commission_cents: int
    reversed_cents: int
    confirmed_cents: int
    clawed_back_cents: int
    pending_cents: int


class AttributionTrail(msgspec.Struct, kw_only=True):
    order_id: str
    room_id: str
    buyer_id: str
    rule: Literal["last", "first", "none", "code"]
    distributor: DistributorRef | None
    click: ClickRef | None
    commission_bps: int
    self_referral: bool
    decided_at: datetime
    commission: CommissionTrail
    postings: list[Posting]
    # why the order is a self-referral: account, device, payment (instrument)
    self_referral_reasons: list[str] = []
    # the commission terms: base rate or amount per unit, where they came from, any tier bonus
    terms: CommissionTerms | None = None
    review: ReviewRef | None = None


class CommissionTerms(msgspec.Struct, kw_only=True):
    source: Literal["product", "distributor_product", "distributor"]
    base_bps: int
    commission_cents_per_unit: int
    tier: str | None
    bonus_bps: int


class ReviewRef(msgspec.Struct, kw_only=True):
    status: Literal["open", "approved", "rejected"]
    reasons: list[str]
    decided_by: str | None = None
    note: str | None = None


class PayoutItem(msgspec.Struct, kw_only=True):
    distributor_id: str
    user_id: str
    team: str | None
    amount_cents: int


class PayoutRecord(msgspec.Struct, kw_only=True):
    """One payout to the caller: their item of a payout batch. A batch pays its items when it is
    created (the ledger moves the balance out at once), so `paid` is the only state there is."""

    batch_id: str
    amount_cents: int
    created_at: datetime
    state: Literal["paid"] = "paid"


class PayoutHistory(msgspec.Struct, kw_only=True):
    """The caller's payouts newest first; `next_before` continues the list, null on its last
    page."""

    payouts: list[PayoutRecord]
    next_before: str | None


class PayoutBatchView(msgspec.Struct, kw_only=True):
    """A payout batch; `id` is null when nothing was payable (no batch created)."""

    id: str | None
    created_at: datetime | None
    created_by: str
    total_cents: int
    items: list[PayoutItem]
