"""A hub node SIGKILLed during a drop: viewers' SDKs (centrifuge-python) reconnect through the
load balancer to the other node and recover every event they missed, in order, exactly once."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from core.embedded import free_port
from core.resources import Resources
from tests.conftest import Servers
from tests.faults.procs import Proc, bearer, env_for, wait_healthy
from tests.live.sdk import PythonViewer
from tests.live.test_nodes import SwitchingProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

HOST = bearer("hk-host", "host")
COALESCED = {"stock.changed", "viewers.changed", "leaderboard.changed"}
VIEWERS = 3
_keys = itertools.count()


async def _collect_until(viewer: PythonViewer, marker: str, into: list[dict[str, Any]]) -> None:
    while True:
        event = await viewer.events.queue.get()
        if event["event"] == "publication":
            into.append(event)
            if event["data"]["type"] == marker:
                return
        elif event["event"] == "subscribed":
            into.append(event)


async def test_hub_node_killed_during_a_drop(
    servers: Servers, resources: Resources, tmp_path: Path
) -> None:
    env = env_for(servers.pg.url, servers.valkey.url, tmp_path / "data")
    hub_a, hub_b, api_b = free_port(), free_port(), free_port()
    node_a = Proc(["hub", "--hub-port", str(hub_a)], env, tmp_path / "a.log")
    node_b = Proc(
        ["serve", "--no-demo", "--api-port", str(api_b), "--hub-port", str(hub_b)],
        env,
        tmp_path / "b.log",
    )
    proxy = SwitchingProxy(hub_a)
    viewers: list[PythonViewer] = []
    try:
        await node_a.wait_port(hub_a)
        await node_b.wait_port(hub_b)
        await wait_healthy(f"http://127.0.0.1:{api_b}")
        await proxy.start()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_b}", timeout=15) as api:
            products = [
                (
                    await api.post(
                        "/api/products",
                        json={
                            "sku": f"HK-{n}",
                            "title": "t",
                            "price_cents": 100,
                            "commission_bps": 500,
                        },
                        headers=HOST,
                    )  # fmt: skip
                ).json()["id"]
                for n in range(2)
            ]
            room = (await api.post("/api/rooms", json={"title": "hk"}, headers=HOST)).json()
            await api.post(f"/api/rooms/{room['id']}/live", headers=HOST)
            url = f"ws://127.0.0.1:{proxy.port}/connection/websocket"
            viewers = [PythonViewer(url, f"room:{room['id']}") for _ in range(VIEWERS)]
            for viewer in viewers:
                await viewer.start()
                await viewer.next("subscribed")
            drop = (
                await api.post(
                    f"/api/rooms/{room['id']}/drops",
                    json={
                        "product_id": products[0],
                        "price_cents": 100,
                        "quantity": 50,
                        "per_buyer_limit": 2,
                        "duration_s": 600,
                    },
                    headers=HOST,
                )  # fmt: skip
            ).json()

            async def buy_and_pay(buyer: str) -> None:
                response = await api.post(
                    f"/api/drops/{drop['id']}/buy",
                    json={"quantity": 1},
                    headers={**bearer(buyer), "Idempotency-Key": f"hk-{next(_keys)}"},
                )
                assert response.status_code == 201, response.text
                order = response.json()["order_id"]
                paid = await api.post(f"/api/orders/{order}/pay", headers=bearer(buyer))
                assert paid.status_code == 200

            for n in range(3):
                await buy_and_pay(f"before-{n}")

            # node A dies mid-drop; the load balancer holds reconnects until sales went on
            proxy.open.clear()
            proxy.target = hub_b
            node_a.process.send_signal(signal.SIGKILL)
            node_a.process.wait(timeout=10)
            for n in range(5):
                await buy_and_pay(f"during-{n}")
            await api.post(
                f"/api/rooms/{room['id']}/pin", json={"product_id": products[1]}, headers=HOST
            )
            proxy.open.set()

            received: list[list[dict[str, Any]]] = [[] for _ in viewers]
            await asyncio.wait_for(
                asyncio.gather(
                    *(
                        _collect_until(v, "card.pinned", r)
                        for v, r in zip(viewers, received, strict=True)
                    )
                ),
                30,
            )
            # after the failover node B keeps them live
            await api.post(f"/api/drops/{drop['id']}/close", headers=HOST)
            for viewer, got in zip(viewers, received, strict=True):
                await asyncio.wait_for(_collect_until(viewer, "drop.closed", got), 20)

        history = await resources.redis.xrange(f"{{room:{room['id']}}}:history")
        stream = [
            (int(entry.split(b"-")[0]), msgspec.json.decode(fields[b"d"])["type"])
            for entry, fields in history
        ]
        started = next(offset for offset, kind in stream if kind == "drop.started")
        expected = [(o, k) for o, k in stream if o >= started and k not in COALESCED]
        recovered_total = 0
        for got in received:
            resubscribed = [e for e in got if e["event"] == "subscribed"]
            assert resubscribed and all(
                e["wasRecovering"] and e["recovered"] for e in resubscribed
            ), resubscribed
            publications = [(e["offset"], e["data"]["type"]) for e in got
                            if e["event"] == "publication"]  # fmt: skip
            mine = [(o, k) for o, k in publications if k not in COALESCED and o >= started]
            # the first publications before the kill came in earlier `next` calls: drop.started
            assert [p for p in expected if p[0] > mine[0][0] - 1] == mine, (expected, mine)
            offsets = [o for o, _ in publications]
            assert offsets == sorted(set(offsets)), "in order, each exactly once"
            # what arrived after the resubscribe, up to the pin made while the node was down
            after = got[got.index(resubscribed[0]) + 1 :]
            pinned = next(i for i, e in enumerate(after) if e["data"]["type"] == "card.pinned")
            recovered_total += pinned + 1
        kinds = [k for _, k in expected]
        assert kinds.count("order.placed") == 8 and "card.pinned" in kinds
        print(f"\nhub kill: {VIEWERS} viewers recovered {recovered_total} events, none missing")
    finally:
        for viewer in viewers:
            await viewer.disconnect()
        await proxy.close()
        node_a.stop()
        node_b.stop()
