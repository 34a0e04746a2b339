"""Who may do what: forged, expired and premature tokens; role escalation; other people's orders,
dashboards, channels and rooms; forged link codes; unsigned and replayed webhooks."""

from __future__ import annotations

import base64
import inspect
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from core.auth import ALGORITHM
from core.resources import Resources
from core.settings import Settings
from storefront import payments
from storefront.payments import SIGNATURE_HEADER, sign, webhook_key
from tests.live.conftest import open_raw, start_hub
from tests.security.world import World, new_key

Auth = Callable[..., dict[str, str]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _bad_tokens(secret: str) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns about short HS512 keys: the point here
        return _make_bad_tokens(secret)


def _make_bad_tokens(secret: str) -> dict[str, str]:
    now = int(time.time())
    admin = {"sub": "mallory", "roles": ["admin", "host", "viewer"], "iat": now, "exp": now + 600}
    return {
        "alg none": _unsigned(admin),
        "alg None": _unsigned(admin, "None"),
        # HS512 with the right secret: still refused, the algorithm is pinned to HS256
        "alg HS512": jwt.encode(admin, secret, algorithm="HS512"),
        # alg confusion: an "RS256" header whose signature is an HMAC over the secret
        "alg RS256 header": _confused(admin, secret),
        "wrong secret": jwt.encode(admin, "not-the-secret-" * 4, algorithm=ALGORITHM),
        "expired": jwt.encode({**admin, "exp": now - 60}, secret, algorithm=ALGORITHM),
        "not yet valid": jwt.encode({**admin, "nbf": now + 600}, secret, algorithm=ALGORITHM),
        "no sub": jwt.encode({"roles": ["admin"], "exp": now + 600}, secret, algorithm=ALGORITHM),
        "empty sub": jwt.encode({**admin, "sub": ""}, secret, algorithm=ALGORITHM),
        "huge sub": jwt.encode({**admin, "sub": "x" * 129}, secret, algorithm=ALGORITHM),
        "NUL in sub": jwt.encode({**admin, "sub": "bob\u0000"}, secret, algorithm=ALGORITHM),
        "roles object": jwt.encode({**admin, "roles": {"admin": 1}}, secret, algorithm=ALGORITHM),
        "tampered payload": _tampered(admin, secret),
        "garbage": "a.b.c",
    }


def _confused(claims: dict[str, Any], secret: str) -> str:
    import hashlib
    import hmac

    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(mac)}"


def _tampered(claims: dict[str, Any], secret: str) -> str:
    honest = jwt.encode({**claims, "roles": ["viewer"]}, secret, algorithm=ALGORITHM)
    header, _, signature = honest.split(".")
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


GUARDED = [
    ("POST", "/api/products", {"sku": "X", "title": "X", "price_cents": 1, "commission_bps": 1}),
    ("POST", "/api/rooms", {"title": "X"}),
    ("POST", "/api/distributors", {}),
    ("GET", "/api/distributors/me", None),
    ("POST", "/api/admin/payouts", None),
]


