"""schemathesis against the OpenAPI document, over real HTTP to a real `livesell api` process
seeded with a small shop: for every documented operation, schema-driven cases (valid and not)
with a token carrying every role. No 5xx, no hang, every error in the JSON error shape, and
responses that match their documented schema."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from core.auth import mint_token
from core.embedded import free_port
from core.openapi import build_openapi
from livesell.app import all_routes
from tests.conftest import TEST_SECRET, Servers
from tests.fuzz.stats import record

SCHEMA = schemathesis.openapi.from_dict(build_openapi(all_routes(), "livesell", "0.1.0"))
ALL_ROLES = ["admin", "host", "viewer", "distributor"]


@pytest.fixture(scope="module")
def api_url(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    root = tmp_path_factory.mktemp("schemathesis")
    env = {
        **os.environ,
        "DATABASE_URL": servers.pg.url,
        "REDIS_URL": servers.valkey.url,
        "LIVESELL_SECRET": TEST_SECRET,
        "LIVESELL_DEV": "1",
        "LIVESELL_DATA_DIR": str(root / "data"),
        "LIVESELL_LOG_LEVEL": "warning",
    }
    log = Path(root / "api.log")
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "livesell.cli", "api", "--api-port", str(port)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "api did not start"
            time.sleep(0.2)
        _seed(base)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        errors = [line for line in log.read_text().splitlines() if "Traceback" in line]
        assert not errors, log.read_text()[-3000:]


def _seed(base: str) -> None:
    """Objects whose ids generated paths may hit (small ids: 0, 1, 2 are common draws)."""
    h = {"Authorization": "Bearer " + mint_token(TEST_SECRET, "fuzz", ALL_ROLES)}
    with httpx.Client(base_url=base, headers=h, timeout=10) as api:
        product = api.post(
            "/api/products",
            json={"sku": f"FUZZ-{time.time_ns()}", "title": "t", "price_cents": 100,
                  "commission_bps": 100},
        ).json()  # fmt: skip
        room = api.post("/api/rooms", json={"title": "fuzz"}).json()
        api.post(f"/api/rooms/{room['id']}/live")
        drop = api.post(
            f"/api/rooms/{room['id']}/drops",
            json={"product_id": product["id"], "price_cents": 100, "quantity": 50,
                  "per_buyer_limit": 50, "duration_s": 3600},
        ).json()  # fmt: skip
        api.post("/api/distributors", json={})
        api.post("/api/links", json={"room_id": room["id"]})
        order = api.post(
            f"/api/drops/{drop['id']}/buy", json={"quantity": 1}, headers={"Idempotency-Key": "f1"}
        ).json()
        api.post(f"/api/orders/{order['order_id']}/pay")


@schemathesis.check
def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every refusal is `{"error": {"code", "message"}}`."""
    record("schemathesis cases")
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["error"]["code"], str), body
        assert isinstance(body["error"]["message"], str), body
    return None


@SCHEMA.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.timeout(120)
def test_api_conforms_to_its_openapi_document(case: Any, api_url: str) -> None:
    token = mint_token(TEST_SECRET, "fuzz", ALL_ROLES)
    case.call_and_validate(
        base_url=api_url,
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
        additional_checks=[error_shape],
        timeout=10,
    )
