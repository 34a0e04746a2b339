"""What storefront shows the outside: product cards and drops, as the API and the hub send them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

DropStatus = Literal["scheduled", "live", "sold_out", "closed", "ended"]


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
