"""A payment provider the tests play by hand: it records what livesell asks of it and settles
nothing by itself; outcomes reach livesell only through the signed webhook, as from a real one."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import msgspec

from storefront import Shop
from storefront.payments import (
    SIGNATURE_HEADER,
    Checkout,
    ProviderRefund,
    Started,
    sign,
    webhook_key,
)

_ids = itertools.count(1)


@dataclass
class HandProvider:
    name: str = "hand"
    started: list[tuple[str, Checkout]] = field(default_factory=list)
    refunds: list[tuple[str, int]] = field(default_factory=list)
    # the requests as livesell sent them (their refund ids settle them by a refund event)
    refund_requests: list[ProviderRefund] = field(default_factory=list)
    refuse_next_start: bool = False
    refuse_next_refund: bool = False

    def new_payment_id(self) -> str:
        return f"hand-pay-{next(_ids)}"

    async def start(self, payment_id: str, checkout: Checkout) -> Started | None:
        if self.refuse_next_start:
            self.refuse_next_start = False
            raise RuntimeError("the provider is down")
        self.started.append((payment_id, checkout))
        return None

    async def resume(self, payment_id: str, checkout: Checkout) -> Started | None:
        return None

    async def refund(self, refund: ProviderRefund) -> None:
        if self.refuse_next_refund:
            self.refuse_next_refund = False
            raise RuntimeError("the provider is down")
        self.refunds.append((refund.payment_id, refund.amount_cents))
        self.refund_requests.append(refund)

    def checkout(self, payment_id: str) -> Checkout:
        return next(c for p, c in self.started if p == payment_id)


def install(shop: Shop) -> Iterator[HandProvider]:
    """Make the hand provider `shop`'s payment provider while the caller needs it."""
    provider, before = HandProvider(), shop.payments
    shop.payments = provider
    try:
        yield provider
    finally:
        shop.payments = before


def event_body(
    provider: HandProvider, payment_id: str, event_type: str, event_id: str | None = None
) -> bytes:
    checkout = provider.checkout(payment_id)
    return msgspec.json.encode(
        {
            "id": event_id or f"hand-evt-{next(_ids)}",
            "provider": provider.name,
            "type": event_type,
            "created": int(time.time()),
            "data": {
                "payment_id": payment_id,
                "order_id": str(checkout.order_id),
                "amount_cents": checkout.amount_cents,
            },
        }
    )


async def deliver(client: httpx.AsyncClient, secret: str, body: bytes) -> httpx.Response:
    """Post `body` to the webhook, signed as the provider signs it."""
    signature = sign(webhook_key(secret), body)
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature}
    return await client.post("/api/payments/webhook", content=body, headers=headers)
