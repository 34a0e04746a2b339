"""Redis stopped and restarted (losing everything) during a buy storm, under a running
`livesell serve`: no oversell, the gate is rebuilt from PostgreSQL and sells exactly the
quantity, the hub resubscribes, and a viewer's SDK resynchronises and follows the room again."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.embedded import EmbeddedValkey, free_port
from core.resources import Resources
from tests.conftest import Servers
from tests.faults.procs import Proc, bearer, env_for, wait_healthy
from tests.live.sdk import PythonViewer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

HOST = bearer("rd-host", "host")
QUANTITY = 60
_keys = itertools.count()


async def test_redis_restart_during_a_storm(
    servers: Servers, resources: Resources, tmp_path: Path
) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", durable=False)
    valkey.start()
    api_port, hub_port = free_port(), free_port()
    serve = Proc(
        ["serve", "--no-demo", "--api-port", str(api_port), "--hub-port", str(hub_port)],
        env_for(servers.pg.url, valkey.url, tmp_path / "data"),
        tmp_path / "serve.log",
    )
    base = f"http://127.0.0.1:{api_port}"
    statuses: Counter[int] = Counter()
    bad: list[str] = []
    viewer = None
    try:
        await wait_healthy(base)
        await serve.wait_port(hub_port)
        async with httpx.AsyncClient(base_url=base, timeout=15) as api:
            product = await api.post(
                "/api/products",
                json={"sku": "RD-1", "title": "t", "price_cents": 100, "commission_bps": 500},
                headers=HOST,
            )
            room = (await api.post("/api/rooms", json={"title": "rd"}, headers=HOST)).json()
            await api.post(f"/api/rooms/{room['id']}/live", headers=HOST)
            viewer = PythonViewer(
                f"ws://127.0.0.1:{hub_port}/connection/websocket", f"room:{room['id']}"
            )
            await viewer.start()
            await viewer.next("subscribed")
            drop = (
                await api.post(
                    f"/api/rooms/{room['id']}/drops",
                    json={
                        "product_id": product.json()["id"],
                        "price_cents": 100,
                        "quantity": QUANTITY,
                        "per_buyer_limit": 2,
                        "duration_s": 600,
                    },
                    headers=HOST,
                )  # fmt: skip
            ).json()
            assert (await viewer.next("publication"))["data"]["type"] == "drop.started"

            async def attempt(buyer: str) -> None:
                try:
                    response = await api.post(
                        f"/api/drops/{drop['id']}/buy",
                        json={"quantity": 1},
                        headers={**bearer(buyer), "Idempotency-Key": f"rd-{next(_keys)}"},
                    )
                except httpx.HTTPError as exc:
                    bad.append(repr(exc))
                    return
                statuses[response.status_code] += 1
                if response.status_code >= 500 and response.status_code != 503:
                    bad.append(response.text)
                if response.status_code >= 400:
                    assert response.json()["error"]["code"]

            async def storm(n: int, prefix: str) -> None:
                queue = [f"{prefix}-{i % 150}" for i in range(n)]

                async def worker() -> None:
                    while queue:
                        await attempt(queue.pop())

                await asyncio.gather(*(worker() for _ in range(8)))

            first = asyncio.create_task(storm(100, "a"))
            await asyncio.sleep(0.3)
            valkey.stop()  # every key is lost: gate, history, counters
            await asyncio.sleep(1.5)
            valkey.restart()
            await first
            await storm(300, "b")

            # the gate was rebuilt from PostgreSQL: fresh buyers take exactly what is left
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                view = (await api.get(f"/api/drops/{drop['id']}")).json()
                if view["remaining"] == 0:
                    break
                assert asyncio.get_running_loop().time() < deadline, view
                await storm(20, f"late-{view['remaining']}")
                await asyncio.sleep(0.5)

            assert bad == [], bad[:5]
            assert statuses[201] >= QUANTITY and statuses[503] + statuses[409] > 0, statuses
            async with resources.pool.acquire() as conn:
                truth = await conn.fetchrow(
                    """SELECT (SELECT count(*) FROM stock_claims WHERE drop_id = $1
                               AND state <> 'released') AS live,
                              (SELECT count(*) FROM (SELECT unit_no FROM stock_claims
                               WHERE drop_id = $1 AND state <> 'released'
                               GROUP BY unit_no HAVING count(*) > 1) d) AS doubled,
                              (SELECT coalesce(max(live_units), 0) FROM drop_buyers
                               WHERE drop_id = $1) AS worst""",
                    int(drop["id"]),
                )
            assert truth["live"] == QUANTITY, f"oversold or undersold: {dict(truth)}"
            assert truth["doubled"] == 0 and truth["worst"] <= 2, dict(truth)

            # the hub resubscribed; the viewer resynchronised (history was lost with Redis, so
            # it reloads the snapshot: recovered false) and follows the room again: it learns
            # the room ended from the event, or, when the end happened before its hub heard
            # Redis again, from the snapshot of its resubscription
            await api.post(f"/api/rooms/{room['id']}/end", headers=HOST)
            after: list[dict[str, Any]] = []

            def ended(event: dict[str, Any]) -> bool:
                data = event.get("data")
                if not isinstance(data, dict):
                    return False
                if event["event"] == "subscribed":
                    return bool(data.get("room", {}).get("status") == "ended")
                return bool(data.get("type") == "room.ended")

            try:
                async with asyncio.timeout(30):
                    while not after or not ended(after[-1]):
                        after.append(await viewer.events.queue.get())
            except TimeoutError:
                summary = [(e["event"], e.get("recovered"), e.get("code"),
                            isinstance(e.get("data"), dict) and e["data"].get("type"),
                            e.get("offset")) for e in after]  # fmt: skip
                raise AssertionError(f"the viewer never learnt the room ended: {summary}") from None
            resynced = [e for e in after if e["event"] == "subscribed"]
            assert resynced and resynced[-1]["wasRecovering"] and not resynced[-1]["recovered"]
            assert isinstance(resynced[-1]["data"], dict) and "room" in resynced[-1]["data"]
        print(f"\nredis restart: statuses {dict(statuses)}; {QUANTITY} units sold, none twice")
    finally:
        if viewer is not None:
            await viewer.disconnect()
        serve.stop()
        valkey.stop()
    assert "unhandled error" not in serve.output(), serve.output()[-4000:]
