"""The buy route's early refusals (storefront.buy.early): refusals the gate's memory proves are
answered before routing, byte for byte as the route answers them; everything else still reaches
the route, with its body whole; and what the answerer remembers between attempts stays bounded
and decodes as the route decodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from core.auth import mint_token
from core.errors import LivesellError
from core.resources import Resources
from core.settings import Settings
from livesell.app import create_app
from storefront import Shop
from storefront.buy import early, flow
from tests.storefront.conftest import Auth, Buy, StartDrop, new_key


@dataclass
class Counted:
    http: httpx.AsyncClient
    app: Any
    route_calls: list[str] = field(default_factory=list)


@pytest.fixture
async def counted(
    settings: Settings, resources: Resources, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Counted]:
    """An API app whose buy route notes every request that reaches it."""
    original = flow.buy
    calls: list[str] = []

    async def buy(request: Request) -> Response:
        calls.append(request.url.path)
        return await original(request)

    monkeypatch.setattr(flow, "buy", buy)
    app = create_app(settings, resources, shop)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://livesell.test") as http:
        yield Counted(http, app, calls)


async def _sold_out(start_drop: StartDrop, buy: Buy, **drop: Any) -> tuple[str, httpx.Response]:
    """A sold-out drop, and the route's answer to the first loser (the gate said so)."""
    created = await start_drop(**{"quantity": 1, "per_buyer_limit": 1, **drop})
    assert (await buy(created["id"], "winner", key="won")).status_code == 201
    first_loser = await buy(created["id"], "first-loser")  # the refusal is remembered now
    assert first_loser.status_code == 409
    return created["id"], first_loser


def _count(status: str) -> float:
    labels = {"method": "POST", "route": early.ROUTE, "status": status}
    return REGISTRY.get_sample_value("livesell_http_requests_total", labels) or 0.0


async def test_refusals_skip_the_route_and_match_it_byte_for_byte(
    counted: Counted, auth: Auth, start_drop: StartDrop, buy: Buy
) -> None:
    drop_id, by_route = await _sold_out(start_drop, buy)
    counted.route_calls.clear()
    url = f"/api/drops/{drop_id}/buy"
    headers = {**auth("dave", "viewer"), "Idempotency-Key": new_key()}
    counted.app.state.resources.tokens.forget()  # dave is new here: the early path verifies
    counted_409 = _count("409")
    for _ in range(5):
        fast = await counted.http.post(
            url, json={"quantity": 1}, headers={**headers, "Idempotency-Key": new_key()}
        )
        assert fast.status_code == by_route.status_code == 409
        assert fast.content == by_route.content
        assert fast.headers == by_route.headers
    assert counted.route_calls == [], "answered early, without the route"
    assert _count("409") == counted_409 + 5  # and the metrics still count them


