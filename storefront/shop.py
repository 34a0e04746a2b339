"""The storefront's long-lived parts of one process, built once from its resources.

A process that sells (the API, the worker, or both in `livesell serve`) builds one `Shop` in
its lifespan and hands it down: the flash-sale gate (with its memory of recent refusals), the
order writer that batches winners, the stock announcer that coalesces `stock.changed`, the coupon
gate, and the payment provider. Nothing of these lives in module state.
"""

from __future__ import annotations

from starlette.requests import Request

from core.resources import Resources
from storefront import billing
from storefront.buy.gate import Gate
from storefront.buy.placing import OrderWriter
from storefront.coupons.gate import CouponGate
from storefront.payments import PaymentProvider
from storefront.stock import StockAnnouncer


class Shop:
    def __init__(self, res: Resources) -> None:
        self.res = res
        self.gate = Gate(res.redis)
        self.orders = OrderWriter(res)
        self.stock = StockAnnouncer(res)
        self.coupons = CouponGate(res.redis)
        # None: no provider is configured, and paying answers 503 payments_unavailable
        self.payments: PaymentProvider | None = billing.default_provider(self)

    async def aclose(self) -> None:
        """Let go of what the payment provider holds open (its HTTP connections)."""
        close = getattr(self.payments, "aclose", None)
        if close is not None:
            await close()

    async def settled(self) -> None:
        """Wait for the follow-up work of what committed so far (tests, benchmarks)."""
        await self.res.after_commit.drain()


def shop_of(request: Request) -> Shop:
    """The app's shop (built by its lifespan)."""
    shop: Shop = request.app.state.shop
    return shop