@pytest.mark.parametrize("kind", list(_bad_tokens("s" * 64)))
async def test_bad_tokens_are_401_on_http_and_refused_by_the_hub(
    kind: str, client: httpx.AsyncClient, resources: Resources, settings: Settings
) -> None:
    token = _bad_tokens(settings.secret)[kind]
    headers = {"Authorization": f"Bearer {token}"}
    for method, path, body in GUARDED:
        response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (kind, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    async with resources.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM products") == 0
        assert await conn.fetchval("SELECT count(*) FROM rooms") == 0


async def test_the_hub_refuses_bad_tokens_and_expired_ones_distinctly(
    resources: Resources, settings: Settings
) -> None:
    running, stop = await start_hub(resources)
    try:
        for kind, token in _bad_tokens(settings.secret).items():
            viewer = await open_raw(running.url)
            reply_id = await viewer.send(connect={"token": token})
            try:
                reply = await viewer.reply(reply_id, timeout=3)
                # only an expired token gets a reply the SDK refreshes on (109)
                assert kind == "expired" and reply["error"]["code"] == 109, (kind, reply)
            except Exception as exc:  # noqa: BLE001 - closed: that is the refusal
                assert kind != "expired", exc
                assert viewer.ws.close_code == 3500, (kind, viewer.ws.close_code)
            await viewer.ws.close()
    finally:
        await stop()


async def test_roles_cannot_be_escalated(
    world: World, client: httpx.AsyncClient, auth: Auth, settings: Settings
) -> None:
    viewer = auth(world.other, "viewer")
    odd_roles = {
        "Authorization": "Bearer "
        + jwt.encode(
            {"sub": world.other, "roles": ["ADMIN", "admin ", "root", "host\x00"]},
            settings.secret,
            algorithm=ALGORITHM,
        )
    }
    product = {"sku": "ESC", "title": "X", "price_cents": 1, "commission_bps": 1}
    drop = {"product_id": world.product_id, "price_cents": 1, "quantity": 1, "per_buyer_limit": 1}
    attempts = [
        ("POST", "/api/products", product),
        ("POST", "/api/rooms", {"title": "mine"}),
        ("POST", f"/api/rooms/{world.room_id}/drops", drop),
        ("POST", f"/api/drops/{world.drop_id}/close", None),
        ("POST", f"/api/orders/{world.paid_order}/deliver", None),
        ("POST", "/api/admin/payouts", None),
        ("GET", "/api/admin/payouts/1", None),
    ]
    for headers in (viewer, odd_roles):
        for method, path, body in attempts:
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, (method, path, response.text)
    # a host of another room controls nothing here
    erin = auth("erin", "host")
    for method, path, body in [
        ("POST", f"/api/rooms/{world.room_id}/end", None),
        ("POST", f"/api/rooms/{world.room_id}/pin", {"product_id": world.product_id}),
        ("POST", f"/api/rooms/{world.room_id}/drops", drop),
        ("POST", f"/api/drops/{world.drop_id}/close", None),
        ("POST", f"/api/orders/{world.paid_order}/deliver", None),
    ]:
        response = await client.request(method, path, json=body, headers=erin)
        assert response.status_code == 403, (method, path, response.text)
    snapshot = (await client.get(f"/api/rooms/{world.room_id}")).json()
    assert snapshot["room"]["status"] == "live" and snapshot["drop"]["status"] == "live"


async def test_other_peoples_orders_are_invisible_and_untouchable(
    world: World, client: httpx.AsyncClient, auth: Auth, resources: Resources
) -> None:
    carol = auth(world.other, "viewer", "distributor")
    for order in (world.paid_order, world.held_order):
        for method, path, body in [
            ("GET", f"/api/orders/{order}", None),
            ("GET", f"/api/orders/{order}/attribution", None),
            ("POST", f"/api/orders/{order}/pay", None),
            ("POST", f"/api/orders/{order}/refund", {}),
        ]:
            response = await client.request(method, path, json=body, headers=carol)
            assert response.status_code == 404, (method, path, response.text)
            # the same answer as for an order that does not exist: nothing leaks
            assert world.buyer not in response.text
    async with resources.pool.acquire() as conn:
        statuses = await conn.fetch("SELECT id, status FROM orders ORDER BY id")
        assert [r["status"] for r in statuses] == ["paid", "held"]
        assert await conn.fetchval("SELECT count(*) FROM refunds") == 0
    # the owner and an admin do see it
    mine = await client.get(f"/api/orders/{world.paid_order}", headers=auth(world.buyer))
    assert mine.status_code == 200 and mine.json()["buyer_id"] == world.buyer
    admin = await client.get(f"/api/orders/{world.paid_order}", headers=auth("root", "admin"))
    assert admin.status_code == 200


async def test_another_distributors_dashboard_and_channel_are_closed(
    world: World, client: httpx.AsyncClient, auth: Auth, resources: Resources, settings: Settings
) -> None:
    carol = auth(world.other, "viewer", "distributor")
    await client.post("/api/distributors", json={}, headers=carol)
    theirs = await client.get(f"/api/distributors/{world.distributor_id}", headers=carol)
    assert theirs.status_code == 404
    assert world.distributor not in theirs.text
    own = await client.get(
        f"/api/distributors/{world.distributor_id}", headers=auth(world.distributor, "distributor")
    )
    assert own.status_code == 200

    running, stop = await start_hub(resources)
    try:
        from core.auth import mint_token

        viewer = await open_raw(running.url)
        await viewer.connect(mint_token(settings.secret, world.other, ["viewer", "distributor"]))
        for channel in (f"dashboard#{world.distributor}", "dashboard#", "dashboard#dave\n"):
            reply = await viewer.subscribe(channel)
            assert reply["error"]["code"] in (102, 103), (channel, reply)
        guest = await open_raw(running.url)
        await guest.connect()
        reply = await guest.subscribe(f"dashboard#{world.distributor}")
        assert reply["error"]["code"] == 103
        await viewer.ws.close()
        await guest.ws.close()
    finally:
        await stop()


async def test_forged_link_codes_record_nothing(
    world: World, client: httpx.AsyncClient, auth: Auth, resources: Resources
) -> None:
    code = world.link_code
    flipped = code[:-1] + ("A" if code[-1] != "A" else "B")
    forged = [
        flipped,
        code[:14] + "00000000",
        "0" * len(code),
        code + "x",
        code[:-1],
        "' OR 1=1 --",
        "%00",
        "..%2F..%2Fetc%2Fpasswd",
    ]
    async with resources.pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM room_entries")
    for bad in forged:
        response = await client.get(f"/l/{bad}")
        assert response.status_code == 404, (bad, response.status_code, response.text)
        assert response.json()["error"]["code"] in ("link_not_found", "not_found")
        entered = await client.post(
            f"/api/rooms/{world.room_id}/enter",
            json={"link_code": bad},
            headers=auth(world.other),
        )
        assert entered.status_code in (404, 422), (bad, entered.text)
    async with resources.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM room_entries") == before


async def test_webhooks_unsigned_forged_stale_or_replayed_change_nothing(
    world: World, client: httpx.AsyncClient, resources: Resources, settings: Settings
) -> None:
    async with resources.pool.acquire() as conn:
        payment = await conn.fetchrow(
            "SELECT provider, provider_payment_id, amount_cents FROM payments WHERE order_id = $1",
            int(world.paid_order),
        )
        assert payment is not None
        await conn.execute(
            """INSERT INTO payments (order_id, provider, provider_payment_id, amount_cents)
               VALUES ($1, 'simulated', 'held-pay-1', 900)""",
            int(world.held_order),
        )
    body = json.dumps(
        {
            "id": "evt-sec-1",
            "provider": "simulated",
            "type": "payment.succeeded",
            "created": int(time.time()),
            "data": {"payment_id": "held-pay-1", "order_id": world.held_order, "amount_cents": 900},
        }
    ).encode()
    key = webhook_key(settings.secret)
    now = int(time.time())

    async def post(signature: str | None) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if signature is not None:
            headers[SIGNATURE_HEADER] = signature
        return await client.post("/api/payments/webhook", content=body, headers=headers)

    refused = {
        "missing": None,
        "empty": "",
        "no v1": f"t={now}",
        "garbage": "t=abc,v1=zz",
        "signed with the app secret itself": sign(settings.secret.encode(), body),
        "stale": sign(key, body, timestamp=now - 3600),
        "future": sign(key, body, timestamp=now + 3600),
        "other body": sign(key, body + b" "),
        "truncated mac": sign(key, body)[:-2],
    }
    for reason, signature in refused.items():
        response = await post(signature)
        assert response.status_code == 400, (reason, response.text)
        assert response.json()["error"]["code"] == "invalid_signature", reason
    async with resources.pool.acquire() as conn:
        held = await conn.fetchval("SELECT status FROM orders WHERE id = $1", int(world.held_order))
        assert held == "held"
        assert await conn.fetchval("SELECT count(*) FROM payment_events") == 1  # the world's

    good = sign(key, body)
    assert (await post(good)).json()["outcome"] == "paid"
    for _ in range(3):  # a captured request replayed, freshly re-signed or as it was
        replay = await post(good)
        assert replay.status_code == 200 and replay.json()["duplicate"] is True
        assert (await post(sign(key, body))).json()["duplicate"] is True
    async with resources.pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM ledger_transactions WHERE order_id = $1 AND kind = 'accrue'",
                int(world.held_order),
            )
            == 1
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM stock_claims WHERE order_id = $1 AND state = 'sold'",
                int(world.held_order),
            )
            == 1
        )


def test_signatures_and_codes_are_compared_in_constant_time() -> None:
    from attribution import codes

    for function in (payments.verify, codes.link_code_is_authentic, codes.visitor_from_cookie):
        source = inspect.getsource(function)
        assert "hmac.compare_digest" in source, function.__name__
        assert " == expected" not in source and "expected ==" not in source


async def test_buying_needs_the_viewer_role_and_a_key(
    world: World, client: httpx.AsyncClient, auth: Auth
) -> None:
    url = f"/api/drops/{world.drop_id}/buy"
    no_role = await client.post(
        url, json={}, headers={**auth("x", "distributor"), "Idempotency-Key": new_key()}
    )
    assert no_role.status_code == 403
    anonymous = await client.post(url, json={}, headers={"Idempotency-Key": new_key()})
    assert anonymous.status_code == 401
