"""Coupons' HTTP routes: release (host), list, claim (viewer), the caller's claims."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from core.events import Outbox
from core.http import JSON, path_id, read_json, require
from core.openapi import api_route
from core.ratelimit import Limit, address_subject
from storefront.buy import idempotency
from storefront.coupons import claims
from storefront.coupons.views import (
    ClaimRequest,
    ClaimView,
    CouponList,
    CouponView,
    MyClaims,
    NewCoupon,
)
from storefront.errors import BuyRateLimited
from storefront.rooms import check_host, fetch_room
from storefront.shop import shop_of

TAG = "coupons"


async def create_coupon(request: Request) -> Response:
    who = require(request, "host", "admin")
    room_id = path_id(request)
    body = await read_json(request, NewCoupon)
    res = shop_of(request).res
    outbox = Outbox()
    async with res.pool.acquire() as conn, conn.transaction():
        check_host(await fetch_room(conn, room_id), who)
        view = await claims.create_coupon(conn, outbox, room_id, body, who.user_id)
    await outbox.flush(res.publisher)
    return JSON(view, 201)


async def list_coupons(request: Request) -> Response:
    room_id = path_id(request)
    async with shop_of(request).res.pool.acquire() as conn:
        await fetch_room(conn, room_id)
        return JSON(await claims.room_coupons(conn, room_id))


async def show_coupon(request: Request) -> Response:
    coupon_id = path_id(request)
    async with shop_of(request).res.pool.acquire() as conn:
        return JSON(await claims.coupon(conn, coupon_id))


async def claim_coupon(request: Request) -> Response:
    shop = shop_of(request)
    who = require(request, "viewer")
    coupon_id = path_id(request)
    key = idempotency.idempotency_key(request.headers.get(idempotency.HEADER))
    settings = shop.res.settings
    address = address_subject(request.client.host if request.client else None)
    # claims count against the buy limits: the same storm, the same protection
    refused = await shop.res.limiter.hit(
        (Limit("buy-user", settings.buy_rate_per_user), who.user_id),
        (Limit("buy-ip", settings.buy_rate_per_ip), address),
    )
    if refused is not None:
        subject = "user" if refused.limit.name == "buy-user" else "address"
        raise BuyRateLimited(subject, refused.retry_after_s)
    await read_json(request, ClaimRequest)
    view, replayed = await claims.claim(
        shop, coupon_id, who.user_id, key, claims.fingerprint(request.url.path)
    )
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSON(view, 201, headers=headers)


async def my_coupons(request: Request) -> Response:
    who = require(request, "viewer")
    async with shop_of(request).res.pool.acquire() as conn:
        return JSON(await claims.my_claims(conn, who.user_id))


def coupon_routes() -> list[BaseRoute]:
    return [
        api_route("/api/rooms/{id}/coupons", create_coupon, methods=["POST"], tag=TAG,
                  summary="release coupons in the room (amount or percent off, minimum spend, "
                  "quantity, per-user limit, claim window, validity); coupon.released",
                  body=NewCoupon, response=CouponView, status=201, roles=("host", "admin"),
                  errors=(401, 403, 404, 409)),
        api_route("/api/rooms/{id}/coupons", list_coupons, methods=["GET"], tag=TAG,
                  summary="the room's coupons, newest first, with what remains",
                  response=CouponList),
        api_route("/api/coupons/{id}", show_coupon, methods=["GET"], tag=TAG,
                  summary="a coupon, with what remains", response=CouponView),
        api_route("/api/coupons/{id}/claim", claim_coupon, methods=["POST"], tag=TAG,
                  summary="claim a coupon: 201 claim, or 409 coupons_gone / coupon_not_active, "
                  "429 limit_reached; idempotent by Idempotency-Key",
                  body=ClaimRequest, response=ClaimView, status=201, roles=("viewer",),
                  headers={idempotency.HEADER: idempotency.IdempotencyKey},
                  errors=(401, 403, 409, 429, 503)),
        api_route("/api/me/coupons", my_coupons, methods=["GET"], tag=TAG,
                  summary="the caller's claims not applied to an order and not expired",
                  response=MyClaims, roles=("viewer",), errors=(401, 403)),
    ]  # fmt: skip
