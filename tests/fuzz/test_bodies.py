"""Every HTTP body, fuzzed: hypothesis draws bodies that use each route's real field names with
values of any JSON type, bodies of arbitrary JSON, and arbitrary bytes. No answer is a 5xx and
every refusal is in the JSON error shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livesell.app import all_routes
from storefront.payments import PaymentEvent
from tests.fuzz.stats import record
from tests.security.world import World, new_key

Auth = Callable[..., dict[str, str]]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**66), max_value=2**66)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["1", "0", "-1", "99999999999999999999", "", " ", "1e3", "true", "null"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _field_names(kind: Any) -> list[str]:
    names = [f.encode_name for f in msgspec.structs.fields(kind)]
    return names + ["unexpected"]


def _bodies(kind: Any) -> st.SearchStrategy[bytes]:
    names = _field_names(kind)
    shaped = st.dictionaries(st.sampled_from(names), json_values, max_size=len(names)).map(
        lambda d: json.dumps(d).encode()
    )
    return st.one_of(
        shaped,
        shaped,
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
    )


def body_routes() -> list[tuple[str, str, Any]]:
    found = []
    for route in all_routes():
        for method, operation in sorted(getattr(route, "operations", {}).items()):
            if operation.body is not None and method != "HEAD":
                found.append((method, route.path, operation.body))  # type: ignore[attr-defined]
    assert len(found) >= 10
    return found


def _url(path: str, w: World) -> str:
    if "/orders/" in path:
        return path.replace("{id}", w.paid_order)
    if "/drops/" in path:
        return path.replace("{id}", w.drop_id)
    return path.replace("{id}", w.room_id)


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("method", "path", "kind"), body_routes(), ids=[f"{m} {p}" for m, p, _ in body_routes()]
)
async def test_fuzzed_bodies_never_5xx(
    method: str, path: str, kind: Any, world: World, client: httpx.AsyncClient, auth: Auth
) -> None:
    samples: list[bytes] = []

    @settings(max_examples=120, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(_bodies(kind))
    def draw(body: bytes) -> None:
        samples.append(body)

    draw()
    url = _url(path, world)
    statuses: dict[int, int] = {}
    for n, body in enumerate(samples):
        # alternate callers: the host/admin who may, and a plain viewer who may not
        who = auth("root", "admin", "host", "viewer", "distributor") if n % 2 else auth(f"v{n}")
        response = await client.request(
            method,
            url,
            content=body,
            headers={**who, "Idempotency-Key": new_key(), "content-type": "application/json"},
        )
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (url, body[:200], response.text[:300])
        if response.status_code >= 400:
            error = response.json()["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str)
    record("HTTP bodies", len(samples))
    assert len(samples) >= 50 and statuses, statuses


async def test_fuzzed_webhook_events_never_5xx(world: World, client: httpx.AsyncClient) -> None:
    """Signed webhook bodies (the signature is right, the content is anything)."""
    from storefront.payments import SIGNATURE_HEADER, sign, webhook_key
    from tests.conftest import TEST_SECRET

    samples: list[bytes] = []
    data_fields = ["payment_id", "order_id", "amount_cents", "extra"]
    events = st.fixed_dictionaries(
        {},
        optional={
            **{name: json_values for name in _field_names(PaymentEvent)},
            "data": st.dictionaries(st.sampled_from(data_fields), json_values) | json_values,
            "type": st.sampled_from(["payment.succeeded", "payment.failed", "x"]),
        },
    ).map(lambda d: json.dumps(d).encode())

    @settings(max_examples=200, deadline=None, database=None)
    @given(events | st.binary(max_size=100))
    def draw(body: bytes) -> None:
        samples.append(body)

    draw()
    key = webhook_key(TEST_SECRET)
    for body in samples:
        response = await client.post(
            "/api/payments/webhook", content=body, headers={SIGNATURE_HEADER: sign(key, body)}
        )
        assert response.status_code < 500, (body[:200], response.text[:300])
        if response.status_code >= 400:
            assert response.json()["error"]["code"]
    record("signed webhook bodies", len(samples))
