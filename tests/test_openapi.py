"""The OpenAPI document at /api/openapi.json: valid OpenAPI 3.1 (what client generators read),
every route and method in it with the statuses it answers, ids typed alike everywhere, and
request schemas exactly as strict as the server: what the schema refuses the server refuses,
what it accepts the server accepts."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import Route

from core.auth import ROLES, USER_ID_PATTERN
from core.http import ID_PATTERN
from core.openapi import build_openapi
from livesell.app import all_routes

Auth = Callable[..., dict[str, str]]
DOC = build_openapi(all_routes(), "livesell", "0.1.0")
# HTML pages, images and browser files for people, not API operations
PAGES = {
    "/host/{room_id}",
    "/r/{room_id}",
    "/d",
    "/ops",
    "/l/{code}/qr.svg",
    "/vendor/centrifuge.js",
    "/vendor/{name}",
}


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return DOC["components"]["schemas"][ref.rsplit("/", 1)[1]]  # type: ignore[no-any-return]


def _body_validator(path: str, method: str = "post") -> Draft202012Validator:
    schema = DOC["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": DOC["components"]})


async def test_the_served_document_is_valid_openapi_3_1(client: httpx.AsyncClient) -> None:
    served = (await client.get("/api/openapi.json")).json()
    assert served == DOC
    assert served["openapi"] == "3.1.0"
    validate(served)


def test_every_route_and_method_is_documented() -> None:
    routed = {
        (re.sub(r"{(\w+)(?::\w+)?}", r"{\1}", route.path), method.lower())
        for route in all_routes()
        if isinstance(route, Route) and route.path not in PAGES
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, item in DOC["paths"].items() for method in item}
    assert routed == documented
    assert {("/metrics", "get"), ("/healthz", "get"), ("/api/openapi.json", "get")} <= documented


def test_non_json_responses_name_their_media_type() -> None:
    assert set(DOC["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    csv = DOC["paths"]["/api/admin/payouts/{id}.csv"]["get"]["responses"]["200"]
    assert set(csv["content"]) == {"text/csv"}
    assert set(DOC["paths"]["/healthz"]["get"]["responses"]) == {"200", "503"}


def test_error_statuses_follow_from_body_auth_and_limits() -> None:
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            responses = set(operation["responses"])
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= responses, (method, path)
            if "security" in operation:
                assert "401" in responses, (method, path)
    buy = DOC["paths"]["/api/drops/{id}/buy"]["post"]["responses"]
    assert {"201", "400", "401", "403", "404", "409", "413", "422", "429"} <= set(buy)
    assert "429" in DOC["paths"]["/l/{code}"]["get"]["responses"]
    assert "429" in DOC["paths"]["/api/rooms/{id}/enter"]["post"]["responses"]


def test_the_webhook_documents_the_signed_payment_event() -> None:
    webhook = DOC["paths"]["/api/payments/webhook"]["post"]
    body = webhook["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PaymentEvent"
    }
    assert {"name": "Livesell-Signature", "in": "header", "required": True}.items() <= next(
        p for p in webhook["parameters"] if p["name"] == "Livesell-Signature"
    ).items()
    event = DOC["components"]["schemas"]["PaymentEvent"]
    assert set(event["required"]) == {"id", "provider", "type", "created", "data"}


def test_a_body_is_required_exactly_when_it_has_a_required_field() -> None:
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            if "requestBody" not in operation:
                continue
            body = operation["requestBody"]
            schema = _resolve(body["content"]["application/json"]["schema"])
            assert body["required"] is bool(schema.get("required")), (method, path)
    assert DOC["paths"]["/api/distributors"]["post"]["requestBody"]["required"] is False


def test_ids_are_strings_everywhere() -> None:
    """Every `id`, `*_id` and `before` is a string; where the client sends one of livesell's ids
    (bodies, paths, queries), it is the one id pattern, and a user id (the integrating app's,
    a token's `sub`) is the one user id pattern."""
    components = DOC["components"]["schemas"]
    # what the payment provider names with its own ids
    inbound: list[dict[str, Any]] = [components["PaymentEventData"]]
    for item in DOC["paths"].values():
        for operation in item.values():
            inbound += [p["schema"] for p in operation["parameters"] if p["in"] != "header"]
            if "requestBody" in operation:
                ref = operation["requestBody"]["content"]["application/json"]["schema"]
                inbound.append(_resolve(ref))
    is_id = re.compile(r"^(id|before|.*_id)$")
    # bodies in a payment provider's own format: their ids are the provider's
    provider_bodies = [
        components[name] for name in ("PaymentEvent", "WeChatPayNotification", "StripeEvent")
    ]
    for schema in [*inbound, *list(_walk(components))]:
        for name, prop in schema.get("properties", {}).items():
            if is_id.match(name):
                kinds = [_resolve(s) for s in prop.get("anyOf", [prop])]
                assert all(k.get("type") in ("string", "null") for k in kinds), (name, prop)
    inbound_ids = 0
    for schema in inbound:
        for name, prop in schema.get("properties", {}).items():
            if is_id.match(name) and schema not in provider_bodies:
                if name in ("payment_id", "refund_id"):  # references the provider echoes back
                    continue
                strings = [s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"]
                pattern = USER_ID_PATTERN if name == "user_id" else ID_PATTERN
                assert [s.get("pattern") for s in strings] == [pattern], (name, prop)
                inbound_ids += 1
    for item in DOC["paths"].values():
        for operation in item.values():
            for p in operation["parameters"]:
                if p["in"] in ("path", "query") and is_id.match(p["name"]):
                    pattern = USER_ID_PATTERN if p["name"] == "user_id" else ID_PATTERN
                    assert p["schema"]["pattern"] == pattern, p
                    inbound_ids += 1
    assert inbound_ids > 25


def test_patterns_mean_the_same_in_python_and_ecma_262() -> None:
    """No class shorthand whose set differs between the two (`\\d`, `\\s`, `\\w`...), and every
    end anchor `$` written `$(?!\\n)`: Python's `$` also matches before a final newline."""
    patterns = [s["pattern"] for s in _walk(DOC) if isinstance(s.get("pattern"), str)]
    assert len(patterns) > 10
    for pattern in patterns:
        re.compile(pattern)
        assert not re.search(r"(?<!\\)(?:\\\\)*\\[dDsSwWbB]", pattern), pattern
        for end in re.finditer(r"(?<!\\)\$", pattern):
            assert pattern[end.end() :].startswith("(?!\\n)"), pattern
        if "$" in pattern:
            assert pattern.startswith("^"), pattern


def test_roles_are_an_enum_of_the_known_roles() -> None:
    dev = DOC["components"]["schemas"]["DevTokenRequest"]["properties"]["roles"]
    assert sorted(dev["items"]["enum"]) == sorted(ROLES)
    for operation in _walk(DOC["paths"]):
        if "security" in operation:
            named = operation["description"].removeprefix("roles: ").split(", ")
            assert set(named) <= ROLES | {"any", "buyer"}, operation["summary"]


def test_query_parameters_are_never_null() -> None:
    for item in DOC["paths"].values():
        for operation in item.values():
            for p in operation["parameters"]:
                assert "null" not in msgspec.json.encode(p["schema"]).decode(), p


async def test_the_server_refuses_exactly_what_the_schema_refuses(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    admin = auth("schema-host", "host", "admin", "viewer", "distributor")
    product = (
        await client.post(
            "/api/products",
            json={"sku": "SCHEMA-1", "title": "t", "price_cents": 100, "commission_bps": 0},
            headers=admin,
        )
    ).json()
    room = (await client.post("/api/rooms", json={"title": "r"}, headers=admin)).json()
    assert (await client.post("/api/distributors", headers=admin)).status_code == 201
    drop = {"price_cents": 100, "quantity": 5, "per_buyer_limit": 1}
    pid, rid = product["id"], room["id"]
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("/api/rooms", "/api/rooms", {"title": ""}),
        ("/api/rooms", "/api/rooms", {"title": "   "}),
        ("/api/rooms", "/api/rooms", {"title": "\u3000\n"}),
        ("/api/rooms", "/api/rooms", {"title": "x" * 201}),
        ("/api/rooms", "/api/rooms", {"title": " a "}),
        ("/api/rooms", "/api/rooms", {"title": "\u200b"}),
        ("/api/rooms/{id}/drops", f"/api/rooms/{rid}/drops", {**drop, "product_id": int(pid)}),
        ("/api/rooms/{id}/drops", f"/api/rooms/{rid}/drops", {**drop, "product_id": "0"}),
        ("/api/rooms/{id}/drops", f"/api/rooms/{rid}/drops", {**drop, "product_id": "0" + pid}),
        ("/api/rooms/{id}/drops", f"/api/rooms/{rid}/drops", {**drop, "product_id": pid + "\n"}),
        ("/api/rooms/{id}/pin", f"/api/rooms/{rid}/pin", {"product_id": int(pid)}),
        ("/api/rooms/{id}/pin", f"/api/rooms/{rid}/pin", {"product_id": pid + "\n"}),
        ("/api/rooms/{id}/pin", f"/api/rooms/{rid}/pin", {"product_id": pid}),
        ("/api/links", "/api/links", {"room_id": int(rid)}),
        ("/api/links", "/api/links", {"room_id": "0"}),
        ("/api/links", "/api/links", {"room_id": rid, "product_id": pid + "\n"}),
        ("/api/links", "/api/links", {"room_id": rid, "product_id": pid}),
        (
            "/api/products",
            "/api/products",
            {
                "sku": "S2",
                "title": "t",
                "price_cents": 1,
                "commission_bps": 0,
                "image_url": "https://x.test/a.png\n",
            },
        ),
        ("/api/distributors", "/api/distributors", {"team": " \t"}),
        ("/api/distributors", "/api/distributors", {"team": "a"}),
        ("/api/dev/token", "/api/dev/token", {"sub": "a", "roles": ["root"]}),
        ("/api/dev/token", "/api/dev/token", {"sub": "", "roles": ["host"]}),
        ("/api/dev/token", "/api/dev/token", {"sub": "a\x7f"}),
        ("/api/dev/token", "/api/dev/token", {"sub": "a", "ttl_s": 0}),
        ("/api/dev/token", "/api/dev/token", {"sub": "a", "ttl_s": 60}),
        # JSON Schema's integer is a value: 120.0 is one, 120.5 is not
        ("/api/dev/token", "/api/dev/token", {"sub": "a", "ttl_s": 120.0}),
        ("/api/dev/token", "/api/dev/token", {"sub": "a", "ttl_s": 120.5}),
    ]
    for template, path, body in cases:
        schema_accepts = _body_validator(template).is_valid(body)
        response = await client.post(path, json=body, headers=admin)
        error = response.json().get("error", {}) if response.status_code >= 400 else {}
        refused_as_invalid = response.status_code == 422 and error.get("code") == "unprocessable"
        assert refused_as_invalid is not schema_accepts, (path, body, response.text)
        if schema_accepts:
            assert response.status_code < 300, (path, body, response.text)


async def test_a_missing_optional_body_is_accepted(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.post("/api/distributors", headers=auth("nobody-body"))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("key", ["", " ", "a\x7f", "é", "k" * 256])
async def test_idempotency_keys_follow_the_documented_pattern(
    client: httpx.AsyncClient, auth: Auth, key: str
) -> None:
    parameter = next(
        p
        for p in DOC["paths"]["/api/drops/{id}/buy"]["post"]["parameters"]
        if p["name"] == "Idempotency-Key"
    )
    assert not Draft202012Validator(parameter["schema"]).is_valid(key)
    response = await client.post(
        "/api/drops/1/buy",
        json={"quantity": 1},
        headers={**auth("buyer"), "Idempotency-Key": key.encode("latin-1")},
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == (
        "idempotency_key_required"
    )
