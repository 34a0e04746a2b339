"""Attribution's HTTP routes: distributors, links, link clicks, room entry, dashboards,
leaderboards, audit trails and payout batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from attribution import payouts
from attribution.clicks import Entry, EntryRecorder, Outcome
from attribution.codes import new_visitor_cookie, visitor_from_cookie
from attribution.devices import device_id, saw_device
from attribution.distributors import (
    Link,
    LinkCache,
    create_link,
    distributor_by_user,
    list_links,
    register_distributor,
)
from attribution.errors import (
    ClickRateLimited,
    DistributorNotFound,
    LinkNotFound,
    LinkRoomMismatch,
    NotADistributor,
    RoomNotScheduled,
)
from attribution.referrals import (
    CodeBody,
    Referral,
    ReferralCodeList,
    ReferralCodeView,
    ensure_code,
    lookup_referral_code,
    my_codes,
)
from attribution.reservations import (
    ReservationList,
    ReservationResult,
    ReserveRoom,
    add_reservation,
    list_reservations,
)
from attribution.stats import dashboard, leaderboard
from attribution.trail import order_trail
from attribution.views import (
    AttributionTrail,
    BecomeDistributor,
    CreateLink,
    DashboardView,
    DistributorView,
    EnterResult,
    EnterRoom,
    LeaderboardView,
    LinkCode,
    LinkList,
    LinkView,
    PageQuery,
    PayoutBatchView,
    PayoutHistory,
)
from core.auth import Principal
from core.errors import NotRoomHost, RoomNotFound, Unauthorized
from core.http import JSON, path_id, read_json, read_query, require, resources
from core.openapi import api_route
from core.resources import Resources
from core.rooms import get_room
from web import error_reply

VISITOR_COOKIE = "ls_vid"
TOKEN_COOKIE = "ls_token"
VISITOR_COOKIE_MAX_AGE_S = 365 * 86_400


@dataclass
class _ProcessState:
    links: LinkCache
    recorder: EntryRecorder


def _state(request: Request) -> _ProcessState:
    state: _ProcessState | None = getattr(request.app.state, "attribution", None)
    if state is None:
        res = resources(request)
        state = _ProcessState(LinkCache(), EntryRecorder(res.pool, res.redis, res.publisher))
        request.app.state.attribution = state
    return state


async def _distributor_row(res: Resources, user_id: str) -> asyncpg.Record:
    async with res.pool.acquire() as conn:
        row = await distributor_by_user(conn, user_id)
    if row is None:
        raise NotADistributor(user_id)
    return row


async def become(request: Request) -> Response:
    caller = require(request)
    body = await read_json(request, BecomeDistributor)
    async with resources(request).pool.acquire() as conn:
        view, created = await register_distributor(conn, caller.user_id, body.team)
        await saw_device(conn, caller.user_id, device_id(request))
    return JSON(view, 201 if created else 200)


async def new_link(request: Request) -> Response:
    caller = require(request)
    body = await read_json(request, CreateLink)
    res = resources(request)
    distributor = await _distributor_row(res, caller.user_id)
    async with res.pool.acquire() as conn:
        await saw_device(conn, caller.user_id, device_id(request))
        view = await create_link(
            conn,
            res.settings,
            distributor["id"],
            int(body.room_id),
            None if body.product_id is None else int(body.product_id),
        )
    return JSON(view, 201)


def _link_visitor(request: Request, res: Resources) -> tuple[Principal | None, str | None]:
    """Who follows a link: a user identified by a token (header, `?token=`, cookie), else the
    anonymous visitor of a signed cookie. A bad token on a share link is ignored, not refused:
    the viewer still lands in the room, as an anonymous visitor."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    token = token or request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
    if token:
        try:
            return res.tokens.verify(token), None
        except Unauthorized:
            pass
    return None, visitor_from_cookie(res.settings.secret, request.cookies.get(VISITOR_COOKIE))


async def _record(
    request: Request, link: Link | None, room_id: int, visitor: str, user_id: str | None,
    source: Literal["click", "enter", "reserve"], claim_visitor: str | None = None,
    referral: Referral | None = None,
) -> Outcome:  # fmt: skip
    """Gate and record one entry: "record", "duplicate" (nothing new) or "continued" (the
    browser's anonymous click `claim_visitor` made through the same link became this entry)."""
    return await _state(request).recorder.record(
        Entry(
            room_id=room_id,
            visitor=visitor,
            source=source,
            client_addr=request.client.host if request.client else "unknown",
            user_id=user_id,
            link_id=link.id if link else None,
            distributor_id=link.distributor_id if link else None,
            link_code=link.code if link else None,
            product_id=link.product_id if link else None,
            distributor_user_id=link.distributor_user_id if link else None,
            claim_visitor=claim_visitor,
            device_id=device_id(request),
        )
        if referral is None
        else Entry(
            room_id=room_id,
            visitor=visitor,
            source=source,
            client_addr=request.client.host if request.client else "unknown",
            user_id=user_id,
            distributor_id=referral.distributor_id,
            code_id=referral.code_id,
            device_id=device_id(request),
        )
    )


