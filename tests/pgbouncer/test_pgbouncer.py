"""livesell through a real PgBouncer in transaction pool mode: migrating (from several clients
at once, on an empty database), serving with the statement cache off, buying and paying. Behind
a transaction pooler a client's statements outside a transaction may each run in another server
session, so nothing may rely on session state: no session advisory lock, no session `SET`."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from core.db import migrate_url, migration_files
from core.resources import Resources
from tests.conftest import Servers
from tests.pgbouncer.conftest import DATABASE, EMPTY_DATABASE, direct_url
from tests.pgbouncer.pgbouncer import PgBouncer
from tests.storefront.conftest import Auth, Buy, StartDrop, stock_truth


async def test_migrations_from_many_clients_at_once_through_the_pooler(
    servers: Servers, pgbouncer: PgBouncer
) -> None:
    url = pgbouncer.url(EMPTY_DATABASE)
    runs = await asyncio.wait_for(asyncio.gather(*(migrate_url(url) for _ in range(4))), 60)
    applied = [name for run in runs for name in run]
    assert sorted(applied) == sorted(name for _, name, _ in migration_files())
    direct = await asyncpg.connect(direct_url(servers, EMPTY_DATABASE))
    try:
        versions = await direct.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [v for v, _, _ in migration_files()]
        # no server session of the pooler is left holding the migration lock
        held = await direct.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert held == 0
    finally:
        await direct.close()
    assert await asyncio.wait_for(migrate_url(url), 20) == []


async def test_every_transaction_runs_in_utc(resources: Resources) -> None:
    """The database's own time zone is not UTC; every pooled statement still runs in UTC."""

    async def zone() -> str:
        async with resources.pool.acquire() as conn, conn.transaction():
            await asyncio.sleep(0.01)  # overlap, so the pooler uses all its server sessions
            value: str = await conn.fetchval("SHOW TimeZone")
            return value

    zones = await asyncio.gather(*(zone() for _ in range(40)))
    zones += await asyncio.gather(*(resources.pool.fetchval("SHOW TimeZone") for _ in range(40)))
    assert set(zones) == {"UTC"}


async def test_serve_buy_and_pay_through_the_pooler(
    client: httpx.AsyncClient,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    resources: Resources,
    servers: Servers,
    pgbouncer: PgBouncer,
) -> None:
    assert resources.settings.database_url == pgbouncer.url(DATABASE)
    health = await client.get("/healthz")
    assert health.status_code == 200, health.text

    drop = await start_drop(quantity=5, per_buyer_limit=1)
    responses = await asyncio.gather(*(buy(drop["id"], f"buyer{i}") for i in range(30)))
    placed = [r for r in responses if r.status_code == 201]
    assert len(placed) == 5, [r.text for r in responses if r.status_code != 201][:3]
    assert {r.status_code for r in responses} <= {201, 409}

    for i, response in enumerate(responses):
        if response.status_code != 201:
            continue
        order_id = response.json()["order_id"]
        paid = await client.post(f"/api/orders/{order_id}/pay", headers=auth(f"buyer{i}", "viewer"))
        assert paid.status_code == 200, paid.text
        assert paid.json()["order_status"] == "paid"

    truth = await stock_truth(resources, drop["id"])
    assert (truth["sold"], truth["held"], truth["max_per_buyer"]) == (5, 0, 1)
    direct = await asyncpg.connect(direct_url(servers, DATABASE))
    try:
        statuses = await direct.fetch("SELECT status, count(*) FROM orders GROUP BY status")
        assert {r["status"]: r["count"] for r in statuses} == {"paid": 5}
    finally:
        await direct.close()
