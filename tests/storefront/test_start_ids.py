"""Starting the API rehearses an order on every pooled connection (storefront.placing), and
uses up no id: on a fresh database started twice, no sequence has moved and the first order,
room and drop are number 1."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from core.embedded import free_port
from core.resources import Resources
from tests.conftest import Servers
from tests.faults.procs import Proc, bearer, env_for, wait_healthy

HOST = bearer("start-host", "host")


@pytest.fixture
async def fresh_database(servers: Servers) -> AsyncIterator[str]:
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(servers.pg.url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield servers.pg.url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def _used_sequences(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'"
        )
    finally:
        await conn.close()
    assert {r["sequencename"] for r in rows} >= {"orders_id_seq", "stock_claims_id_seq"}
    # last_value is NULL until a sequence's first value is taken
    return {r["sequencename"]: r["last_value"] for r in rows if r["last_value"] is not None}


async def _first_order(api: httpx.AsyncClient) -> dict[str, str]:
    product = await api.post(
        "/api/products",
        json={"sku": "START-1", "title": "t", "price_cents": 100, "commission_bps": 500},
        headers=HOST,
    )
    room = (await api.post("/api/rooms", json={"title": "start"}, headers=HOST)).json()
    await api.post(f"/api/rooms/{room['id']}/live", headers=HOST)
    drop = await api.post(
        f"/api/rooms/{room['id']}/drops",
        json={
            "product_id": product.json()["id"],
            "price_cents": 100,
            "quantity": 5,
            "per_buyer_limit": 1,
            "duration_s": 600,
        },
        headers=HOST,
    )
    buy = await api.post(
        f"/api/drops/{drop.json()['id']}/buy",
        json={"quantity": 1},
        headers={**bearer("start-buyer"), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert buy.status_code == 201, buy.text
    return {
        "product": product.json()["id"],
        "room": room["id"],
        "drop": drop.json()["id"],
        "order": buy.json()["order_id"],
    }


async def test_two_starts_use_up_no_id(
    servers: Servers, resources: Resources, fresh_database: str, tmp_path: Path
) -> None:
    # (`resources` empties the session's Redis: this database numbers drops from 1 too)
    port = free_port()
    env = env_for(fresh_database, servers.valkey.url, tmp_path / "data")
    base = f"http://127.0.0.1:{port}"
    for start in (1, 2):
        api = Proc(["api", "--api-port", str(port)], env, tmp_path / f"api-{start}.log")
        try:
            await wait_healthy(base)
            rehearsed = re.search(r"orders rehearsed on (\d+) PostgreSQL", api.output())
            assert rehearsed and int(rehearsed[1]) > 0, api.output()
            assert await _used_sequences(fresh_database) == {}, f"after start {start}"
            if start == 2:
                async with httpx.AsyncClient(base_url=base, timeout=15) as http:
                    first = await _first_order(http)
        finally:
            assert api.stop() == 0, api.output()
    assert first == {"product": "1", "room": "1", "drop": "1", "order": "1"}
    used = await _used_sequences(fresh_database)
    assert (used["orders_id_seq"], used["stock_claims_id_seq"]) == (1, 1)
