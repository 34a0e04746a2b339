"""Storefront's HTTP routes: catalog, drops, the buy path, orders and the payments webhook."""

from __future__ import annotations

from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from core.errors import ProductNotFound, ServiceUnavailable
from core.events import Outbox
from core.http import JSON, path_id, read_body, read_json, read_query, require, resources
from core.openapi import api_route
from core.redis_client import REDIS_ERRORS
from storefront import billing, catalog, orders, sales
from storefront.buy import early, flow, idempotency
from storefront.payments import (
    SIGNATURE_HEADER,
    STRIPE_SIGNATURE_HEADER,
    WECHATPAY_HEADERS,
    PaymentEvent,
)
from storefront.rooms import check_host, fetch_room
from storefront.shop import shop_of
from storefront.views import (
    BuyRequest,
    BuyResult,
    DropView,
    NewDrop,
    NewProduct,
    OrderView,
    PaymentStarted,
    PayRequest,
    ProductPage,
    ProductQuery,
    ProductView,
    RefundRequest,
    RoomSales,
    StripeEvent,
    WebhookAck,
    WeChatPayNotification,
)

# `t=<unix seconds>,v1=<hex HMAC>` (storefront.payments); checked by the route, not the schema
Signature = Annotated[str, msgspec.Meta(min_length=1)]
TAG = "storefront"


async def create_product(request: Request) -> Response:
    who = require(request, "host", "admin")
    body = await read_json(request, NewProduct)
    async with resources(request).pool.acquire() as conn:
        product = await catalog.insert_product(
            conn,
            sku=body.sku,
            title=body.title,
            price_cents=body.price_cents,
            commission_bps=body.commission_bps,
            image_url=body.image_url,
            created_by=who.user_id,
        )
    return JSON(product, 201)


async def list_products(request: Request) -> Response:
    who = require(request, "host", "admin")
    query = read_query(request, ProductQuery)
    async with resources(request).pool.acquire() as conn:
        page = await catalog.list_products(
            conn,
            created_by=who.user_id if query.mine else None,
            limit=query.limit,
            before=None if query.before is None else int(query.before),
        )
    return JSON(page)


async def get_product(request: Request) -> Response:
    product_id = path_id(request)
    async with resources(request).pool.acquire() as conn:
        product = await catalog.fetch_product(conn, product_id)
    if product is None:
        raise ProductNotFound(product_id)
    return JSON(product)


async def create_drop(request: Request) -> Response:
    who = require(request, "host", "admin")
    room_id = path_id(request)
    body = await read_json(request, NewDrop)
    product_id = int(body.product_id)
    shop = shop_of(request)
    res = shop.res
    outbox = Outbox()
    async with res.pool.acquire() as conn, conn.transaction():
        check_host(await fetch_room(conn, room_id), who)
        view = await catalog.insert_drop(
            conn,
            outbox,
            room_id=room_id,
            product_id=product_id,
            price_cents=body.price_cents,
            quantity=body.quantity,
            per_buyer_limit=body.per_buyer_limit,
            starts_in_s=body.starts_in_s,
            duration_s=body.duration_s,
            created_by=who.user_id,
        )
    # committed: the drop is live in PostgreSQL. Announced first, then its gate built; when
    # Redis fails at either step the host hears 503 (not 201), and the worker's reconciliation
    # builds the gate and announces the drop as soon as Redis answers (storefront.worker)
    try:
        await res.publisher.publish_many(outbox.pending)
        await shop.gate.build(res.pool, int(view.id))
    except REDIS_ERRORS as exc:
        raise ServiceUnavailable(
            f"drop {view.id} is saved and opens as soon as Redis answers ({exc!r})",
            dependency="redis",
        ) from None
    return JSON(view, 201)


async def get_drop(request: Request) -> Response:
    drop_id = path_id(request)
    async with resources(request).pool.acquire() as conn:
        view = await catalog.drop_view(conn, drop_id)
    return JSON(view)