async def follow_link(request: Request) -> Response:
    try:
        return await _follow_link(request)
    except (LinkNotFound, ClickRateLimited) as refused:
        # whoever tapped the link in a browser reads a page; API clients keep the JSON error
        return error_reply(request, refused)


async def _follow_link(request: Request) -> Response:
    res = resources(request)
    settings = res.settings
    link = await _state(request).links.resolve(res.pool, settings, request.path_params["code"])
    target = f"/r/{link.room_id}?via={link.code}"
    if link.product_id is not None:
        target += f"&product={link.product_id}"
    # the target is built from digits and a verified base62 code: nothing to quote
    headers = {"location": target, "cache-control": "no-store"}
    if request.method == "HEAD":
        # link-preview fetchers probe with HEAD: redirected, never counted, never given an id
        return Response(status_code=302, headers=headers)
    user, anonymous = _link_visitor(request, resources(request))
    if user is None and anonymous is None:
        anonymous, cookie = new_visitor_cookie(settings.secret)
        secure = "; Secure" if settings.api_base_url.startswith("https://") else ""
        headers["set-cookie"] = (
            f"{VISITOR_COOKIE}={cookie}; Max-Age={VISITOR_COOKIE_MAX_AGE_S}; Path=/; "
            f"HttpOnly; SameSite=Lax{secure}"
        )
    visitor = f"u:{user.user_id}" if user else f"v:{anonymous}"
    await _record(request, link, link.room_id, visitor, user.user_id if user else None, "click")
    return Response(status_code=302, headers=headers)


async def _referral(request: Request, res: Resources, code: str | None, user_id: str
                    ) -> Referral | None:  # fmt: skip
    if code is None:
        return None
    return await lookup_referral_code(
        res, code, user_id=user_id, client_addr=request.client.host if request.client else None
    )


async def _room_link(request: Request, res: Resources, room_id: int, code: str | None
                     ) -> Link | None:  # fmt: skip
    """The link of `code` into `room_id` (None without a code); the room must exist."""
    if code is not None:
        link = await _state(request).links.resolve(res.pool, res.settings, code)
        if link.room_id != room_id:
            raise LinkRoomMismatch(room_id)
        return link
    async with res.pool.acquire() as conn:
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM rooms WHERE id = $1)", room_id):
            raise RoomNotFound(room_id)
    return None


async def enter_room(request: Request) -> Response:
    caller = require(request)
    room_id = path_id(request)
    body = await read_json(request, EnterRoom)
    res = resources(request)
    link = await _room_link(request, res, room_id, body.link_code)
    referral = await _referral(request, res, body.referral_code, caller.user_id)
    # the page's fetch carries the cookie `/l/` gave this browser: the same person's click
    anonymous = visitor_from_cookie(res.settings.secret, request.cookies.get(VISITOR_COOKIE))
    outcome = await _record(
        request, link, room_id, f"u:{caller.user_id}", caller.user_id, "enter",
        claim_visitor=f"v:{anonymous}" if anonymous and link else None,
    )  # fmt: skip
    if referral is not None:
        # a code binds ahead of links (migration 0040): recorded as its own entry
        await _record(request, None, room_id, f"u:{caller.user_id}", caller.user_id, "enter",
                      referral=referral)  # fmt: skip
    credited = referral.distributor_id if referral else link.distributor_id if link else None
    return JSON(
        EnterResult(
            room_id=str(room_id),
            link_code=link.code if link else None,
            distributor_id=None if credited is None else str(credited),
            deduplicated=outcome != "record",
            continued_click=outcome == "continued",
        )
    )


