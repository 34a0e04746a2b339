"""A model-based test of stock and the ledger: hypothesis drives random sequences of drops, buys
(and replays of them), payments, hold expiries, deliveries, refunds, settlements and payouts
against the real system (HTTP routes through the ASGI app, plus the worker's steps called
directly with time moved on), and after every step compares it with a pure-Python model and
checks DESIGN.md's invariants:

- sold + held + remaining == quantity for every drop, never negative; nobody over the limit;
- one order per Idempotency-Key, identical replays; no paid order without its stock claims;
- every ledger transaction sums to zero; balances are the sums of their entries;
- each distributor's pending and payable commission equal Σ rate × net paid amount over their
  orders (pending until the window passed, payable after, minus payouts); self-referral is 0;
- coupons: claims ≤ quantity and one per user; an order's amount = price × units − discount ≥ 0,
  a claim discounts at most one live order (an expired hold gives it back), and a partial
  refund returns floor(amount × units / quantity) in all;
- a referral code given at the buy credits its distributor (d2's code) ahead of the buyer's
  link binding.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import attribution
from core.auth import mint_token
from core.db import migrate_url
from core.resources import Resources, open_resources
from livesell.app import create_app
from storefront import Shop
from storefront.orders import expire_holds
from tests.conftest import Servers, make_settings
from tests.fuzz.stats import record

T = TypeVar("T")

PRICE, BPS = 1_000, 1_500
HOST = "m-host"
BUYERS = ["b1", "b2", "b3", "d1"]  # b1 via d1's link, b2 via d1 then d2 (last wins), b3 none,
CREDIT = {"b1": "d1", "b2": "d2", "b3": None, "d1": "d1"}  # d1 buys through its own link
D2_CODE = "DTWO01"


def commission(net_cents: int, distributor: str | None, buyer: str) -> int:
    if distributor is None or distributor == buyer:
        return 0
    return net_cents * BPS // 10_000


@dataclass
class Drop:
    id: str
    quantity: int
    limit: int
    open: bool = True


@dataclass
class Coupon:
    id: str
    quantity: int
    amount_off: int | None
    percent_bps: int | None
    claims: list[Claim] = field(default_factory=list)

    def discount(self, gross: int) -> int:
        if self.amount_off is not None:
            return min(gross, self.amount_off)
        assert self.percent_bps is not None
        return gross * self.percent_bps // 10_000


@dataclass
class Claim:
    id: str
    coupon: Coupon
    user: str


@dataclass
class Order:
    id: str
    drop: Drop
    buyer: str
    quantity: int
    key: str
    body: bytes
    request: dict[str, Any]
    credited: str | None
    discount: int = 0
    claim: Claim | None = None
    status: str = "held"
    refunded: int = 0
    confirmed: bool = False

    @property
    def amount(self) -> int:
        return self.quantity * PRICE - self.discount

    @property
    def refunded_cents(self) -> int:
        return self.amount * self.refunded // self.quantity

    @property
    def live_units(self) -> int:
        return 0 if self.status == "expired" else self.quantity - self.refunded

    @property
    def owed(self) -> int:
        """The commission this order owes its distributor now."""
        if self.status in ("held", "expired"):
            return 0
        return commission(self.amount - self.refunded_cents, self.credited, self.buyer)


@dataclass
class World:
    drops: list[Drop] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    coupons: list[Coupon] = field(default_factory=list)
    paid_out: dict[str, int] = field(default_factory=lambda: {"d1": 0, "d2": 0})


class ShopMachine(RuleBasedStateMachine):
    runner: ClassVar[asyncio.Runner]
    res: ClassVar[Resources]
    shop: ClassVar[Shop]
    http: ClassVar[httpx.AsyncClient]
    room_id: ClassVar[str]
    product_id: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.world = World()
        self.keys = itertools.count()
        self.run(self._reset())
        record("model examples")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def headers(self, who: str, *roles: str) -> dict[str, str]:
        token = mint_token(self.res.settings.secret, who, roles or ("viewer",))
        return {"Authorization": f"Bearer {token}"}

    async def _reset(self) -> None:
        """Each example starts from a shop with no drops and no orders."""
        async with self.res.pool.acquire() as conn:
            await conn.execute(
                """TRUNCATE orders, stock_claims, drop_buyers, drop_units, drops,
                   idempotency_keys, payments, payment_events, refunds, ledger_entries,
                   ledger_transactions, ledger_accounts, payout_batches, order_attributions,
                   coupons, coupon_users, coupon_claims
                   RESTART IDENTITY CASCADE"""
            )
            # the code entries buys made (the links' entries of the setup stay)
            await conn.execute("DELETE FROM room_entries WHERE code_id IS NOT NULL")
        for gate_keys in await self.res.redis.keys("{drop:*"):
            await self.res.redis.delete(gate_keys)
        for gate_keys in await self.res.redis.keys("{room:*}:coupon:*"):
            await self.res.redis.delete(gate_keys)

    # --- rules ---

    @rule(quantity=st.integers(1, 5), limit=st.integers(1, 3))
    def new_drop(self, quantity: int, limit: int) -> None:
        limit = min(limit, quantity)
        for drop in self.world.drops:
            if drop.open:
                response = self.run(
                    self.http.post(
                        f"/api/drops/{drop.id}/close", headers=self.headers(HOST, "host")
                    )
                )
                assert response.status_code == 200, response.text
                drop.open = False
        body = {"product_id": self.product_id, "price_cents": PRICE, "quantity": quantity,
                "per_buyer_limit": limit, "duration_s": 3600}  # fmt: skip
        response = self.run(
            self.http.post(
                f"/api/rooms/{self.room_id}/drops", json=body, headers=self.headers(HOST, "host")
            )
        )
        assert response.status_code == 201, response.text
        self.world.drops.append(Drop(response.json()["id"], quantity, limit))

    @precondition(lambda self: bool(self.world.drops))
    @rule(
        buyer=st.sampled_from(BUYERS),
        quantity=st.integers(1, 3),
        which=st.integers(0, 9),
        with_claim=st.booleans(),
        with_code=st.booleans(),
    )
    def buy(self, buyer: str, quantity: int, which: int, with_claim: bool, with_code: bool) -> None:
        drop = self.world.drops[which % len(self.world.drops)]
        key = f"k{next(self.keys)}"
        request: dict[str, Any] = {"quantity": quantity}
        claim = self._usable_claim(buyer) if with_claim else None
        if claim is not None:
            request["coupon_claim_id"] = claim.id
        if with_code:
            request["referral_code"] = D2_CODE.lower()
        response = self._buy(drop, buyer, request, key)
        holding = sum(o.live_units for o in self.world.orders
                      if o.drop is drop and o.buyer == buyer)  # fmt: skip
        live = sum(o.live_units for o in self.world.orders if o.drop is drop)
        if not drop.open:
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "drop_not_active"
        elif holding + quantity > drop.limit:
            assert response.status_code == 429, response.text
            assert response.json()["error"]["code"] == "limit_reached"
        elif drop.quantity - live < quantity:
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "sold_out"
        else:
            assert response.status_code == 201, response.text
            body = response.json()
            discount = claim.coupon.discount(quantity * PRICE) if claim else 0
            assert body["status"] == "held"
            assert body["amount_cents"] == quantity * PRICE - discount >= 0
            credited = "d2" if with_code else CREDIT[buyer]
            order = Order(body["order_id"], drop, buyer, quantity, key, response.content,
                          request, credited, discount, claim)  # fmt: skip
            self.world.orders.append(order)

    def _usable_claim(self, user: str) -> Claim | None:
        """One of the user's claims no live order applies."""
        used = {id(o.claim) for o in self.world.orders if o.claim and o.status != "expired"}
        for coupon in self.world.coupons:
            for claim in coupon.claims:
                if claim.user == user and id(claim) not in used:
                    return claim
        return None

    def _buy(self, drop: Drop, buyer: str, request: dict[str, Any], key: str) -> httpx.Response:
        async def attempt() -> httpx.Response:
            response = await self.http.post(
                f"/api/drops/{drop.id}/buy",
                json=request,
                headers={**self.headers(buyer), "Idempotency-Key": key},
            )
            await self.res.after_commit.drain()
            return response

        return self.run(attempt())

    @precondition(lambda self: bool(self.world.orders))
    @rule(which=st.integers(0, 99), same_body=st.booleans())
    def replay(self, which: int, same_body: bool) -> None:
        order = self.world.orders[which % len(self.world.orders)]
        quantity = order.quantity if same_body else order.quantity % 3 + 1
        request = {**order.request, "quantity": quantity}
        response = self._buy(order.drop, order.buyer, request, order.key)
        if quantity == order.quantity:
            assert response.status_code == 201 and response.content == order.body
            assert response.headers["idempotent-replayed"] == "true"
        else:
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "idempotency_mismatch"

    @rule(
        quantity=st.integers(1, 3),
        amount_off=st.one_of(st.none(), st.integers(100, 4_000)),
        percent_bps=st.integers(1, 10_000),
    )
    def release_coupon(self, quantity: int, amount_off: int | None, percent_bps: int) -> None:
        terms: dict[str, Any] = (
            {"amount_off_cents": amount_off} if amount_off else {"percent_off_bps": percent_bps}
        )
        body = {"title": "c", "quantity": quantity, "claim_duration_s": 3600, "valid_s": 3600,
                **terms}  # fmt: skip
        response = self.run(
            self.http.post(
                f"/api/rooms/{self.room_id}/coupons", json=body, headers=self.headers(HOST, "host")
            )
        )
        assert response.status_code == 201, response.text
        self.world.coupons.append(
            Coupon(response.json()["id"], quantity, amount_off,
                   None if amount_off else percent_bps)
        )  # fmt: skip

    @precondition(lambda self: bool(self.world.coupons))
    @rule(user=st.sampled_from(BUYERS), which=st.integers(0, 9))
    def claim(self, user: str, which: int) -> None:
        coupon = self.world.coupons[which % len(self.world.coupons)]

        async def attempt() -> httpx.Response:
            response = await self.http.post(
                f"/api/coupons/{coupon.id}/claim",
                headers={**self.headers(user), "Idempotency-Key": f"c{next(self.keys)}"},
            )
            await self.res.after_commit.drain()
            return response

        response = self.run(attempt())
        if any(c.user == user for c in coupon.claims):
            assert response.status_code == 429, response.text
        elif len(coupon.claims) >= coupon.quantity:
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "coupons_gone"
        else:
            assert response.status_code == 201, response.text
            coupon.claims.append(Claim(response.json()["claim_id"], coupon, user))

    def _orders(self, *statuses: str) -> list[Order]:
        return [o for o in self.world.orders if o.status in statuses]

    @precondition(lambda self: bool(self._orders("held")))
    @rule(which=st.integers(0, 99))
    def pay(self, which: int) -> None:
        held = self._orders("held")
        order = held[which % len(held)]
        response = self.run(
            self.http.post(f"/api/orders/{order.id}/pay", headers=self.headers(order.buyer))
        )
        assert response.status_code == 200 and response.json()["order_status"] == "paid"
        order.status = "paid"

    @precondition(lambda self: bool(self._orders("held")))
    @rule(which=st.integers(0, 99))
    def hold_expires(self, which: int) -> None:
        held = self._orders("held")
        order = held[which % len(held)]

        async def expire() -> int:
            async with self.res.pool.acquire() as conn:
                await conn.execute(
                    "UPDATE orders SET hold_expires_at = now() - interval '1 second' WHERE id = $1",
                    int(order.id),
                )
            return await expire_holds(self.shop)

        assert self.run(expire()) == 1
        order.status = "expired"

    @precondition(lambda self: bool(self._orders("paid")))
    @rule(which=st.integers(0, 99))
    def deliver(self, which: int) -> None:
        paid = self._orders("paid")
        order = paid[which % len(paid)]
        response = self.run(
            self.http.post(f"/api/orders/{order.id}/deliver", headers=self.headers(HOST, "host"))
        )
        assert response.status_code == 200, response.text
        order.status = "delivered"

    @precondition(lambda self: bool(self._orders("paid", "delivered")))
    @rule(which=st.integers(0, 99), units=st.integers(1, 3))
    def refund(self, which: int, units: int) -> None:
        refundable = self._orders("paid", "delivered")
        order = refundable[which % len(refundable)]
        left = order.quantity - order.refunded
        response = self.run(
            self.http.post(
                f"/api/orders/{order.id}/refund",
                json={"quantity": units},
                headers=self.headers(order.buyer),
            )
        )
        if units > left:
            assert response.status_code == 422, response.text
            return
        assert response.status_code == 200, response.text
        order.refunded += units
        if order.refunded == order.quantity:
            order.status = "refunded"
        assert response.json()["status"] == order.status

    @rule()
    def return_windows_pass(self) -> None:
        """Settlement run as if every return window so far had passed."""
        later = datetime.now(UTC) + timedelta(seconds=self.res.settings.return_window_s + 60)
        self.run(attribution.settle(self.res, now=later))
        for order in self._orders("delivered"):
            if order.owed > 0:
                order.confirmed = True

    @rule()
    def payout(self) -> None:
        self.run(attribution.run_payout(self.res, created_by="m-admin"))
        payable = self._expected()[1]
        for distributor, cents in payable.items():
            if cents > 0:
                self.world.paid_out[distributor] += cents

    # --- invariants ---

    def _expected(self) -> tuple[dict[str, int], dict[str, int]]:
        pending = {"d1": 0, "d2": 0}
        payable = {"d1": 0, "d2": 0}
        for order in self.world.orders:
            credited = order.credited
            if credited is None:
                continue
            if order.confirmed:
                payable[credited] += order.owed
            else:
                pending[credited] += order.owed
        for distributor, cents in self.world.paid_out.items():
            payable[distributor] -= cents
        return pending, payable

    @invariant()
    def matches_the_model(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        record("model steps checked")
        async with self.res.pool.acquire() as conn:
            for drop in self.world.drops:
                row = await conn.fetchrow(
                    """SELECT count(*) FILTER (WHERE state = 'held') AS held,
                              count(*) FILTER (WHERE state = 'sold') AS sold
                       FROM stock_claims WHERE drop_id = $1 AND state <> 'released'""",
                    int(drop.id),
                )
                live = sum(o.live_units for o in self.world.orders if o.drop is drop)
                assert row["held"] + row["sold"] == live, (drop, dict(row))
                view = (await self.http.get(f"/api/drops/{drop.id}")).json()
                assert view["sold"] + view["held"] + view["remaining"] == drop.quantity, view
                assert view["remaining"] == drop.quantity - live and view["remaining"] >= 0
                worst = await conn.fetchval(
                    "SELECT coalesce(max(live_units), 0) FROM drop_buyers WHERE drop_id = $1",
                    int(drop.id),
                )
                assert worst <= drop.limit
            for coupon in self.world.coupons:
                claims = await conn.fetch(
                    "SELECT user_id FROM coupon_claims WHERE coupon_id = $1", int(coupon.id)
                )
                assert len(claims) == len(coupon.claims) <= coupon.quantity
                assert len({c["user_id"] for c in claims}) == len(claims)
            assert not await conn.fetch(
                """SELECT coupon_claim_id FROM orders WHERE coupon_claim_id IS NOT NULL
                   AND status <> 'expired' GROUP BY 1 HAVING count(*) > 1"""
            )
            orders = {r["id"]: r for r in await conn.fetch("SELECT * FROM orders")}
            assert len(orders) == len(self.world.orders)
            assert await conn.fetchval("SELECT count(*) FROM idempotency_keys") == len(orders)
            for order in self.world.orders:
                row = orders[int(order.id)]
                assert (row["status"], row["refunded_units"]) == (order.status, order.refunded)
                assert row["amount_cents"] == PRICE * order.quantity - order.discount >= 0
                assert row["refunded_cents"] == order.refunded_cents
                sold = await conn.fetchval(
                    "SELECT count(*) FROM stock_claims WHERE order_id = $1 AND state = 'sold'",
                    int(order.id),
                )
                if order.status in ("paid", "delivered", "refunded"):
                    assert sold == order.quantity - order.refunded, "paid without its claims"
            assert not await conn.fetch(
                "SELECT transaction_id FROM ledger_entries GROUP BY transaction_id"
                " HAVING sum(amount_cents) <> 0"
            )
            balances = {
                (r["user_id"], r["kind"]): int(r["cents"])
                for r in await conn.fetch(
                    """SELECT d.user_id, a.kind, coalesce(sum(e.amount_cents), 0) AS cents
                       FROM distributors d JOIN ledger_accounts a ON a.distributor_id = d.id
                       LEFT JOIN ledger_entries e ON e.account_id = a.id
                       GROUP BY d.user_id, a.kind"""
                )
            }
        pending, payable = self._expected()
        for distributor in ("d1", "d2"):
            assert balances.get((distributor, "pending"), 0) == pending[distributor], distributor
            assert balances.get((distributor, "payable"), 0) == payable[distributor], distributor
            shown = (await self.http.get(
                "/api/distributors/me", headers=self.headers(distributor, "distributor")
            )).json()  # fmt: skip
            assert shown["balance_cents"] == payable[distributor]
            assert shown["commission_cents"]["pending"] == pending[distributor]


async def _open(servers: Servers) -> tuple[Shop, httpx.AsyncClient, str, str]:
    settings = msgspec.structs.replace(
        make_settings(servers), buy_rate_per_user=0, referral_lookups_per_user=0
    )
    assert settings.database_url
    await migrate_url(settings.database_url)
    stack = open_resources(settings, pool_max=10)
    res = await stack.__aenter__()
    _stacks.append(stack)
    async with res.pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'schema_migrations'"
        )
        names = ", ".join(f'"{t["tablename"]}"' for t in tables)
        await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    await res.redis.flushall()
    shop = Shop(res)
    transport = httpx.ASGITransport(app=create_app(settings, res, shop), raise_app_exceptions=False)
    http = httpx.AsyncClient(transport=transport, base_url="http://model.test")

    def h(who: str, *roles: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + mint_token(settings.secret, who, roles or ("viewer",))}

    room = (await http.post("/api/rooms", json={"title": "model"}, headers=h(HOST, "host"))).json()
    await http.post(f"/api/rooms/{room['id']}/live", headers=h(HOST, "host"))
    product = await http.post(
        "/api/products",
        json={"sku": "MODEL-1", "title": "t", "price_cents": PRICE, "commission_bps": BPS},
        headers=h(HOST, "host"),
    )
    links = {}
    for distributor in ("d1", "d2"):
        who = h(distributor, "viewer", "distributor")
        await http.post("/api/distributors", json={}, headers=who)
        if distributor == "d2":
            await http.post("/api/distributors/me/codes", json={"code": D2_CODE}, headers=who)
        links[distributor] = (
            await http.post("/api/links", json={"room_id": room["id"]}, headers=who)
        ).json()["code"]
    for buyer, path in (("b1", ["d1"]), ("b2", ["d1", "d2"]), ("d1", ["d1"])):
        for distributor in path:
            entered = await http.post(
                f"/api/rooms/{room['id']}/enter",
                json={"link_code": links[distributor]},
                headers=h(buyer),
            )
            assert entered.status_code == 200, entered.text
    return shop, http, str(room["id"]), str(product.json()["id"])


_stacks: list[Any] = []


@pytest.mark.timeout(600)
def test_random_shop_histories_keep_the_invariants(servers: Servers) -> None:
    with asyncio.Runner() as runner:
        shop, http, room_id, product_id = runner.run(_open(servers))
        ShopMachine.runner, ShopMachine.res, ShopMachine.http = runner, shop.res, http
        ShopMachine.shop = shop
        ShopMachine.room_id, ShopMachine.product_id = room_id, product_id
        try:
            run_state_machine_as_test(
                ShopMachine,
                settings=settings(
                    max_examples=60,
                    stateful_step_count=30,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                ),
            )
        finally:
            runner.run(http.aclose())
            for stack in _stacks:
                runner.run(stack.__aexit__(None, None, None))
            _stacks.clear()
