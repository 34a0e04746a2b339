"""Outbound webhooks' admin routes: register an endpoint, read its deliveries, retry one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from core.errors import NotFound
from core.http import JSON, path_id, read_json, require, resources
from core.openapi import api_route
from core.webhooks import EventName, new_secret

TAG = "webhooks"
Url = Annotated[
    str, msgspec.Meta(min_length=8, max_length=2000, pattern=r"^https?://[!-~]+$(?!\n)")
]


class WebhookNotFound(NotFound):
    code = "webhook_not_found"

    def __init__(self, webhook_id: int) -> None:
        super().__init__(f"no webhook {webhook_id}", webhook_id=str(webhook_id))


class DeliveryNotFound(NotFound):
    code = "delivery_not_found"

    def __init__(self, delivery_id: int) -> None:
        super().__init__(f"no delivery {delivery_id}", delivery_id=str(delivery_id))


class NewWebhook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Url
    events: Annotated[list[EventName], msgspec.Meta(min_length=1, max_length=6)]


class WebhookView(msgspec.Struct, kw_only=True):
    id: str
    url: str
    events: list[str]
    # shown once, when the endpoint is registered: verify the Livesell-Signature header with it
    secret: str


class DeliveryView(msgspec.Struct, kw_only=True):
    id: str
    event: str
    event_id: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: Any


class DeliveryList(msgspec.Struct, kw_only=True):
    deliveries: list[DeliveryView]


_DELIVERY = """
SELECT id, event, event_id, status, attempts, next_attempt_at, last_status, last_error,
       created_at, delivered_at, payload::text AS payload
FROM webhook_deliveries
"""


def _delivery(row: Any) -> DeliveryView:
    return DeliveryView(
        id=str(row["id"]),
        event=row["event"],
        event_id=row["event_id"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        payload=msgspec.json.decode(row["payload"]),
    )


async def create_webhook(request: Request) -> Response:
    who = require(request, "admin")
    body = await read_json(request, NewWebhook)
    secret = new_secret()
    async with resources(request).pool.acquire() as conn:
        webhook_id = await conn.fetchval(
            """INSERT INTO webhook_endpoints (url, events, secret, created_by)
               VALUES ($1, $2, $3, $4) RETURNING id""",
            body.url,
            sorted(set(body.events)),
            secret,
            who.user_id,
        )
    view = WebhookView(
        id=str(webhook_id), url=body.url, events=sorted(set(body.events)), secret=secret
    )
    return JSON(view, 201)


async def list_deliveries(request: Request) -> Response:
    require(request, "admin")
    webhook_id = path_id(request)
    async with resources(request).pool.acquire() as conn:
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $1)", webhook_id
        ):
            raise WebhookNotFound(webhook_id)
        rows = await conn.fetch(
            _DELIVERY + " WHERE endpoint_id = $1 ORDER BY id DESC LIMIT 100", webhook_id
        )
    return JSON(DeliveryList(deliveries=[_delivery(r) for r in rows]))


async def retry_delivery(request: Request) -> Response:
    """Due at once again (a failed one too, for another 24 hours of retries)."""
    require(request, "admin")
    webhook_id = path_id(request)
    delivery_id = path_id(request, "delivery_id")
    async with resources(request).pool.acquire() as conn:
        row = await conn.fetchrow(
            """UPDATE webhook_deliveries
               SET next_attempt_at = now(),
                   give_up_at = greatest(give_up_at, now() + interval '24 hours'),
                   status = CASE WHEN status = 'failed' THEN 'pending' ELSE status END
               WHERE id = $1 AND endpoint_id = $2
               RETURNING id""",
            delivery_id,
            webhook_id,
        )
        if row is None:
            if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $1)", webhook_id
            ):
                raise WebhookNotFound(webhook_id)
            raise DeliveryNotFound(delivery_id)
        view = _delivery(await conn.fetchrow(_DELIVERY + " WHERE id = $1", delivery_id))
    return JSON(view)


def webhook_routes() -> list[BaseRoute]:
    return [
        api_route("/api/admin/webhooks", create_webhook, methods=["POST"], tag=TAG,
                  summary="register an endpoint for outbound webhooks (signed, retried 24 h)",
                  body=NewWebhook, response=WebhookView, status=201, roles=("admin",),
                  errors=(401, 403)),
        api_route("/api/admin/webhooks/{id}/deliveries", list_deliveries, methods=["GET"],
                  tag=TAG, summary="an endpoint's deliveries, newest first",
                  response=DeliveryList, roles=("admin",), errors=(401, 403)),
        api_route("/api/admin/webhooks/{id}/deliveries/{delivery_id}/retry", retry_delivery,
                  methods=["POST"], tag=TAG, summary="try a delivery again now",
                  response=DeliveryView, roles=("admin",), errors=(401, 403)),
    ]  # fmt: skip
