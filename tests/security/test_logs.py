"""Secrets never reach the logs: a real `livesell serve` at debug level runs a whole flow (tokens
in headers, in a link's query and in the hub's connect; a signed webhook; refused tokens and
signatures) and its output holds neither the secret, nor a token, nor a signature."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from core.auth import mint_token
from core.embedded import free_port
from storefront.payments import SIGNATURE_HEADER, sign, webhook_key
from tests.conftest import Servers

pytestmark = pytest.mark.slow

SECRET = "log-test-secret-d1c3b7a9f0e2-" + "k" * 16


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("livesell serve did not become healthy")


async def test_secrets_tokens_and_signatures_never_logged(servers: Servers, tmp_path: Path) -> None:
    api_port, hub_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = {
        **os.environ,
        "DATABASE_URL": servers.pg.url,
        "REDIS_URL": servers.valkey.url,
        "LIVESELL_SECRET": SECRET,
        "LIVESELL_DEV": "1",
        "LIVESELL_DATA_DIR": str(tmp_path / "data"),
        "LIVESELL_LOG_LEVEL": "debug",
    }
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "livesell.cli", "serve", "--no-demo",
             "--api-port", str(api_port), "--hub-port", str(hub_port)],
            env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{api_port}"
    tokens = {
        who: mint_token(SECRET, who, roles)
        for who, roles in (
            ("log-host", ["host"]),
            ("log-buyer", ["viewer"]),
            ("log-dist", ["viewer", "distributor"]),
        )
    }
    signatures: list[str] = []
    try:
        _wait_healthy(base, process, log)
        h = {who: {"Authorization": f"Bearer {t}"} for who, t in tokens.items()}
        async with httpx.AsyncClient(base_url=base, timeout=10) as api:
            product = await api.post(
                "/api/products",
                json={"sku": f"LOG-{api_port}", "title": "t", "price_cents": 500,
                      "commission_bps": 1000},
                headers=h["log-host"],
            )  # fmt: skip
            room = (await api.post("/api/rooms", json={"title": "r"}, headers=h["log-host"])).json()
            await api.post(f"/api/rooms/{room['id']}/live", headers=h["log-host"])
            drop = (
                await api.post(
                    f"/api/rooms/{room['id']}/drops",
                    json={
                        "product_id": product.json()["id"],
                        "price_cents": 500,
                        "quantity": 3,
                        "per_buyer_limit": 1,
                    },
                    headers=h["log-host"],
                )  # fmt: skip
            ).json()
            await api.post("/api/distributors", json={}, headers=h["log-dist"])
            link = (
                await api.post("/api/links", json={"room_id": room["id"]}, headers=h["log-dist"])
            ).json()
            # a token in a link's query string (apps without cookies pass it that way)
            await api.get(f"/l/{link['code']}?token={tokens['log-buyer']}")
            async with connect(f"ws://127.0.0.1:{hub_port}/connection/websocket") as ws:
                await ws.send(json.dumps({"id": 1, "connect": {"token": tokens["log-dist"]}}))
                await ws.recv()
                await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "dashboard#log-dist"}}))
                await ws.recv()
            bought = await api.post(
                f"/api/drops/{drop['id']}/buy",
                json={"quantity": 1},
                headers={**h["log-buyer"], "Idempotency-Key": "log-key-1"},
            )
            order_id = bought.json()["order_id"]
            paid = await api.post(f"/api/orders/{order_id}/pay", headers=h["log-buyer"])
            assert paid.json()["order_status"] == "paid", paid.text
            # refusals: a forged token, a token with a wrong secret, a forged webhook
            forged = tokens["log-buyer"][:-4] + "AAAA"
            await api.get("/api/distributors/me", headers={"Authorization": f"Bearer {forged}"})
            body = json.dumps({"id": "e", "provider": "simulated", "type": "payment.succeeded",
                               "created": int(time.time()),
                               "data": {"payment_id": "p", "order_id": order_id,
                                        "amount_cents": 1}}).encode()  # fmt: skip
            for key in (webhook_key(SECRET), b"wrong"):
                signatures.append(sign(key, body))
                await api.post(
                    "/api/payments/webhook",
                    content=body,
                    headers={SIGNATURE_HEADER: signatures[-1]},
                )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    output = log.read_text(errors="replace")
    assert "DEBUG" in output or "INFO" in output, "the process logged at debug level"
    forbidden = {
        "the secret": SECRET,
        "the webhook key": webhook_key(SECRET).hex(),
        **{f"{who}'s token": t for who, t in tokens.items()},
        # a token's signature part alone would let nobody forge, but it is still a credential
        **{f"{who}'s token signature": t.rsplit(".", 1)[1] for who, t in tokens.items()},
        **{f"webhook signature {n}": s.split("v1=")[1] for n, s in enumerate(signatures)},
    }
    leaked = [what for what, value in forbidden.items() if value in output]
    assert leaked == [], f"leaked into the logs: {leaked}"