async def close_drop(request: Request) -> Response:
    who = require(request, "host", "admin")
    drop_id = path_id(request)
    shop = shop_of(request)
    res = shop.res
    outbox = Outbox()
    async with res.pool.acquire() as conn, conn.transaction():
        row = await catalog.fetch_drop_row(conn, drop_id)
        check_host(await fetch_room(conn, row["room_id"]), who)
        view = await catalog.close_drop_row(conn, outbox, drop_id, "host")
    await shop.gate.close(drop_id)
    await outbox.flush(res.publisher)
    return JSON(view)


async def room_sales(request: Request) -> Response:
    who = require(request, "host", "admin")
    room_id = path_id(request)
    async with resources(request).pool.acquire() as conn:
        check_host(await fetch_room(conn, room_id), who)
        view = await sales.room_sales(conn, room_id)
    return JSON(view)


async def get_order(request: Request) -> Response:
    who = require(request)
    order_id = path_id(request)
    res = resources(request)
    async with res.pool.acquire() as conn:
        row = await orders.visible_order(conn, order_id, who)
    return JSON(orders.order_from_row(row))


async def pay(request: Request) -> Response:
    who = require(request)
    order_id = path_id(request)
    asked = await read_json(request, PayRequest)
    client_ip = request.client.host if request.client else None
    started = await billing.start_payment(shop_of(request), order_id, who, asked, client_ip)
    return JSON(started)


async def payment_webhook(request: Request) -> Response:
    body = await read_body(request)
    ack = await billing.handle_webhook(
        shop_of(request), body, request.headers.get(SIGNATURE_HEADER)
    )
    return JSON(ack)


async def wechatpay_notify(request: Request) -> Response:
    body = await read_body(request)
    ack = await billing.handle_notification(
        shop_of(request), "wechatpay", request.headers, body, signed_in=WECHATPAY_HEADERS
    )
    return JSON(ack)


async def stripe_webhook(request: Request) -> Response:
    body = await read_body(request)
    ack = await billing.handle_notification(
        shop_of(request), "stripe", request.headers, body, signed_in=(STRIPE_SIGNATURE_HEADER,)
    )
    return JSON(ack)


async def deliver(request: Request) -> Response:
    who = require(request, "host", "admin")
    view = await orders.deliver(resources(request), path_id(request), who)
    return JSON(view)


async def refund(request: Request) -> Response:
    who = require(request)
    order_id = path_id(request)
    body = await read_json(request, RefundRequest)
    view = await orders.refund(
        shop_of(request), order_id, who, quantity=body.quantity, reason=body.reason
    )
    return JSON(view)


