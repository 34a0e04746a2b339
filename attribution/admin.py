"""Integrity and money operations over HTTP: the review queue, commission rules, withdrawals,
and operator analytics. Every `/api/admin/...` route is for the admin role only."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from attribution import analytics, reviews, rules, withdrawals
from attribution.api import _distributor_row
from attribution.views_admin import (
    CommunityQuery,
    CommunityView,
    FunnelView,
    ProductCommissionBody,
    RateBody,
    RateList,
    RateView,
    ReviewDecision,
    ReviewList,
    ReviewQuery,
    ReviewView,
    TierList,
    WithdrawalBody,
    WithdrawalDecision,
    WithdrawalList,
    WithdrawalQuery,
    WithdrawalQueue,
    WithdrawalView,
)
from core.errors import RoomNotFound
from core.events import chat_posters_key
from core.http import JSON, path_id, read_json, read_query, require, resources
from core.openapi import api_route

ADMIN = ("admin",)
ADMIN_ERRORS = (401, 403)


def _wants_csv(request: Request) -> bool:
    return "text/csv" in request.headers.get("accept", "")


def _csv(text: str, filename: str) -> Response:
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def list_reviews(request: Request) -> Response:
    require(request, *ADMIN)
    query = read_query(request, ReviewQuery)
    async with resources(request).pool.acquire() as conn:
        return JSON(await reviews.list_reviews(conn, query.status, query.limit))


async def decide_review(request: Request) -> Response:
    caller = require(request, *ADMIN)
    order_id = path_id(request)
    body = await read_json(request, ReviewDecision)
    view = await reviews.decide(
        resources(request),
        order_id=order_id,
        decision=body.decision,
        note=body.note,
        admin=caller.user_id,
    )
    return JSON(view)


async def put_rates(request: Request) -> Response:
    caller = require(request, *ADMIN)
    distributor_id = path_id(request)
    body = await read_json(request, RateBody)
    async with resources(request).pool.acquire() as conn:
        return JSON(await rules.set_distributor_rate(conn, distributor_id, body, caller.user_id))


async def get_rates(request: Request) -> Response:
    require(request, *ADMIN)
    distributor_id = path_id(request)
    async with resources(request).pool.acquire() as conn:
        return JSON(await rules.distributor_rates(conn, distributor_id))


async def put_product_commission(request: Request) -> Response:
    require(request, *ADMIN)
    product_id = path_id(request)
    body = await read_json(request, ProductCommissionBody)
    async with resources(request).pool.acquire() as conn:
        return JSON(
            await rules.set_product_commission(
                conn, product_id, body.commission_bps, body.commission_cents
            )
        )


async def get_tiers(request: Request) -> Response:
    require(request, *ADMIN)
    async with resources(request).pool.acquire() as conn:
        return JSON(await rules.list_tiers(conn))


async def put_tiers(request: Request) -> Response:
    require(request, *ADMIN)
    body = await read_json(request, TierList)
    async with resources(request).pool.acquire() as conn:
        return JSON(await rules.set_tiers(conn, body))


async def request_withdrawal(request: Request) -> Response:
    caller = require(request, "distributor")
    body = await read_json(request, WithdrawalBody)
    res = resources(request)
    distributor = await _distributor_row(res, caller.user_id)
    async with res.pool.acquire() as conn:
        view = await withdrawals.request_withdrawal(
            conn, res.settings, distributor["id"], body.amount_cents
        )
    return JSON(view, 201)


async def my_withdrawals(request: Request) -> Response:
    caller = require(request, "distributor")
    res = resources(request)
    distributor = await _distributor_row(res, caller.user_id)
    async with res.pool.acquire() as conn:
        return JSON(await withdrawals.my_withdrawals(conn, res.settings, distributor["id"]))


async def withdrawal_queue(request: Request) -> Response:
    require(request, *ADMIN)
    query = read_query(request, WithdrawalQuery)
    async with resources(request).pool.acquire() as conn:
        found = await withdrawals.list_withdrawals(conn, query.status, query.limit)
    return JSON(WithdrawalQueue(withdrawals=found))


async def decide_withdrawal(request: Request) -> Response:
    caller = require(request, *ADMIN)
    withdrawal_id = path_id(request)
    body = await read_json(request, WithdrawalDecision)
    async with resources(request).pool.acquire() as conn:
        view = await withdrawals.decide(
            conn, withdrawal_id, body.decision, body.note, caller.user_id
        )
    return JSON(view)


async def community(request: Request) -> Response:
    require(request, *ADMIN)
    query = read_query(request, CommunityQuery)
    async with resources(request).pool.acquire() as conn:
        view = await analytics.community(conn, team=query.team, since=query.from_, until=query.to)
    if _wants_csv(request):
        return _csv(analytics.community_csv(view), "community.csv")
    return JSON(view)


async def room_funnel(request: Request) -> Response:
    require(request, *ADMIN)
    room_id = path_id(request)
    res = resources(request)
    async with res.pool.acquire() as conn:
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM rooms WHERE id = $1)", room_id):
            raise RoomNotFound(room_id)
        posters = int(await res.redis.pfcount(chat_posters_key(room_id)))
        view = await analytics.funnel(conn, room_id, posters)
    if _wants_csv(request):
        return _csv(analytics.funnel_csv(view), f"room-{room_id}-funnel.csv")
    return JSON(view)


def admin_routes() -> list[BaseRoute]:
    tag = "integrity"
    return [
        api_route("/api/admin/reviews", list_reviews, methods=["GET"], tag=tag,
                  summary="flagged orders whose commission is under review (or decided)",
                  query=ReviewQuery, response=ReviewList, roles=ADMIN,
                  errors=(*ADMIN_ERRORS, 422)),
        api_route("/api/admin/reviews/{id}", decide_review, methods=["POST"], tag=tag,
                  summary="approve or reject a flagged order's commission (final)",
                  body=ReviewDecision, response=ReviewView, roles=ADMIN,
                  errors=(*ADMIN_ERRORS, 404, 409)),
        api_route("/api/admin/distributors/{id}/rates", put_rates, methods=["PUT"], tag=tag,
                  summary="a distributor's commission override, for one product or all",
                  body=RateBody, response=RateList, roles=ADMIN,
                  errors=(*ADMIN_ERRORS, 404)),
        api_route("/api/admin/distributors/{id}/rates", get_rates, methods=["GET"], tag=tag,
                  summary="a distributor's commission overrides", response=RateList,
                  roles=ADMIN, errors=ADMIN_ERRORS),
        api_route("/api/admin/products/{id}/commission", put_product_commission,
                  methods=["PUT"], tag=tag,
                  summary="a product's commission: a rate or a fixed amount per unit",
                  body=ProductCommissionBody, response=RateView, roles=ADMIN,
                  errors=(*ADMIN_ERRORS, 404)),
        api_route("/api/admin/tiers", get_tiers, methods=["GET"], tag=tag,
                  summary="distributor tiers by their own confirmed sales", response=TierList,
                  roles=ADMIN, errors=ADMIN_ERRORS),
        api_route("/api/admin/tiers", put_tiers, methods=["PUT"], tag=tag,
                  summary="replace the distributor tiers", body=TierList, response=TierList,
                  roles=ADMIN, errors=ADMIN_ERRORS),
        api_route("/api/distributors/me/withdrawals", request_withdrawal, methods=["POST"],
                  tag=tag, summary="ask to withdraw part of the confirmed balance",
                  body=WithdrawalBody, response=WithdrawalView, status=201,
                  roles=("distributor",), errors=(401, 403, 409)),
        api_route("/api/distributors/me/withdrawals", my_withdrawals, methods=["GET"],
                  tag=tag, summary="the caller's balance, what may be withdrawn, and history",
                  response=WithdrawalList, roles=("distributor",), errors=(401, 403)),
        api_route("/api/admin/withdrawals", withdrawal_queue, methods=["GET"], tag=tag,
                  summary="withdrawals by status, oldest first", query=WithdrawalQuery,
                  response=WithdrawalQueue, roles=ADMIN, errors=(*ADMIN_ERRORS, 422)),
        api_route("/api/admin/withdrawals/{id}", decide_withdrawal, methods=["POST"], tag=tag,
                  summary="approve (paid by the next payout batch) or reject a withdrawal",
                  body=WithdrawalDecision, response=WithdrawalView, roles=ADMIN,
                  errors=(*ADMIN_ERRORS, 404, 409)),
        api_route("/api/admin/community", community, methods=["GET"], tag=tag,
                  summary="community analytics (CSV with Accept: text/csv)",
                  query=CommunityQuery, response=CommunityView, roles=ADMIN,
                  errors=(*ADMIN_ERRORS, 422)),
        api_route("/api/admin/rooms/{id}/funnel", room_funnel, methods=["GET"], tag=tag,
                  summary="a room's funnel from viewers to refunds (CSV with Accept: text/csv)",
                  response=FunnelView, roles=ADMIN, errors=(*ADMIN_ERRORS, 404)),
    ]  # fmt: skip
