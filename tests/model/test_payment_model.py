"""A model-based test of the payment state machine: hypothesis interleaves buys, pays (several
at once), the provider's signed webhook events (the first outcome, then repeats under the same
or a new event id, and late events that contradict it), hold expiries and refunds, against the
real routes. The test plays the provider, so it knows what the provider holds: after every step,
for every order, the money the provider took minus what it gave back equals what the order says
the buyer paid net, what the payments table says, and what the commission ledger owes on it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import httpx
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

from core.auth import mint_token
from core.resources import Resources
from storefront import Shop
from storefront.orders import expire_holds
from tests.conftest import Servers
from tests.fuzz.stats import record
from tests.model.test_shop_model import BPS, CREDIT, HOST, PRICE, _open, _stacks, commission
from tests.storefront.payments_fake import HandProvider, deliver, event_body

T = TypeVar("T")
OPPOSITE = {"payment.succeeded": "payment.failed", "payment.failed": "payment.succeeded"}


@dataclass
class Payment:
    id: str
    order: Order
    # what the provider decided, once it has: the type of its first event
    outcome: str | None = None
    sent: list[bytes] = field(default_factory=list)


@dataclass
class Order:
    id: str
    buyer: str
    quantity: int
    payments: list[Payment] = field(default_factory=list)


class PaymentMachine(RuleBasedStateMachine):
    runner: ClassVar[asyncio.Runner]
    res: ClassVar[Resources]
    shop: ClassVar[Shop]
    http: ClassVar[httpx.AsyncClient]
    drop_id: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.orders: list[Order] = []
        self.payments: dict[str, Payment] = {}
        self.keys = itertools.count()
        self.provider = HandProvider()
        self.shop.payments = self.provider
        record("payment model examples")

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def headers(self, who: str, *roles: str) -> dict[str, str]:
        token = mint_token(self.res.settings.secret, who, roles or ("viewer",))
        return {"Authorization": f"Bearer {token}"}

    def pick(self, items: list[T], which: int) -> T:
        return items[which % len(items)]

    # --- rules ---

    @rule(buyer=st.sampled_from(["b1", "b3", "d1"]), quantity=st.integers(1, 3))
    def buy(self, buyer: str, quantity: int) -> None:
        async def attempt() -> httpx.Response:
            response = await self.http.post(
                f"/api/drops/{self.drop_id}/buy",
                json={"quantity": quantity},
                headers={**self.headers(buyer), "Idempotency-Key": f"pm{next(self.keys)}"},
            )
            await self.res.after_commit.drain()
            return response

        response = self.run(attempt())
        if response.status_code == 201:
            self.orders.append(Order(response.json()["order_id"], buyer, quantity))
        else:  # the drop ran out of units, or the buyer reached the drop's limit
            assert response.status_code in (409, 429), response.text

    @precondition(lambda self: bool(self.orders))
    @rule(which=st.integers(0, 99), together=st.integers(1, 4))
    def pay(self, which: int, together: int) -> None:
        order = self.pick(self.orders, which)
        url = f"/api/orders/{order.id}/pay"

        headers = self.headers(order.buyer)

        async def pays() -> list[httpx.Response]:
            asked = (self.http.post(url, headers=headers) for _ in range(together))
            return list(await asyncio.gather(*asked))

        answers = self.run(pays())
        started = {a.json()["payment_id"] for a in answers if a.status_code == 200}
        for answer in answers:
            assert answer.status_code in (200, 409), answer.text
        assert len(started) <= 1, "concurrent pays share one attempt"
        for payment_id in started:
            if payment_id not in self.payments:
                payment = Payment(payment_id, order)
                order.payments.append(payment)
                self.payments[payment_id] = payment

    def _open_payments(self) -> list[Payment]:
        return [p for p in self.payments.values() if p.outcome is None]

    def _decided(self) -> list[Payment]:
        return [p for p in self.payments.values() if p.outcome is not None]

    def _send(self, body: bytes) -> dict[str, Any]:
        response = self.run(deliver(self.http, self.res.settings.secret, body))
        assert response.status_code == 200, response.text
        ack: dict[str, Any] = response.json()
        return ack

    @precondition(lambda self: bool(self._open_payments()))
    @rule(which=st.integers(0, 99), succeeded=st.booleans())
    def provider_decides(self, which: int, succeeded: bool) -> None:
        payment = self.pick(self._open_payments(), which)
        payment.outcome = "payment.succeeded" if succeeded else "payment.failed"
        body = event_body(self.provider, payment.id, payment.outcome)
        payment.sent.append(body)
        ack = self._send(body)
        assert not ack["duplicate"]
        expected = {"paid", "paid_after_expiry", "refunded_no_stock"} if succeeded else {"failed"}
        assert ack["outcome"] in expected, ack

    @precondition(lambda self: bool(self._decided()))
    @rule(which=st.integers(0, 99), same_event=st.booleans())
    def provider_repeats(self, which: int, same_event: bool) -> None:
        payment = self.pick(self._decided(), which)
        assert payment.outcome is not None
        if same_event:
            ack = self._send(payment.sent[0])
            assert ack["duplicate"], ack
        else:
            ack = self._send(event_body(self.provider, payment.id, payment.outcome))
            assert ack == {"received": True, "duplicate": False, "outcome": "already_settled"}

    @precondition(lambda self: bool(self._decided()))
    @rule(which=st.integers(0, 99))
    def provider_contradicts(self, which: int) -> None:
        payment = self.pick(self._decided(), which)
        assert payment.outcome is not None
        ack = self._send(event_body(self.provider, payment.id, OPPOSITE[payment.outcome]))
        assert ack["outcome"] == "contradicts_final_state", ack

    @precondition(lambda self: bool(self.orders))
    @rule(which=st.integers(0, 99))
    def hold_expires(self, which: int) -> None:
        order = self.pick(self.orders, which)

        async def expire() -> None:
            async with self.res.pool.acquire() as conn:
                await conn.execute(
                    """UPDATE orders SET hold_expires_at = now() - interval '1 second'
                       WHERE id = $1 AND status = 'held'""",
                    int(order.id),
                )
            await expire_holds(self.shop)

        self.run(expire())

    @precondition(lambda self: bool(self.orders))
    @rule(which=st.integers(0, 99), units=st.integers(1, 3), by_admin=st.booleans())
    def refund(self, which: int, units: int, by_admin: bool) -> None:
        order = self.pick(self.orders, which)
        who = self.headers("m-admin", "admin") if by_admin else self.headers(order.buyer)
        response = self.run(
            self.http.post(f"/api/orders/{order.id}/refund", json={"quantity": units}, headers=who)
        )
        assert response.status_code in (200, 409, 422), response.text

    # --- invariants ---

    @invariant()
    def money_agrees_everywhere(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        record("payment model steps checked")
        refunded_at_provider: dict[str, int] = {}
        for payment_id, cents in self.provider.refunds:
            refunded_at_provider[payment_id] = refunded_at_provider.get(payment_id, 0) + cents
        async with self.res.pool.acquire() as conn:
            for order in self.orders:
                row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", int(order.id))
                rows = {
                    r["provider_payment_id"]: r
                    for r in await conn.fetch(
                        "SELECT * FROM payments WHERE order_id = $1", int(order.id)
                    )
                }
                taken = sum(
                    row["amount_cents"] for p in order.payments if p.outcome == "payment.succeeded"
                )
                given_back = sum(refunded_at_provider.get(p.id, 0) for p in order.payments)
                paid = row["status"] in ("paid", "delivered", "refunded")
                net = row["amount_cents"] - row["refunded_cents"] if paid else 0
                assert taken - given_back == net, (order, dict(row), self.provider.refunds)
                assert paid == any(p.outcome == "payment.succeeded" for p in order.payments)

                assert set(rows) == {p.id for p in order.payments}
                live = [r for r in rows.values() if r["status"] in ("pending", "succeeded")]
                assert len(live) <= 1, "one live attempt per order"
                for payment in order.payments:
                    stored = rows[payment.id]
                    expected = {
                        None: {"pending"},
                        "payment.failed": {"failed"},
                        "payment.succeeded": {"succeeded", "refunded"},
                    }[payment.outcome]
                    assert stored["status"] in expected, (payment, dict(stored))
                    assert stored["refunded_cents"] == refunded_at_provider.get(payment.id, 0)

                owed = await conn.fetchval(
                    """SELECT coalesce(sum(e.amount_cents), 0)
                       FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id
                       JOIN ledger_accounts a ON a.id = e.account_id
                       WHERE t.order_id = $1 AND a.distributor_id IS NOT NULL""",
                    int(order.id),
                )
                assert owed == commission(net, CREDIT[order.buyer], order.buyer), (order, owed)
            assert not await conn.fetch(
                "SELECT transaction_id FROM ledger_entries GROUP BY transaction_id"
                " HAVING sum(amount_cents) <> 0"
            )


async def _drop(res: Resources, http: httpx.AsyncClient, room_id: str, product_id: str) -> str:
    token = mint_token(res.settings.secret, HOST, ("host",))
    response = await http.post(
        f"/api/rooms/{room_id}/drops",
        json={
            "product_id": product_id,
            "price_cents": PRICE,
            "quantity": 12,
            "per_buyer_limit": 12,
            "duration_s": 3600,
        },  # fmt: skip
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    drop_id: str = response.json()["id"]
    return drop_id


async def _reset(res: Resources, http: httpx.AsyncClient, room_id: str, product_id: str) -> str:
    async with res.pool.acquire() as conn:
        await conn.execute(
            """TRUNCATE orders, stock_claims, drop_buyers, drop_units, drops, idempotency_keys,
               payments, payment_events, refunds, ledger_entries, ledger_transactions,
               ledger_accounts, payout_batches RESTART IDENTITY CASCADE"""
        )
    for keys in await res.redis.keys("{drop:*"):
        await res.redis.delete(keys)
    return await _drop(res, http, room_id, product_id)


@pytest.mark.timeout(600)
def test_random_payment_histories_keep_the_money_straight(servers: Servers) -> None:
    assert BPS and PRICE
    with asyncio.Runner() as runner:
        shop, http, room_id, product_id = runner.run(_open(servers))
        res = shop.res

        class Machine(PaymentMachine):
            def __init__(self) -> None:
                Machine.drop_id = runner.run(_reset(res, http, room_id, product_id))
                super().__init__()

        Machine.runner, Machine.res, Machine.http = runner, res, http
        Machine.shop = shop
        default_payments = shop.payments
        try:
            run_state_machine_as_test(
                Machine,
                settings=settings(
                    max_examples=50,
                    stateful_step_count=30,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                ),
            )
        finally:
            shop.payments = default_payments
            runner.run(http.aclose())
            for stack in _stacks:
                runner.run(stack.__aexit__(None, None, None))
            _stacks.clear()
