"""A drop created while Redis is down: the host hears 503 (the drop is saved in PostgreSQL), and
the worker's reconciliation opens it (gate built) and announces it once Redis answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec

from core.embedded import EmbeddedValkey
from core.resources import Resources, open_resources
from livesell.app import create_app
from storefront import Shop
from storefront.worker import run_reconcile
from tests.storefront.conftest import HOST, room_events


async def test_a_drop_created_while_redis_is_down_is_announced_when_it_is_back(
    resources: Resources, auth: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", durable=False)
    settings = msgspec.structs.replace(resources.settings, redis_url=valkey.start())
    try:
        async with open_resources(settings) as res:
            shop = Shop(res)
            transport = httpx.ASGITransport(app=create_app(settings, res, shop))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                async with res.pool.acquire() as conn:
                    room_id = await conn.fetchval(
                        """INSERT INTO rooms (host_id, title, status, live_at)
                           VALUES ($1, 'Tea', 'live', now()) RETURNING id""",
                        HOST,
                    )
                product = await client.post(
                    "/api/products",
                    json={"sku": "T-1", "title": "Tea", "price_cents": 900,
                          "commission_bps": 1000},
                    headers=auth(HOST, "host"),
                )  # fmt: skip
                valkey.stop()
                created = await client.post(
                    f"/api/rooms/{room_id}/drops",
                    json={"product_id": product.json()["id"], "price_cents": 900,
                          "quantity": 3, "per_buyer_limit": 1, "starts_in_s": 0,
                          "duration_s": 600},
                    headers=auth(HOST, "host"),
                )  # fmt: skip
                assert created.status_code == 503, created.text
                error = created.json()["error"]
                assert error["code"] == "unavailable" and error["dependency"] == "redis"
                async with res.pool.acquire() as conn:
                    drop_id = await conn.fetchval(
                        "SELECT id FROM drops WHERE room_id = $1", room_id
                    )
                assert drop_id is not None, "the drop is saved"

                valkey.restart()
                assert await room_events(res, room_id) == []
                await run_reconcile(shop)
                events = await room_events(res, room_id)
                assert [e["type"] for e in events] == ["drop.started"]
                assert events[0]["drop"]["id"] == str(drop_id)
                bought = await client.post(
                    f"/api/drops/{drop_id}/buy",
                    json={"quantity": 1},
                    headers={**auth("bob", "viewer"), "Idempotency-Key": "k1"},
                )
                assert bought.status_code == 201, bought.text
                await shop.settled()
    finally:
        valkey.stop()
