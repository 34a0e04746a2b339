"""PostgreSQL stopped and restarted under a running `livesell serve`: requests meanwhile get a
clear 503 in the error shape, nothing acknowledged is lost, and service resumes by itself."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from core.embedded import EmbeddedPostgres, EmbeddedValkey, free_port
from tests.faults.procs import Proc, bearer, env_for, wait_healthy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

HOST = bearer("pg-host", "host")
_keys = itertools.count()


async def _buy(api: httpx.AsyncClient, drop_id: str, buyer: str) -> httpx.Response:
    return await api.post(
        f"/api/drops/{drop_id}/buy",
        json={"quantity": 1},
        headers={**bearer(buyer), "Idempotency-Key": f"pg-{next(_keys)}"},
    )


async def test_postgres_restart_gives_503_loses_nothing_and_recovers(
    tmp_path: Path, embedded_dir: Path
) -> None:
    pg = EmbeddedPostgres(embedded_dir / "pg", durable=True)
    pg.start()
    # its own Redis too: gate keys are per drop id, and this database numbers drops from 1
    valkey = EmbeddedValkey(tmp_path / "valkey", durable=False)
    valkey.start()
    api_port, hub_port = free_port(), free_port()
    serve = Proc(
        ["serve", "--no-demo", "--api-port", str(api_port), "--hub-port", str(hub_port)],
        env_for(pg.url, valkey.url, tmp_path / "data"),
        tmp_path / "serve.log",
    )
    base = f"http://127.0.0.1:{api_port}"
    acknowledged: dict[str, str] = {}  # order id → buyer, for every 201 the API answered
    during: Counter[int] = Counter()
    bad: list[str] = []
    try:
        await wait_healthy(base)
        async with httpx.AsyncClient(base_url=base, timeout=15) as api:
            product = await api.post(
                "/api/products",
                json={"sku": "PG-1", "title": "t", "price_cents": 100, "commission_bps": 500},
                headers=HOST,
            )
            room = (await api.post("/api/rooms", json={"title": "pg"}, headers=HOST)).json()
            await api.post(f"/api/rooms/{room['id']}/live", headers=HOST)
            drop = (
                await api.post(
                    f"/api/rooms/{room['id']}/drops",
                    json={
                        "product_id": product.json()["id"],
                        "price_cents": 100,
                        "quantity": 400,
                        "per_buyer_limit": 5,
                        "duration_s": 600,
                    },
                    headers=HOST,
                )  # fmt: skip
            ).json()
            for n in range(10):
                response = await _buy(api, drop["id"], f"early-{n}")
                assert response.status_code == 201, response.text
                acknowledged[response.json()["order_id"]] = f"early-{n}"
            for order_id, buyer in list(acknowledged.items())[:5]:
                paid = await api.post(f"/api/orders/{order_id}/pay", headers=bearer(buyer))
                assert paid.json()["order_status"] == "paid"

            outage = asyncio.Event()
            stop_storm = asyncio.Event()

            async def storm(worker: int) -> None:
                for n in itertools.count():
                    if stop_storm.is_set():
                        return
                    buyer = f"storm-{worker}-{n}"
                    try:
                        response = await _buy(api, drop["id"], buyer)
                    except httpx.HTTPError as exc:
                        bad.append(f"transport error {exc!r}")
                        continue
                    if response.status_code == 201:
                        acknowledged[response.json()["order_id"]] = buyer
                    elif response.status_code >= 500:
                        if response.status_code != 503:
                            bad.append(f"{response.status_code} {response.text}")
                        elif response.json()["error"]["code"] not in ("unavailable",):
                            bad.append(f"503 with code {response.text}")
                    if outage.is_set():
                        during[response.status_code] += 1
                    await asyncio.sleep(0.01)

            storm_tasks = [asyncio.create_task(storm(w)) for w in range(4)]
            await asyncio.sleep(0.5)

            pg.stop(mode="fast")
            outage.set()
            stopped_at = time.monotonic()
            while time.monotonic() - stopped_at < 2.0:
                for method, path, body in (
                    ("GET", f"/api/orders/{next(iter(acknowledged))}", None),
                    ("POST", "/api/rooms", {"title": "during"}),
                    ("GET", f"/api/rooms/{room['id']}", None),
                    ("GET", f"/api/products/{product.json()['id']}", None),
                ):
                    headers = bearer(acknowledged[next(iter(acknowledged))], "viewer", "host")
                    response = await api.request(method, path, json=body, headers=headers)
                    during[response.status_code] += 1
                    assert response.status_code == 503, (path, response.text)
                    error = response.json()["error"]
                    assert error["code"] == "unavailable" and error["dependency"] == "postgres"
                    assert response.headers["retry-after"]
                health = await api.get("/healthz")
                assert health.status_code == 503 and health.json()["postgres"] == "down"
                await asyncio.sleep(0.1)

            pg.requested_port = pg.port
            pg.start()
            restarted_at = time.monotonic()
            first_order, first_buyer = next(iter(acknowledged.items()))
            while True:  # the same process serves again, no restart of livesell
                response = await api.get(f"/api/orders/{first_order}", headers=bearer(first_buyer))
                if response.status_code == 200:
                    break
                assert time.monotonic() - restarted_at < 30, response.text
                await asyncio.sleep(0.1)
            recovered_s = time.monotonic() - restarted_at
            outage.clear()
            await asyncio.sleep(1.0)  # the storm carries on against the restarted server
            stop_storm.set()
            await asyncio.gather(*storm_tasks)

            assert bad == [], bad[:5]
            assert during[503] > 0, during
            # every order the API acknowledged exists, with its buyer
            for order_id, buyer in acknowledged.items():
                response = await api.get(f"/api/orders/{order_id}", headers=bearer(buyer))
                assert response.status_code == 200, (order_id, response.text)
                assert response.json()["buyer_id"] == buyer
            after = await _buy(api, drop["id"], "after-restart")
            assert after.status_code == 201, after.text
            view = (await api.get(f"/api/drops/{drop['id']}")).json()
            assert view["sold"] + view["held"] + view["remaining"] == view["quantity"]
            assert view["sold"] == 5 and view["held"] == len(acknowledged) - 5 + 1
        print(
            f"\npostgres restart: {len(acknowledged)} orders acknowledged, none lost; "
            f"during the outage {dict(during)}; serving again {recovered_s:.1f}s after restart"
        )
    finally:
        serve.stop()
        pg.stop(mode="immediate")
        valkey.stop()
    output = serve.output()
    assert "unhandled error" not in output, output[-4000:]
