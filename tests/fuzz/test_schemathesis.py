"""schemathesis against the OpenAPI document, over real HTTP to a real `livesell api` process
seeded with a small shop: for every documented operation, schema-driven cases (valid and not)
with a token carrying every role, judged by every check schemathesis has. No 5xx, no hang,
every error in the JSON error shape, responses that match their documented status, media type
and schema, invalid input refused and valid input accepted (a 422 for valid input only with a
domain code: a product that does not exist, a refund larger than the order...)."""

from __future__ import annotations

import json
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
from schemathesis.checks import CHECKS, load_all_checks, not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)

from core.auth import mint_token
from core.embedded import free_port
from core.openapi import build_openapi
from livesell.app import all_routes
from storefront.payments import SIGNATURE_HEADER, sign, webhook_key
from tests.conftest import TEST_SECRET, Servers
from tests.fuzz.stats import record

# Valid input may still be refused for what no schema can say: a product or order that does
# not exist (422 with a domain code). `valid_input_not_refused_as_invalid` holds such refusals
# to a domain code; a refusal of valid input as malformed (code unprocessable or bad_request)
# is the schema being looser than the server.
ALL_ROLES = ["admin", "host", "viewer", "distributor"]
# the token goes where the document's security schemes say, so that schemathesis knows when a
# case (ignored_auth, a negative case without credentials) is sent without it
TOKEN = mint_token(TEST_SECRET, "fuzz", ALL_ROLES, ttl_s=7 * 86_400)
CONFIG = SchemathesisConfig.from_dict(
    {
        "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
            }
        },
    }
)
SCHEMA = schemathesis.openapi.from_dict(
    build_openapi(all_routes(), "livesell", "0.1.0"), config=CONFIG
)
# every check schemathesis has (use_after_free and ensure_resource_availability judge sequences
# of calls: they find nothing to judge in single cases, and run for completeness)
ALL_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    use_after_free,
    ensure_resource_availability,
    ignored_auth,
]
# checks that judge a whole run, not a response (object_level_authorization compares users)
RUN_CHECKS = {"object_level_authorization"}


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
    if response.status_code < 300 and case.operation.definition.raw.get("security"):
        record("schemathesis cases answered 2xx on authenticated operations")
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["error"]["code"], str), body
        assert isinstance(body["error"]["message"], str), body
    return None


@schemathesis.check
def valid_input_not_refused_as_invalid(ctx: Any, response: Any, case: Any) -> bool | None:
    """Input the schema calls valid is never refused as malformed."""
    if case.meta is not None and case.meta.generation.mode.is_positive:
        if response.status_code in (400, 422):
            code = response.json()["error"]["code"]
            assert code not in ("unprocessable", "bad_request"), response.text
    return None


def test_every_check_schemathesis_has_runs() -> None:
    load_all_checks()
    names = {check.__name__ for check in ALL_CHECKS}
    assert set(CHECKS.get_all_names()) - {"error_shape", "valid_input_not_refused_as_invalid"} == (
        names | RUN_CHECKS
    )


def _signed(case: Any) -> None:
    """A webhook case whose body is JSON carries a valid signature of exactly that body, so the
    event itself is exercised (an unsigned one stops at the signature)."""
    if case.path != "/api/payments/webhook" or case.body is None:
        return
    try:
        raw = json.dumps(case.body, allow_nan=False).encode()
    except (TypeError, ValueError):
        return
    case.headers = {**(case.headers or {}), SIGNATURE_HEADER: sign(webhook_key(TEST_SECRET), raw)}


@SCHEMA.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.timeout(120)
def test_api_conforms_to_its_openapi_document(case: Any, api_url: str) -> None:
    _signed(case)
    case.call_and_validate(
        base_url=api_url,
        checks=ALL_CHECKS,
        additional_checks=[error_shape, valid_input_not_refused_as_invalid],
        timeout=10,
    )