async def reserve_room(request: Request) -> Response:
    caller = require(request, "viewer")
    room_id = path_id(request)
    body = await read_json(request, ReserveRoom)
    res = resources(request)
    link = await _room_link(request, res, room_id, body.link_code)
    async with res.pool.acquire() as conn:
        room = await get_room(conn, room_id)
    if room is None:
        raise RoomNotFound(room_id)
    if room.status != "scheduled":
        raise RoomNotScheduled(room_id, room.status)
    referral = await _referral(request, res, body.referral_code, caller.user_id)
    await _record(request, None if referral else link, room_id, f"u:{caller.user_id}",
                  caller.user_id, "reserve", referral=referral)  # fmt: skip
    async with res.pool.acquire() as conn:
        created, count = await add_reservation(conn, room_id, caller.user_id)
    credited = referral.distributor_id if referral else link.distributor_id if link else None
    return JSON(
        ReservationResult(
            room_id=str(room_id),
            created=created,
            reservations=count,
            distributor_id=None if credited is None else str(credited),
        ),
        201 if created else 200,
    )


async def room_reservations(request: Request) -> Response:
    caller = require(request, "host", "admin")
    room_id = path_id(request)
    async with resources(request).pool.acquire() as conn:
        room = await get_room(conn, room_id)
        if room is None:
            raise RoomNotFound(room_id)
        if room.host_id != caller.user_id and not caller.is_admin:
            raise NotRoomHost(room_id)
        return JSON(await list_reservations(conn, room_id))


async def new_code(request: Request) -> Response:
    caller = require(request)
    body = await read_json(request, CodeBody)
    res = resources(request)
    distributor = await _distributor_row(res, caller.user_id)
    async with res.pool.acquire() as conn:
        view, created = await ensure_code(conn, distributor["id"], caller.user_id, body.code)
    return JSON(view, 201 if created else 200)


async def list_codes(request: Request) -> Response:
    caller = require(request)
    res = resources(request)
    distributor = await _distributor_row(res, caller.user_id)
    async with res.pool.acquire() as conn:
        return JSON(await my_codes(conn, distributor["id"]))


async def my_dashboard(request: Request) -> Response:
    caller = require(request)
    res = resources(request)
    row = await _distributor_row(res, caller.user_id)
    async with res.pool.acquire() as conn:
        await saw_device(conn, caller.user_id, device_id(request))
        return JSON(await dashboard(conn, row))


async def my_links(request: Request) -> Response:
    caller = require(request)
    query = read_query(request, PageQuery)
    res = resources(request)
    row = await _distributor_row(res, caller.user_id)
    before = None if query.before is None else int(query.before)
    async with res.pool.acquire() as conn:
        return JSON(
            await list_links(conn, res.settings, row["id"], limit=query.limit, before=before)
        )


async def my_payouts(request: Request) -> Response:
    caller = require(request)
    query = read_query(request, PageQuery)
    res = resources(request)
    row = await _distributor_row(res, caller.user_id)
    before = None if query.before is None else int(query.before)
    async with res.pool.acquire() as conn:
        return JSON(
            await payouts.distributor_payouts(conn, row["id"], limit=query.limit, before=before)
        )


async def distributor_dashboard(request: Request) -> Response:
    caller = require(request)
    distributor_id = path_id(request)
    async with resources(request).pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT id, user_id, team, created_at FROM distributors WHERE id = $1", distributor_id
        )
        # another distributor's numbers are not theirs to see: indistinguishable from absent
        if row is None or not (caller.is_admin or row["user_id"] == caller.user_id):
            raise DistributorNotFound(distributor_id)
        return JSON(await dashboard(conn, row))


async def room_leaderboard(request: Request) -> Response:
    room_id = path_id(request)
    async with resources(request).pool.acquire() as conn:
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM rooms WHERE id = $1)", room_id):
            raise RoomNotFound(room_id)
        return JSON(await leaderboard(conn, room_id))


async def attribution_trail(request: Request) -> Response:
    caller = require(request)
    order_id = path_id(request)
    async with resources(request).pool.acquire() as conn:
        return JSON(await order_trail(conn, order_id, caller))


async def create_payout(request: Request) -> Response:
    caller = require(request, "admin")
    batch = await payouts.run_payout(resources(request), created_by=caller.user_id)
    return JSON(batch, 201 if batch.id is not None else 200)


async def show_payout(request: Request) -> Response:
    require(request, "admin")
    batch_id = path_id(request)
    async with resources(request).pool.acquire() as conn:
        return JSON(await payouts.batch_view(conn, batch_id))


async def export_payout(request: Request) -> Response:
    require(request, "admin")
    batch_id = path_id(request)
    async with resources(request).pool.acquire() as conn:
        batch = await payouts.batch_view(conn, batch_id)
    return Response(
        payouts.batch_csv(batch),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="payout-{batch_id}.csv"'},
    )


