"""The worker SIGKILLed in the middle of its jobs, then run again: hold expiry finishes (every
hold expired once, every unit back on sale, the gate agreeing with PostgreSQL) and settlement
finishes (every due commission confirmed once, the ledger balanced)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.resources import Resources
from storefront import Shop
from storefront.buy.gate import gate_keys
from tests.conftest import Servers
from tests.faults.procs import Proc, env_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

Auth = Callable[..., dict[str, str]]
_keys = itertools.count()


async def _shop(client: httpx.AsyncClient, auth: Auth, quantity: int) -> tuple[str, str]:
    host = auth("wk-host", "host")
    product = await client.post(
        "/api/products",
        json={"sku": "WK-1", "title": "t", "price_cents": 1_000, "commission_bps": 1_500},
        headers=host,
    )
    room = (await client.post("/api/rooms", json={"title": "wk"}, headers=host)).json()
    await client.post(f"/api/rooms/{room['id']}/live", headers=host)
    drop = await client.post(
        f"/api/rooms/{room['id']}/drops",
        json={"product_id": product.json()["id"], "price_cents": 1_000, "quantity": quantity,
              "per_buyer_limit": 1, "duration_s": 3600},
        headers=host,
    )  # fmt: skip
    assert drop.status_code == 201, drop.text
    return str(room["id"]), str(drop.json()["id"])


async def _buy_all(
    client: httpx.AsyncClient,
    auth: Auth,
    shop: Shop,
    drop_id: str,
    buyers: list[str],
    before: Any = None,
) -> list[str]:
    orders: list[str] = []
    queue = list(buyers)

    async def worker() -> None:
        while queue:
            buyer = queue.pop()
            if before is not None:
                await before(buyer)
            response = await client.post(
                f"/api/drops/{drop_id}/buy",
                json={"quantity": 1},
                headers={**auth(buyer), "Idempotency-Key": f"wk-{next(_keys)}"},
            )
            assert response.status_code == 201, response.text
            orders.append(response.json()["order_id"])

    await asyncio.gather(*(worker() for _ in range(16)))
    await shop.settled()
    return orders


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_worker_killed_during_hold_expiry(
    shop: Shop,
    servers: Servers,
    resources: Resources,
    client: httpx.AsyncClient,
    auth: Auth,
    tmp_path: Path,
) -> None:
    total = 600
    _, drop_id = await _shop(client, auth, total)
    await _buy_all(client, auth, shop, drop_id, [f"holder-{n}" for n in range(total)])
    async with resources.pool.acquire() as conn:
        await conn.execute("UPDATE orders SET hold_expires_at = now() - interval '1 second'")

    async def expired() -> int:
        async with resources.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM orders WHERE status = 'expired'"))

    env = env_for(servers.pg.url, servers.valkey.url, tmp_path / "data")
    worker = Proc(["worker"], env, tmp_path / "worker-1.log")
    await _wait(lambda: _positive(expired), 60, "the first expiry batch")
    worker.kill()
    at_kill = await expired()
    in_gate = await resources.redis.scard(gate_keys(int(drop_id))[1])
    # killed mid-job: holds still to expire, or expired units not yet back in the gate
    assert at_kill < total or in_gate < total, (at_kill, in_gate)

    rerun = Proc(["worker"], env, tmp_path / "worker-2.log")
    try:

        async def done() -> bool:
            free = await resources.redis.scard(gate_keys(int(drop_id))[1])
            return await expired() == total and free == total

        await _wait(done, 60, "expiry and the gate to finish")
    finally:
        rerun.stop()
    async with resources.pool.acquire() as conn:
        claims = await conn.fetch(
            "SELECT order_id, count(*) AS n, count(*) FILTER (WHERE state = 'released') AS gone"
            " FROM stock_claims GROUP BY order_id"
        )
        assert len(claims) == total and all(r["n"] == 1 and r["gone"] == 1 for r in claims)
        assert await conn.fetchval("SELECT coalesce(sum(live_units), 0) FROM drop_buyers") == 0
    view = (await client.get(f"/api/drops/{drop_id}")).json()
    assert (view["remaining"], view["held"], view["sold"]) == (total, 0, 0), view
    # and the units really are on sale again
    resold = await _buy_all(client, auth, shop, drop_id, [f"second-{n}" for n in range(5)])
    assert len(resold) == 5
    print(f"\nworker kill during expiry: killed at {at_kill}/{total} expired, {in_gate} units "
          f"back in the gate; rerun: {total} expired once, gate == PostgreSQL")  # fmt: skip


async def _positive(count: Any) -> bool:
    return bool(await count() > 0)


async def test_worker_killed_during_settlement(
    shop: Shop,
    servers: Servers,
    resources: Resources,
    client: httpx.AsyncClient,
    auth: Auth,
    tmp_path: Path,
) -> None:
    total = 200
    room_id, drop_id = await _shop(client, auth, total)
    dist = auth("wk-dist", "viewer", "distributor")
    await client.post("/api/distributors", json={}, headers=dist)
    code = (await client.post("/api/links", json={"room_id": room_id}, headers=dist)).json()["code"]

    async def enter(buyer: str) -> None:
        response = await client.post(
            f"/api/rooms/{room_id}/enter", json={"link_code": code}, headers=auth(buyer)
        )
        assert response.status_code == 200, response.text

    buyers = [f"settle-{n}" for n in range(total)]
    orders = await _buy_all(client, auth, shop, drop_id, buyers, before=enter)
    async with resources.pool.acquire() as conn:
        owners = dict(await conn.fetch("SELECT id::text, buyer_id FROM orders"))
    host = auth("wk-host", "host")
    for order in orders:
        assert (await client.post(f"/api/orders/{order}/pay", headers=auth(owners[order]))).json()[
            "order_status"
        ] == "paid"
        assert (await client.post(f"/api/orders/{order}/deliver", headers=host)).status_code == 200
    # every order's return window has ended (time simulated: the window is fixed at delivery)
    async with resources.pool.acquire() as conn:
        await conn.execute("UPDATE orders SET return_window_ends_at = delivered_at")

    async def confirmed() -> int:
        async with resources.pool.acquire() as conn:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM ledger_transactions WHERE kind = 'confirm'"
                )
            )

    # hold the last orders' attribution rows: settlement gets that far and waits there
    blocker = await resources.pool.acquire()
    transaction = blocker.transaction()
    await transaction.start()
    held_back = await blocker.fetch(
        """SELECT a.order_id FROM order_attributions a JOIN orders o ON o.id = a.order_id
           ORDER BY o.return_window_ends_at DESC, o.id DESC LIMIT 40 FOR UPDATE OF a"""
    )
    env = env_for(servers.pg.url, servers.valkey.url, tmp_path / "data")
    worker = Proc(["worker"], env, tmp_path / "worker-1.log")
    try:
        await _wait(lambda: _positive(confirmed), 60, "settlement to start")
        await asyncio.sleep(1.0)
        at_kill = await confirmed()
        worker.kill()
    finally:
        await transaction.rollback()
        await resources.pool.release(blocker)
    assert 0 < at_kill <= total - len(held_back), at_kill

    rerun = Proc(["worker"], env, tmp_path / "worker-2.log")
    try:

        async def settled() -> bool:
            return await confirmed() == total

        await _wait(settled, 60, "settlement to finish")
        await asyncio.sleep(0.5)  # nothing more arrives
    finally:
        rerun.stop()
    async with resources.pool.acquire() as conn:
        per_order = await conn.fetch(
            "SELECT order_id, count(*) AS n FROM ledger_transactions WHERE kind = 'confirm'"
            " GROUP BY order_id"
        )
        assert len(per_order) == total and all(r["n"] == 1 for r in per_order)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM (SELECT transaction_id FROM ledger_entries"
                " GROUP BY transaction_id HAVING sum(amount_cents) <> 0) t"
            )
            == 0
        )
        payable = await conn.fetchval(
            """SELECT coalesce(sum(e.amount_cents), 0) FROM ledger_entries e
               JOIN ledger_accounts a ON a.id = e.account_id WHERE a.kind = 'payable'"""
        )
        pending = await conn.fetchval(
            """SELECT coalesce(sum(e.amount_cents), 0) FROM ledger_entries e
               JOIN ledger_accounts a ON a.id = e.account_id WHERE a.kind = 'pending'"""
        )
    assert (payable, pending) == (total * 150, 0), "15 % of 10.00 per order, all confirmed"
    dashboard = (await client.get("/api/distributors/me", headers=dist)).json()
    assert dashboard["commission_cents"]["confirmed"] == total * 150
    print(f"\nworker kill during settlement: killed at {at_kill}/{total} confirmed; rerun "
          f"confirmed the rest, each once; payable {int(payable)} cents")  # fmt: skip
