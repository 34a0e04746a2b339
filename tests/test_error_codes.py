"""One situation, one answer: walking every route of the OpenAPI document with an id that names
nothing, each 404 carries the code of the thing its path names (a missing room is
room_not_found on every room route, whichever context serves it), and every 404 a route can
give is declared in the document."""

from __future__ import annotations

from typing import Any

import httpx

from tests.storefront.conftest import Auth

MISSING = "987654321"
# the code of a missing thing, by the path's first segments
EXPECTED = {
    "/api/rooms/{id}": "room_not_found",
    "/api/drops/{id}": "drop_not_found",
    "/api/orders/{id}": "order_not_found",
    "/api/products/{id}": "product_not_found",
    "/api/distributors/{id}": "distributor_not_found",
    "/api/admin/payouts/{id}": "payout_not_found",
    "/l/{code}": "link_not_found",
    "/api/coupons/{id}": "coupon_not_found",
    "/api/admin/webhooks/{id}": "webhook_not_found",
}
# bodies that pass validation, so that the lookup of the missing thing is what answers
BODIES: dict[str, Any] = {
    "/api/rooms/{id}/pin": {"product_id": "1"},
    "/api/rooms/{id}/drops": {
        "product_id": "1",
        "price_cents": 100,
        "quantity": 1,
        "per_buyer_limit": 1,
        "duration_s": 60,
    },
    "/api/drops/{id}/buy": {"quantity": 1},
    "/api/orders/{id}/refund": {},
    "/api/rooms/{id}/enter": {},
    "/api/rooms/{id}/moderators": {"user_id": "someone"},
    "/api/rooms/{id}/mutes": {"user_id": "someone", "seconds": 60},
    "/api/rooms/{id}/bans": {"user_id": "someone"},
    "/api/rooms/{id}/chat/settings": {"slow_mode_s": 5},
    "/api/rooms/{id}/chat/pin": {"text": "hello"},
    "/api/rooms/{id}/likes": {"count": 1},
    "/api/rooms/{id}/coupons": {
        "title": "5 off",
        "amount_off_cents": 500,
        "quantity": 10,
        "claim_duration_s": 60,
        "valid_s": 3600,
    },
    "/api/rooms/{id}/reservations": {},
}


def _expected(path: str) -> str | None:
    for prefix, code in EXPECTED.items():
        if path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + "."):
            return code
    return None


async def test_every_missing_thing_has_one_code_on_every_route(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    document = (await client.get("/api/openapi.json")).json()
    everyone = auth("walker", "admin", "host", "viewer", "distributor")
    checked: list[str] = []
    for path, operations in document["paths"].items():
        expected = _expected(path)
        if expected is None:
            continue
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "delete"):
                continue
            url = path.replace("{id}", MISSING).replace("{code}", "nosuchlinkcode")
            url = url.replace("{user_id}", "someone").replace("{message_id}", "1")
            url = url.replace("{delivery_id}", "1")
            headers = {**everyone, "Idempotency-Key": f"walk-{method}-{len(checked)}"}
            body = BODIES.get(path)
            response = await client.request(
                method.upper(), url, headers=headers, json=body if method != "get" else None
            )
            where = f"{method.upper()} {path}"
            assert response.status_code == 404, (where, response.status_code, response.text)
            assert response.json()["error"]["code"] == expected, (where, response.text)
            assert "404" in operation["responses"], f"{where} answers 404 undeclared"
            checked.append(where)
    assert len(checked) >= 20, checked