async def test_everything_else_reaches_the_route(
    counted: Counted, auth: Auth, start_drop: StartDrop, buy: Buy, settings: Settings
) -> None:
    drop_id, _ = await _sold_out(start_drop, buy)
    url = f"/api/drops/{drop_id}/buy"
    viewer = auth("erin", "viewer")
    first = await counted.http.post(url, json={}, headers={**viewer, "Idempotency-Key": "a"})
    assert first.status_code == 409
    counted.route_calls.clear()  # erin's token is remembered now

    cases: list[tuple[dict[str, str], bytes, int, str]] = [
        ({"Idempotency-Key": "k1"}, b'{"quantity":1}', 401, "unauthorized"),
        ({**auth("erin", "host"), "Idempotency-Key": "k2"}, b"{}", 403, "forbidden"),
        (viewer, b'{"quantity":1}', 400, "idempotency_key_required"),
        ({**viewer, "Idempotency-Key": "k3"}, b'{"quantity":0}', 422, "unprocessable"),
        ({**viewer, "Idempotency-Key": "k4"}, b'{"quantity":1,"x":2}', 422, "unprocessable"),
        ({**viewer, "Idempotency-Key": "k5"}, b"{not json", 400, "bad_request"),
        ({**viewer, "Idempotency-Key": "k6", "Authorization": "Bearer x.y.z"}, b"{}", 401, ""),
    ]
    for headers, body, status, code in cases:
        response = await counted.http.post(
            url, content=body, headers={**headers, "content-type": "application/json"}
        )
        assert response.status_code == status, (headers, body, response.text)
        if code:
            assert response.json()["error"]["code"] == code
    assert len(counted.route_calls) == len(cases)

    # a replay is the route's to answer: the stored 201, with the body handed on intact
    counted.route_calls.clear()
    replay = await counted.http.post(
        url, json={"quantity": 1}, headers={**auth("winner", "viewer"), "Idempotency-Key": "won"}
    )
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert counted.route_calls == [url]

    # a token never seen by this process is verified on the early path; one that fails is
    # refused by the route, every time (a failure is not remembered)
    stranger = mint_token(settings.secret, "frank", ["viewer"])
    forged = mint_token("not-the-secret-0123456789abcdef0123456", "frank", ["viewer"])
    counted.app.state.resources.tokens.forget()
    counted.route_calls.clear()
    for token, status, route_calls in ((stranger, 409, 0), (forged, 401, 1), (forged, 401, 2)):
        again = await counted.http.post(
            url,
            json={"quantity": 1},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": new_key()},
        )
        assert again.status_code == status
        assert len(counted.route_calls) == route_calls


async def _asgi_post(app: Any, path: str, headers: dict[str, str], chunks: list[bytes]) -> Message:
    """POST `chunks` as separate ASGI body messages; returns the response start message."""
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("livesell.test", 80),
    }
    await app(scope, receive, send)
    start = sent[0]
    start["body"] = b"".join(m.get("body", b"") for m in sent[1:])
    return start


async def test_a_body_in_several_chunks_is_handed_on_whole(
    counted: Counted, auth: Auth, start_drop: StartDrop, buy: Buy
) -> None:
    drop_id, _ = await _sold_out(start_drop, buy)
    path = f"/api/drops/{drop_id}/buy"
    chunks = [b'{"quan', b'tity": 1}']
    refused = await _asgi_post(
        counted.app, path, {**auth("gus", "viewer"), "Idempotency-Key": "g1"}, chunks
    )
    assert refused["status"] == 409
    replay = await _asgi_post(
        counted.app, path, {**auth("winner", "viewer"), "Idempotency-Key": "won"}, chunks
    )
    assert replay["status"] == 201, replay["body"]


def test_authorization_headers_are_remembered_only_when_short() -> None:
    early._remembered_bearer.cache_clear()
    token = "t" * 200
    assert early._bearer(b"Bearer " + token.encode()) == token
    assert early._bearer(b"Bearer " + token.encode()) == token
    info = early._remembered_bearer.cache_info()
    assert (info.hits, info.currsize) == (1, 1)
    long = "x" * early.REMEMBERED_HEADER_MAX
    assert early._bearer(b"Bearer " + long.encode()) == long
    assert early._remembered_bearer.cache_info().currsize == 1, "a long header is not kept"


def test_a_malformed_header_is_refused_every_time_and_never_remembered() -> None:
    early._remembered_bearer.cache_clear()
    for _ in range(2):
        with pytest.raises(LivesellError):
            early._bearer(b"Basic abc")
    assert early._remembered_bearer.cache_info().currsize == 0


def test_a_remembered_body_decodes_as_the_route_decodes() -> None:
    assert early._quantity(b'{"quantity": 2}') == 2
    assert early._quantity(b"  ") == 1  # an empty body is `{}`: the default quantity
    for bad in (b'{"quantity": 0}', b'{"quantity": "1"}', b"[", b'{"quantity": 1, "x": 1}'):
        with pytest.raises(LivesellError):
            early._quantity(bad)
