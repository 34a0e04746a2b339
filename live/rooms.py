"""Room routes: create, go live, end, pin and unpin a card, and the snapshot anyone may read.

Every control takes the room row `FOR UPDATE`, checks the caller is its host (or an admin),
changes it, and publishes the matching room event only after the transaction committed.
"""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

import attribution
import storefront
from core import rooms as rooms_db
from core import webhooks
from core.auth import Principal
from core.db import Conn
from core.errors import NotRoomHost, RoomEnded, RoomNotFound, UnknownProduct, Unprocessable
from core.events import Outbox
from core.http import JSON, NOT_BLANK, Id, path_id, read_json, require, resources
from core.openapi import api_route
from core.redis_client import REDIS_ERRORS
from core.rooms import Room
from live.errors import RoomAlreadyLive
from live.events import CardPinned, CardUnpinned, RoomLive
from live.events import RoomEnded as RoomEndedEvent
from live.snapshot import RoomSnapshot, RoomView, room_snapshot, room_view
from live.viewers import total_viewers
from storefront import ProductView

log = logging.getLogger("livesell.rooms")


class CreateRoom(msgspec.Struct, forbid_unknown_fields=True):
    # stored without its surrounding whitespace (`_title`)
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]


class PinRequest(msgspec.Struct, forbid_unknown_fields=True):
    product_id: Id


class PinnedCard(msgspec.Struct):
    room_id: str
    product: ProductView


def _title(raw: str) -> str:
    # CreateRoom's schema already refused a blank or longer title; this is its stripped form
    title = raw.strip()
    if not title:
        raise Unprocessable("title must be 1 to 200 characters", field="title")
    return title


async def _controlled_room(conn: Conn, who: Principal, room_id: int) -> Room:
    """The room, locked for this transaction, if `who` may control it."""
    room = await rooms_db.get_room(conn, room_id, for_update=True)
    if room is None:
        raise RoomNotFound(room_id)
    if room.host_id != who.user_id and not who.is_admin:
        raise NotRoomHost(room_id)
    return room


async def create_room(request: Request) -> Response:
    who = require(request, "host")
    body = await read_json(request, CreateRoom)
    async with resources(request).pool.acquire() as conn:
        room = await rooms_db.create_room(conn, who.user_id, _title(body.title))
    return JSON(room_view(room), 201)


async def go_live(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    res = resources(request)
    outbox = Outbox()
    async with res.pool.acquire() as conn, conn.transaction():
        room = await _controlled_room(conn, who, room_id)
        if room.status == "live":
            raise RoomAlreadyLive(room_id)
        if room.status == "ended":
            raise RoomEnded(room_id)
        updated = await rooms_db.set_live(conn, room_id)
        assert updated is not None and updated.live_at is not None
        live = RoomLive(room_id=str(room_id), live_at=updated.live_at)
        outbox.room(room_id, live)
        # the reservers, each told once (and the integrating app, to push-notify them)
        reservers = await attribution.take_reservers(conn, room_id)
        for user_id in reservers:
            outbox.user(user_id, live)
        await webhooks.enqueue(
            conn,
            "room.live",
            f"room.live:{room_id}",
            {
                "room_id": str(room_id),
                "title": updated.title,
                "live_at": updated.live_at,
                "reservers": reservers,
            },
        )
    await outbox.flush(res.publisher)
    return JSON(room_view(updated))


async def end_room(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    res = resources(request)
    outbox = Outbox()
    async with res.pool.acquire() as conn, conn.transaction():
        room = await _controlled_room(conn, who, room_id)
        if room.status == "ended":
            raise RoomEnded(room_id)
        updated = await rooms_db.set_ended(conn, room_id)
        assert updated is not None and updated.ended_at is not None
        if room.pinned_product_id is not None:
            outbox.room(
                room_id,
                CardUnpinned(room_id=str(room_id), product_id=str(room.pinned_product_id)),
            )
        outbox.room(room_id, RoomEndedEvent(room_id=str(room_id), ended_at=updated.ended_at))
    await outbox.flush(res.publisher)
    return JSON(room_view(updated))


async def pin_card(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    body = await read_json(request, PinRequest)
    product_id = int(body.product_id)
    res = resources(request)
    outbox = Outbox()
    async with res.pool.acquire() as conn, conn.transaction():
        room = await _controlled_room(conn, who, room_id)
        if room.status == "ended":
            raise RoomEnded(room_id)
        product = await storefront.product_view(conn, product_id)
        if product is None:
            raise UnknownProduct(product_id)
        if room.pinned_product_id != product_id:
            await rooms_db.set_pinned(conn, room_id, product_id)
            outbox.room(room_id, CardPinned(room_id=str(room_id), product=product))
    await outbox.flush(res.publisher)
    return JSON(PinnedCard(room_id=str(room_id), product=product))


async def unpin_card(request: Request) -> Response:
    who = require(request)
    room_id = path_id(request)
    res = resources(request)
    outbox = Outbox()
    async with res.pool.acquire() as conn, conn.transaction():
        room = await _controlled_room(conn, who, room_id)
        if room.status == "ended":
            raise RoomEnded(room_id)
        updated = room
        if room.pinned_product_id is not None:
            changed = await rooms_db.set_pinned(conn, room_id, None)
            assert changed is not None
            updated = changed
            outbox.room(
                room_id,
                CardUnpinned(room_id=str(room_id), product_id=str(room.pinned_product_id)),
            )
    await outbox.flush(res.publisher)
    return JSON(room_view(updated))


async def get_snapshot(request: Request) -> Response:
    room_id = path_id(request)
    res = resources(request)
    try:
        viewers = await total_viewers(res.redis, room_id)
    except REDIS_ERRORS as exc:
        # the count is decoration; the room itself still comes from PostgreSQL
        log.warning("viewer count unavailable for room %s: %r", room_id, exc)
        viewers = 0
    async with res.pool.acquire() as conn:
        snapshot = await room_snapshot(conn, room_id, viewers)
    if snapshot is None:
        raise RoomNotFound(room_id)
    return JSON(snapshot)


def room_routes() -> list[BaseRoute]:
    control = dict(roles=("host", "admin"), errors=(401, 403, 404, 409), tag="rooms")
    return [
        api_route(
            "/api/rooms",
            create_room,
            methods=["POST"],
            summary="create a room (status scheduled)",
            body=CreateRoom,
            response=RoomView,
            status=201,
            roles=("host",),
            errors=(401, 403),
            tag="rooms",
        ),
        api_route(
            "/api/rooms/{id}",
            get_snapshot,
            methods=["GET"],
            summary="room snapshot: room, pinned card, active drop, server time, viewers",
            response=RoomSnapshot,
            errors=(404,),
            tag="rooms",
        ),
        api_route(
            "/api/rooms/{id}/live",
            go_live,
            methods=["POST"],
            summary="go live (room's host)",
            response=RoomView,
            **control,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/end",
            end_room,
            methods=["POST"],
            summary="end the room (room's host)",
            response=RoomView,
            **control,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/pin",
            pin_card,
            methods=["POST"],
            summary="pin a product card (room's host)",
            body=PinRequest,
            response=PinnedCard,
            **control,  # type: ignore[arg-type]
        ),
        api_route(
            "/api/rooms/{id}/pin",
            unpin_card,
            methods=["DELETE"],
            summary="unpin the product card (room's host)",
            response=RoomView,
            **control,  # type: ignore[arg-type]
        ),
    ]
