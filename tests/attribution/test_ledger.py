"""The commission ledger: database-enforced invariants, idempotent postings, clawback netting,
payout batches (admin route, CSV, CLI) and rate snapshots."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

import attribution
from core.events import Outbox
from core.resources import Resources
from tests.attribution.conftest import Auth, People
from tests.attribution.shop import Shop
from tests.published import published

ROOT = Path(__file__).resolve().parents[2]


async def _credited_world(shop: Shop, people: People, price: int = 10_000, bps: int = 1_000):  # type: ignore[no-untyped-def]
    room = await shop.room()
    drop = await shop.drop(room, await shop.product(price, bps))
    await people.distributor("dist-a", team="red")
    await people.click("buyer", await people.link("dist-a", room))
    return room, drop


async def _count(res: Resources, table: str) -> int:
    async with res.pool.acquire() as conn:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


async def _history(res: Resources, channel: str) -> list[bytes]:
    return await published(res.redis, channel)


async def test_ledger_refuses_edits_deletes_imbalance_and_second_distributors(
    shop: Shop, people: People, resources: Resources
) -> None:
    _, drop = await _credited_world(shop, people)
    order = await shop.buy("buyer", drop)
    await people.distributor("dist-b")
    async with resources.pool.acquire() as conn:
        entry_id = await conn.fetchval("SELECT min(id) FROM ledger_entries")
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("UPDATE ledger_entries SET amount_cents = 1 WHERE id = $1", entry_id)
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("DELETE FROM ledger_entries WHERE id = $1", entry_id)
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("DELETE FROM ledger_transactions")
        with pytest.raises(asyncpg.RestrictViolationError, match="immutable"):
            await conn.execute("UPDATE order_attributions SET commission_bps = 9000")

        # an unbalanced transaction fails at commit, leaving nothing behind
        before = await conn.fetchval("SELECT count(*) FROM ledger_entries")
        with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
            async with conn.transaction():
                txn = await conn.fetchval(
                    """INSERT INTO ledger_transactions (kind, idempotency_key, distributor_id,
                           order_id) VALUES ('confirm', 'x', 1, $1) RETURNING id""",
                    order,
                )
                account = await conn.fetchval(
                    "SELECT id FROM ledger_accounts WHERE distributor_id = 1 AND kind = 'payable'"
                )
                await conn.execute(
                    "INSERT INTO ledger_entries (transaction_id, account_id, amount_cents)"
                    " VALUES ($1, $2, 500)",
                    txn,
                    account,
                )
        assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == before

        # single level: no posting for this order may name a second distributor...
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                """INSERT INTO ledger_transactions (kind, idempotency_key, distributor_id,
                       order_id) VALUES ('confirm', 'upline', 2, $1)""",
                order,
            )
        # ...nor can an order carry a second attribution
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                """INSERT INTO order_attributions (order_id, room_id, buyer_id, distributor_id,
                       entry_id, rule, commission_bps)
                   SELECT order_id, room_id, buyer_id, 2, entry_id, rule, commission_bps
                   FROM order_attributions WHERE order_id = $1""",
                order,
            )
        columns = await conn.fetch(
            """SELECT table_name, column_name FROM information_schema.columns
               WHERE table_schema = 'public'
                 AND table_name IN ('distributors', 'links', 'order_attributions',
                                    'ledger_transactions', 'ledger_entries', 'ledger_accounts')
                 AND column_name ~ '(parent|upline|referrer|sponsor|level|tier|ancestor)'"""
        )
        assert columns == [], "no chain of distributors is representable"


async def test_replayed_hooks_and_repeated_runs_post_nothing_twice(
    shop: Shop, people: People, resources: Resources, invariants: Callable[[], Any]
) -> None:
    _, drop = await _credited_world(shop, people, price=5_000)
    order = await shop.buy("buyer", drop, quantity=4)  # 20000 → 2000 pending
    await shop.replay_paid_hook(order)  # the payment event replayed
    await invariants()
    await shop.deliver(order)
    await shop.refund(order, 5_000)  # one unit: 15000 left → 1500: 500 reversed
    async with resources.pool.acquire() as conn:  # the same refund replayed
        async with conn.transaction():
            await attribution.order_refunded(conn, Outbox(), order_id=order, refund_cents=5_000)
    await invariants()
    await shop.window_passes(order)
    counts = await asyncio.gather(attribution.settle(resources), attribution.settle(resources))
    assert sorted(counts) == [0, 1], "two concurrent settlement runs confirm once"
    assert await attribution.settle(resources) == 0
    first = await attribution.run_payout(resources, created_by="ops")
    again = await attribution.run_payout(resources, created_by="ops")
    assert (first.total_cents, again.id, again.items) == (1_500, None, [])
    await invariants()

    async with resources.pool.acquire() as conn:
        kinds = [
            r["kind"] for r in await conn.fetch("SELECT kind FROM ledger_transactions ORDER BY id")
        ]
    assert kinds == ["accrue", "reverse", "confirm", "payout"]
    money = (await people.dashboard("dist-a"))["commission_cents"]
    assert money == {"pending": 0, "confirmed": 1_500, "paid": 1_500, "reversed": 500}
    published = [e for e in await _history(resources, "dashboard#dist-a") if b"commission." in e]
    assert [e.split(b'"type":"')[1].split(b'"')[0] for e in published] == [
        b"commission.pending",
        b"commission.reversed",
        b"commission.confirmed",
    ]


async def test_clawback_after_payout_nets_into_next_payout(
    shop: Shop,
    people: People,
    resources: Resources,
    client: httpx.AsyncClient,
    auth: Auth,
    invariants: Callable[[], Any],
) -> None:
    _, drop = await _credited_world(shop, people)
    admin = auth("ops", "admin")
    first = await shop.buy("buyer", drop)  # 1000
    await shop.deliver_past_window(first)
    await attribution.settle(resources)
    paid = await client.post("/api/admin/payouts", headers=admin)
    assert paid.status_code == 201 and paid.json()["total_cents"] == 1_000

    await shop.refund(first, 10_000, by_admin=True)  # after payout: claw back the whole 1000
    await invariants()
    me = await people.dashboard("dist-a")
    assert me["balance_cents"] == -1_000
    assert me["commission_cents"] == {
        "pending": 0,
        "confirmed": 0,
        "paid": 1_000,
        "reversed": 1_000,
    }
    nothing = await client.post("/api/admin/payouts", headers=admin)
    assert nothing.status_code == 200 and nothing.json()["id"] is None, (
        "a negative balance pays nothing"
    )

    second = await shop.buy("buyer", drop, quantity=3)  # 3000
    await shop.deliver_past_window(second)
    await attribution.settle(resources)
    netted = await client.post("/api/admin/payouts", headers=admin)
    assert netted.status_code == 201
    batch = netted.json()
    assert batch["total_cents"] == 2_000, "3000 confirmed minus the 1000 clawed back"
    assert [(i["user_id"], i["amount_cents"]) for i in batch["items"]] == [("dist-a", 2_000)]
    await invariants()
    assert (await people.dashboard("dist-a"))["balance_cents"] == 0

    trail = (await client.get(f"/api/orders/{first}/attribution", headers=admin)).json()
    assert trail["commission"]["state"] == "reversed"
    assert trail["commission"]["clawed_back_cents"] == 1_000

    exported = await client.get(f"/api/admin/payouts/{batch['id']}.csv", headers=admin)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["user_id"], r["amount_cents"], r["amount"]) for r in rows] == [
        ("dist-a", "2000", "20.00")
    ]
    shown = await client.get(f"/api/admin/payouts/{batch['id']}", headers=admin)
    assert shown.json() == batch
    viewer = auth("dist-a", "distributor")
    assert (await client.post("/api/admin/payouts", headers=viewer)).status_code == 403
    assert (await client.get("/api/admin/payouts/999.csv", headers=admin)).status_code == 404


async def test_rate_change_after_the_order_does_not_change_its_commission(
    shop: Shop, people: People, resources: Resources, client: httpx.AsyncClient, auth: Auth
) -> None:
    room, drop = await _credited_world(shop, people)
    before = await shop.place("buyer", drop)
    async with resources.pool.acquire() as conn:
        await conn.execute("UPDATE products SET commission_bps = 5000")
    await shop.pay(before)
    after = await shop.buy("buyer", drop)
    pending = (await people.dashboard("dist-a"))["commission_cents"]["pending"]
    assert pending == 1_000 + 5_000
    trail = (await client.get(f"/api/orders/{before}/attribution", headers=auth("buyer"))).json()
    assert trail["commission_bps"] == 1_000 and trail["commission"]["commission_cents"] == 1_000
    trail = (await client.get(f"/api/orders/{after}/attribution", headers=auth("buyer"))).json()
    assert trail["commission_bps"] == 5_000


async def test_livesell_payouts_command_settles_pays_and_exports(
    shop: Shop, people: People, resources: Resources, tmp_path: Path
) -> None:
    _, drop = await _credited_world(shop, people)
    order = await shop.buy("buyer", drop, quantity=2)
    await shop.deliver_past_window(order)  # not yet confirmed: the command settles first
    settings = resources.settings
    env = dict(os.environ)
    env.update(
        DATABASE_URL=str(settings.database_url),
        REDIS_URL=str(settings.redis_url),
        LIVESELL_SECRET=settings.secret,
        LIVESELL_DATA_DIR=str(tmp_path / "data"),
        # this checkout's livesell, whichever one the interpreter has installed
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )

    async def run(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "livesell.cli", "payouts", *args, env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, err = await run("--out", str(tmp_path / "batch.csv"))
    assert code == 0, err
    assert "confirmed 1 commissions" in err and "2000 cents" in err
    rows = list(csv.DictReader(io.StringIO((tmp_path / "batch.csv").read_text())))
    assert [(r["user_id"], r["amount_cents"]) for r in rows] == [("dist-a", "2000")]
    code, out, err = await run()
    assert code == 0 and out == "" and "nothing payable" in err, "a second run pays nothing"
    code, out, err = await run("--csv", rows[0]["batch_id"])
    assert code == 0 and list(csv.DictReader(io.StringIO(out))) == rows
    assert (await run("--csv", "999"))[0] == 1


async def test_the_worker_loop_confirms_commissions_whose_window_passed(
    shop: Shop, people: People, resources: Resources
) -> None:
    _, drop = await _credited_world(shop, people)
    order = await shop.buy("buyer", drop)
    await shop.deliver_past_window(order)
    loops = [asyncio.create_task(c) for c in attribution.worker_tasks(resources)]
    try:
        for _ in range(100):
            if (await people.dashboard("dist-a"))["commission_cents"]["confirmed"]:
                break
            await asyncio.sleep(0.05)
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    assert (await people.dashboard("dist-a"))["commission_cents"]["confirmed"] == 1_000
    history = await _history(resources, "dashboard#dist-a")
    events = [e for e in history if b"commission.confirmed" in e]
    assert events and b'"commission_cents":1000' in events[0]
