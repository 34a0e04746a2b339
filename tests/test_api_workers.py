"""`livesell api --workers 2`: two processes share the port (SO_REUSEPORT), each sells through
its own gate, and a stop ends both."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import psutil

from core.embedded import free_port
from core.resources import Resources
from tests.conftest import Servers
from tests.faults.procs import Proc, bearer, env_for, wait_healthy


def _listeners(pid: int, port: int) -> list[int]:
    """The worker processes of `pid` listening on `port`."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        sockets = child.net_connections(kind="tcp")
        if any(s.status == psutil.CONN_LISTEN and s.laddr.port == port for s in sockets):
            found.append(child.pid)
    return found


async def _both_listening(api: Proc, port: int, timeout_s: float = 30.0) -> list[int]:
    """The two workers, once both listen (health answers as soon as the first does)."""
    deadline = time.monotonic() + timeout_s
    while len(workers := _listeners(api.process.pid, port)) < 2:
        assert time.monotonic() < deadline, api.output()
        await asyncio.sleep(0.1)
    assert len(workers) == 2, api.output()
    return workers


async def test_a_stop_while_the_workers_start_is_clean(servers: Servers, tmp_path: Path) -> None:
    env = env_for(servers.pg.url, servers.valkey.url, tmp_path / "data")
    api = Proc(["api", "--api-port", str(free_port()), "--workers", "2"], env, tmp_path / "a.log")
    deadline = time.monotonic() + 30
    while len(psutil.Process(api.process.pid).children()) < 2:  # spawned, still importing
        assert time.monotonic() < deadline and api.process.poll() is None, api.output()
        await asyncio.sleep(0.01)
    assert api.stop() == 0, api.output()


async def test_two_api_processes_share_a_port_and_sell_without_overselling(
    servers: Servers, resources: Resources, tmp_path: Path
) -> None:
    port = free_port()
    env = env_for(servers.pg.url, servers.valkey.url, tmp_path / "data")
    base = f"http://127.0.0.1:{port}"
    api = Proc(["api", "--api-port", str(port), "--workers", "2"], env, tmp_path / "api.log")
    try:
        await wait_healthy(base)
        workers = await _both_listening(api, port)

        host = bearer("wk-host", "host")
        async with httpx.AsyncClient(base_url=base, timeout=15) as http:
            room = (await http.post("/api/rooms", json={"title": "two"}, headers=host)).json()
            assert (await http.post(f"/api/rooms/{room['id']}/live", headers=host)).is_success
            product = await http.post(
                "/api/products",
                json={"sku": "TWO-1", "title": "t", "price_cents": 500, "commission_bps": 0},
                headers=host,
            )
            drop = await http.post(
                f"/api/rooms/{room['id']}/drops",
                json={"product_id": product.json()["id"], "price_cents": 500, "quantity": 5,
                      "per_buyer_limit": 1, "duration_s": 600},
                headers=host,
            )  # fmt: skip
            assert drop.status_code == 201, drop.text

        async def attempt(n: int) -> int:
            # a connection of its own each time: the kernel spreads them over both processes
            async with httpx.AsyncClient(base_url=base, timeout=15) as one:
                response = await one.post(
                    f"/api/drops/{drop.json()['id']}/buy",
                    json={"quantity": 1},
                    headers={**bearer(f"buyer-{n}", "viewer"), "Idempotency-Key": f"k-{n}"},
                )
                return response.status_code

        statuses = await asyncio.gather(*(attempt(n) for n in range(40)))
        assert sorted(set(statuses)) == [201, 409] and statuses.count(201) == 5, statuses
        async with resources.pool.acquire() as conn:
            held = await conn.fetchval(
                "SELECT count(*) FROM stock_claims WHERE drop_id = $1 AND state = 'held'",
                int(drop.json()["id"]),
            )
        assert held == 5
    finally:
        assert api.stop() == 0, api.output()
    assert not any(psutil.pid_exists(pid) for pid in workers), "a stop ends both workers"
