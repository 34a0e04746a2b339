"""The shop around attribution, driven through storefront's public HTTP API exactly as a host
and buyers use it: rooms, products, drops, buys with Idempotency-Key, payment through the
simulated provider's signed webhook, delivery and unit refunds. Only time is simulated (moving
a delivery back, its return window's end with it, a hold past its expiry), because tests cannot
wait seven days.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec

import attribution
import storefront
from core.auth import mint_token
from core.events import Outbox
from core.resources import Resources
from core.settings import Settings
from livesell.app import create_app
from storefront.orders import expire_holds

HOST = "host-1"


class Shop:
    def __init__(self, res: Resources, settings: Settings | None = None) -> None:
        if settings is not None:
            res = dataclasses.replace(res, settings=settings)
        self.res = res
        self.settings = res.settings
        app = create_app(self.settings, res)
        self.storefront: storefront.Shop = app.state.shop
        transport = httpx.ASGITransport(app=app)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://shop.test")
        self.prices: dict[int, int] = {}

    def under(self, **changes: object) -> Shop:
        """The same shop deciding attribution under other settings (e.g. attribution="first")."""
        return Shop(self.res, msgspec.structs.replace(self.settings, **changes))

    def _as(self, user: str, *roles: str) -> dict[str, str]:
        token = mint_token(self.settings.secret, user, roles or ("viewer",))
        return {"Authorization": f"Bearer {token}"}

    async def _call(self, method: str, path: str, user: str, *roles: str, **kw: Any) -> Any:
        response = await self.http.request(method, path, headers=self._as(user, *roles), **kw)
        assert response.status_code in (200, 201), f"{method} {path}: {response.text}"
        return response.json()

    async def room(self, host: str = HOST, title: str = "room") -> int:
        room = await self._call("POST", "/api/rooms", host, "host", json={"title": title})
        await self._call("POST", f"/api/rooms/{room['id']}/live", host, "host")
        return int(room["id"])

    async def product(self, price_cents: int, commission_bps: int, sku: str | None = None) -> int:
        body = {
            "sku": sku or f"SKU-{uuid.uuid4().hex[:10]}",
            "title": "product",
            "price_cents": price_cents,
            "commission_bps": commission_bps,
        }
        product = await self._call("POST", "/api/products", HOST, "host", json=body)
        return int(product["id"])

    async def drop(self, room_id: int, product_id: int, quantity: int = 1000) -> int:
        product = await self._call("GET", f"/api/products/{product_id}", HOST, "host")
        body = {
            "product_id": str(product_id),
            "price_cents": product["price_cents"],
            "quantity": quantity,
            "per_buyer_limit": 10,
            "starts_in_s": 0,
            "duration_s": 3600,
        }
        drop = await self._call("POST", f"/api/rooms/{room_id}/drops", HOST, "host", json=body)
        self.prices[int(drop["id"])] = int(product["price_cents"])
        return int(drop["id"])

    async def close(self, drop_id: int) -> None:
        await self._call("POST", f"/api/drops/{drop_id}/close", HOST, "host")

    async def place(self, buyer: str, drop_id: int, quantity: int = 1) -> int:
        """A won buy: the held order, credited by attribution inside storefront's transaction."""
        held = await self._buy(buyer, drop_id, quantity)
        return int(held["order_id"])

    async def _buy(self, buyer: str, drop_id: int, quantity: int) -> Any:
        headers = {**self._as(buyer, "viewer"), "Idempotency-Key": uuid.uuid4().hex}
        response = await self.http.post(
            f"/api/drops/{drop_id}/buy", json={"quantity": quantity}, headers=headers
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "held"
        return response.json()

    async def pay(self, order_id: int) -> None:
        """The buyer pays; the simulated provider calls the signed webhook; the order is paid."""
        order = await self._call("GET", f"/api/orders/{order_id}", "admin-1", "admin")
        await self._call("POST", f"/api/orders/{order_id}/pay", order["buyer_id"], "viewer")
        paid = await self._call("GET", f"/api/orders/{order_id}", "admin-1", "admin")
        assert paid["status"] == "paid", paid

    async def replay_paid_hook(self, order_id: int) -> None:
        """The payment hook called again for an order already paid (a replayed provider event)."""
        async with self.res.pool.acquire() as conn, conn.transaction():
            await attribution.order_paid(conn, Outbox(), order_id=order_id)

    async def buy(self, buyer: str, drop_id: int, quantity: int = 1) -> int:
        order_id = await self.place(buyer, drop_id, quantity)
        await self.pay(order_id)
        return order_id

    async def deliver(self, order_id: int, days_ago: float = 0) -> None:
        await self._call("POST", f"/api/orders/{order_id}/deliver", HOST, "host")
        if days_ago:
            await self._shift_delivery(order_id, timedelta(days=days_ago))

    async def deliver_past_window(self, order_id: int) -> None:
        await self.deliver(order_id, days_ago=self.settings.return_window_s / 86_400 + 1)

    async def refund(self, order_id: int, cents: int, *, by_admin: bool = False) -> None:
        """Refund whole units worth `cents`: by the buyer (before delivery or inside the return
        window) or, any time, by an admin."""
        order = await self._call("GET", f"/api/orders/{order_id}", "admin-1", "admin")
        unit = int(order["amount_cents"]) // int(order["quantity"])
        assert cents % unit == 0, f"refunds are whole units of {unit} cents"
        who = ("admin-1", "admin") if by_admin else (order["buyer_id"], "viewer")
        await self._call(
            "POST", f"/api/orders/{order_id}/refund", *who, json={"quantity": cents // unit}
        )  # fmt: skip

    async def expire(self, order_id: int) -> None:
        """The hold runs out: its expiry moves into the past and the worker's expiry step runs."""
        async with self.res.pool.acquire() as conn:
            await conn.execute(
                "UPDATE orders SET hold_expires_at = now() - interval '1 second' WHERE id = $1",
                order_id,
            )
        await expire_holds(self.storefront)
        order = await self._call("GET", f"/api/orders/{order_id}", "admin-1", "admin")
        assert order["status"] == "expired", order

    async def window_passes(self, order_id: int) -> None:
        """Move a delivered order's delivery back past its return window."""
        async with self.res.pool.acquire() as conn:
            window = await conn.fetchval(
                "SELECT return_window_ends_at - delivered_at FROM orders WHERE id = $1", order_id
            )
        await self._shift_delivery(order_id, window + timedelta(days=1))

    async def time_passes(self, order_id: int, by: timedelta) -> None:
        """`by` passes for a delivered order: its delivery and its return window's end move
        that much into the past."""
        async with self.res.pool.acquire() as conn:
            await conn.execute(
                """UPDATE orders SET delivered_at = delivered_at - $2::interval,
                                     return_window_ends_at = return_window_ends_at - $2::interval
                   WHERE id = $1 AND delivered_at IS NOT NULL""",
                order_id,
                by,
            )

    async def _shift_delivery(self, order_id: int, back: timedelta) -> None:
        """Delivered `back` ago: the delivery and its return window's end move together, as
        if that much time had passed since."""
        async with self.res.pool.acquire() as conn:
            await conn.execute(
                """UPDATE orders SET delivered_at = $2::timestamptz,
                                     return_window_ends_at = $2::timestamptz
                                         + (return_window_ends_at - delivered_at)
                   WHERE id = $1 AND delivered_at IS NOT NULL""",
                order_id,
                datetime.now(UTC) - back,
            )
