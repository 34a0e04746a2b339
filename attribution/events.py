"""Events attribution publishes after commit: to `dashboard#{user_id}` and to rooms."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from attribution.views import DashboardView, LeaderboardView
from core.events import Event


class ClickRecorded(Event, tag="click.recorded"):
    """New clicks on one of the distributor's links; clicks recorded together (within one write
    batch) arrive as one event with their `count`, so a flood cannot flood the dashboard."""

    link_code: str
    room_id: str
    at: datetime
    count: int
    product_id: str | None = None


class CommissionPending(Event, tag="commission.pending"):
    order_id: str
    room_id: str
    amount_cents: int
    commission_bps: int
    commission_cents: int
    self_referral: bool = False


class CommissionConfirmed(Event, tag="commission.confirmed"):
    order_id: str
    commission_cents: int


class CommissionReversed(Event, tag="commission.reversed"):
    order_id: str
    refund_cents: int
    reversed_cents: int
    # true when the commission had already been confirmed: taken back from the payable balance
    clawback: bool = False


class StatsChanged(Event, tag="stats.changed"):
    coalesce: ClassVar[bool] = True
    stats: DashboardView


class LeaderboardChanged(Event, tag="leaderboard.changed"):
    coalesce: ClassVar[bool] = True
    leaderboard: LeaderboardView