def attribution_routes() -> list[BaseRoute]:
    tag = "attribution"
    return [
        api_route("/api/distributors", become, methods=["POST"], tag=tag,
                  summary="become a distributor (repeat calls return the same)",
                  body=BecomeDistributor, response=DistributorView, status=201, also=(200,),
                  roles=("any",), errors=(401,)),
        api_route("/api/distributors/me", my_dashboard, methods=["GET"], tag=tag,
                  summary="the caller's distributor dashboard", response=DashboardView,
                  roles=("distributor",), errors=(401, 403)),
        api_route("/api/distributors/me/links", my_links, methods=["GET"], tag=tag,
                  summary="the caller's links newest first, with the clicks each brought",
                  query=PageQuery, response=LinkList, roles=("distributor",),
                  errors=(401, 403, 422)),
        api_route("/api/distributors/me/payouts", my_payouts, methods=["GET"], tag=tag,
                  summary="what the caller was paid, payout batch by batch, newest first",
                  query=PageQuery, response=PayoutHistory, roles=("distributor",),
                  errors=(401, 403, 422)),
        api_route("/api/distributors/{id}", distributor_dashboard, methods=["GET"], tag=tag,
                  summary="a distributor's dashboard (themself or an admin)",
                  response=DashboardView, roles=("distributor", "admin"), errors=(401, 404)),
        api_route("/api/links", new_link, methods=["POST"], tag=tag,
                  summary="a tracked link into a room (one per room and product)",
                  body=CreateLink, response=LinkView, status=201, roles=("distributor",),
                  errors=(401, 403, 404)),
        api_route("/l/{code}", follow_link, methods=["GET"], tag=tag,
                  summary="follow a share link: record the click, bind, redirect to the room",
                  status=302, path_params={"code": LinkCode}, errors=(404, 429)),
        api_route("/api/rooms/{id}/enter", enter_room, methods=["POST"], tag=tag,
                  summary="enter a room (through a link: binds the caller to its distributor)",
                  body=EnterRoom, response=EnterResult, roles=("viewer",),
                  errors=(401, 404, 429)),
        api_route("/api/rooms/{id}/reservations", reserve_room, methods=["POST"], tag=tag,
                  summary="reserve a scheduled room (through a link or a referral code: binds "
                  "the caller as a click would); told on user#{id} when it goes live",
                  body=ReserveRoom, response=ReservationResult, status=201, also=(200,),
                  roles=("viewer",), errors=(401, 403, 404, 409, 422, 429)),
        api_route("/api/rooms/{id}/reservations", room_reservations, methods=["GET"], tag=tag,
                  summary="who reserved the room (its host, admin)", response=ReservationList,
                  roles=("host", "admin"), errors=(401, 403)),
        api_route("/api/distributors/me/codes", new_code, methods=["POST"], tag=tag,
                  summary="the caller's referral code (given, or generated; one per "
                  "distributor, repeat calls return it)", body=CodeBody,
                  response=ReferralCodeView, status=201, also=(200,),
                  roles=("distributor",), errors=(401, 403, 409)),
        api_route("/api/distributors/me/codes", list_codes, methods=["GET"], tag=tag,
                  summary="the caller's referral codes", response=ReferralCodeList,
                  roles=("distributor",), errors=(401, 403)),
        api_route("/api/rooms/{id}/leaderboard", room_leaderboard, methods=["GET"], tag=tag,
                  summary="distributors and teams ranked by GMV in the room",
                  response=LeaderboardView, errors=(404,)),
        api_route("/api/orders/{id}/attribution", attribution_trail, methods=["GET"], tag=tag,
                  summary="audit trail of an order's attribution (buyer, distributor, admin)",
                  response=AttributionTrail, roles=("viewer", "distributor", "admin"),
                  errors=(401, 404)),
        api_route("/api/admin/payouts", create_payout, methods=["POST"], tag=tag,
                  summary="pay every positive payable balance (nothing twice)",
                  response=PayoutBatchView, status=201, also=(200,), roles=("admin",),
                  errors=(401, 403)),
        api_route("/api/admin/payouts/{id}.csv", export_payout, methods=["GET"], tag=tag,
                  summary="a payout batch as CSV", response=str, media_type="text/csv",
                  roles=("admin",), errors=(401, 403, 404)),
        api_route("/api/admin/payouts/{id}", show_payout, methods=["GET"], tag=tag,
                  summary="a payout batch", response=PayoutBatchView, roles=("admin",),
                  errors=(401, 403, 404)),
    ]  # fmt: skip