def routes() -> list[BaseRoute]:
    return [
        api_route(
            "/api/products",
            create_product,
            methods=["POST"],
            summary="create a product",
            body=NewProduct,
            response=ProductView,
            status=201,
            roles=("host", "admin"),
            errors=(401, 403, 409),
            tag=TAG,
        ),
        api_route(
            "/api/products",
            list_products,
            methods=["GET"],
            summary="the catalog newest first, a page at a time (mine=1: the caller's own)",
            query=ProductQuery,
            response=ProductPage,
            roles=("host", "admin"),
            errors=(401, 403, 422),
            tag=TAG,
        ),
        api_route(
            "/api/products/{id}",
            get_product,
            methods=["GET"],
            summary="a product",
            response=ProductView,
            errors=(404,),
            tag=TAG,
        ),
        api_route(
            "/api/rooms/{id}/drops",
            create_drop,
            methods=["POST"],
            summary="schedule or start a flash drop in a room (starts_in_s 0 = now)",
            body=NewDrop,
            response=DropView,
            status=201,
            roles=("host", "admin"),
            errors=(401, 403, 404, 409),
            tag=TAG,
        ),
        api_route(
            "/api/drops/{id}",
            get_drop,
            methods=["GET"],
            summary="a drop with its stock counts",
            response=DropView,
            errors=(404,),
            tag=TAG,
        ),
        api_route(
            "/api/rooms/{id}/sales",
            room_sales,
            methods=["GET"],
            summary="what the room's paid orders add up to, in all and per drop (its host)",
            response=RoomSales,
            roles=("host", "admin"),
            errors=(401, 403, 404),
            tag=TAG,
        ),
        api_route(
            "/api/drops/{id}/close",
            close_drop,
            methods=["POST"],
            summary="end a drop early",
            response=DropView,
            roles=("host", "admin"),
            errors=(401, 403, 404, 409),
            tag=TAG,
        ),
        api_route(
            early.ROUTE,
            flow.buy,
            methods=["POST"],
            summary="buy from a live drop: a held order, or 409 sold_out / drop_not_active, "
            "429 limit_reached; replaying an Idempotency-Key returns the stored response",
            body=BuyRequest,
            response=BuyResult,
            status=201,
            roles=("viewer",),
            headers={idempotency.HEADER: idempotency.IdempotencyKey},
            errors=(401, 403, 404, 409, 429, 503),
            tag=TAG,
        ),
        api_route(
            "/api/orders/{id}",
            get_order,
            methods=["GET"],
            summary="an order (its buyer or an admin)",
            response=OrderView,
            roles=("buyer", "admin"),
            errors=(401, 404),
            tag=TAG,
        ),
        api_route(
            "/api/orders/{id}/pay",
            pay,
            methods=["POST"],
            summary="pay a held order: the answer says the buyer's next step for the provider "
            "(dev: the simulated provider settles it at once)",
            body=PayRequest,
            response=PaymentStarted,
            roles=("buyer",),
            errors=(401, 404, 409, 503),
            tag=TAG,
        ),
        api_route(
            "/api/payments/webhook",
            payment_webhook,
            methods=["POST"],
            summary=f"payment provider events, signed in the {SIGNATURE_HEADER} header "
            "(t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>); a missing, stale or "
            "wrong signature is a 400 invalid_signature",
            body=PaymentEvent,
            response=WebhookAck,
            headers={SIGNATURE_HEADER: Signature},
            tag=TAG,
        ),
        api_route(
            "/api/payments/wechatpay/notify",
            wechatpay_notify,
            methods=["POST"],
            summary="WeChat Pay payment and refund notifications (LIVESELL_PAYMENTS=wechatpay), "
            "signed in the Wechatpay-* headers and verified and decrypted with the wechatpayv3 "
            "SDK; a missing, stale or wrong signature is a 400 invalid_signature, and a 404 "
            "provider_not_configured when WeChat Pay is not the configured provider",
            body=WeChatPayNotification,
            response=WebhookAck,
            headers={name: Signature for name in WECHATPAY_HEADERS},
            errors=(404,),
            tag=TAG,
        ),
        api_route(
            "/api/payments/stripe/webhook",
            stripe_webhook,
            methods=["POST"],
            summary=f"Stripe events (LIVESELL_PAYMENTS=stripe), signed in the "
            f"{STRIPE_SIGNATURE_HEADER} header and verified with the stripe SDK; a missing, "
            "stale or wrong signature is a 400 invalid_signature, and a 404 "
            "provider_not_configured when Stripe is not the configured provider",
            body=StripeEvent,
            response=WebhookAck,
            headers={STRIPE_SIGNATURE_HEADER: Signature},
            errors=(404,),
            tag=TAG,
        ),
        api_route(
            "/api/orders/{id}/deliver",
            deliver,
            methods=["POST"],
            summary="mark a paid order delivered (starts the return window)",
            response=OrderView,
            roles=("host", "admin"),
            errors=(401, 403, 404, 409),
            tag=TAG,
        ),
        api_route(
            "/api/orders/{id}/refund",
            refund,
            methods=["POST"],
            summary="refund some or all units (buyer before delivery or within the return "
            "window; admin any time)",
            body=RefundRequest,
            response=OrderView,
            roles=("buyer", "admin"),
            errors=(401, 404, 409),
            tag=TAG,
        ),
    ]
