"""Which payment provider serves: built once from settings (LIVESELL_PAYMENTS)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from core.settings import Settings
from storefront.payments import (
    Checkout,
    PaymentEvent,
    PaymentProvider,
    ProviderRefund,
    SimulatedProvider,
    Started,
    WebhookSender,
    webhook_key,
)


@dataclass(frozen=True)
class Notice:
    """A provider's verified notification as livesell's event (and the provider's refund id,
    when it is about a refund)."""

    event: PaymentEvent
    provider_refund_id: str | None = None


@runtime_checkable
class NotifiedProvider(Protocol):
    """A shipped provider: it reports on a route of its own, in its own format and signature."""

    name: str

    def new_payment_id(self) -> str: ...

    async def start(self, payment_id: str, checkout: Checkout) -> Started | None: ...

    async def resume(self, payment_id: str, checkout: Checkout) -> Started | None: ...

    async def refund(self, refund: ProviderRefund) -> None: ...

    async def decode_notification(self, headers: Mapping[str, str], body: bytes) -> Notice | None:
        """The notification as an event, verified with the provider's SDK (InvalidSignature
        otherwise); None when it concerns no payment or refund."""
        ...


def build_provider(settings: Settings, deliver: WebhookSender) -> PaymentProvider | None:
    """The provider settings name; None when none is configured. `deliver` is where the
    simulated provider posts its signed events."""
    payments = settings.payments
    if payments is None:
        return None
    match payments.provider:
        case "simulated":
            return SimulatedProvider(webhook_key(settings.secret), deliver)
        case "wechatpay":
            from storefront.wechatpay_provider import WeChatPayProvider

            assert payments.wechatpay is not None
            return WeChatPayProvider(payments.wechatpay)
        case "stripe":
            from storefront.stripe_provider import StripeProvider

            assert payments.stripe is not None
            return StripeProvider(payments.stripe)
    return None
