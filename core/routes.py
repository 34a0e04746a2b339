"""Operational routes: health, metrics, OpenAPI, and the dev-mode token mint."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from core.auth import mint_token
from core.errors import NotFound, Unprocessable
from core.http import JSON, read_json, resources
from core.metrics import metrics_endpoint
from core.openapi import api_route, build_openapi

HEALTH_TIMEOUT_S = 2.0


class Health(msgspec.Struct):
    ok: bool
    postgres: str
    redis: str


Role = Literal["host", "viewer", "distributor", "admin"]
# printable ASCII (core.auth.mint_token takes any printable text; this route, the ASCII subset)
Subject = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[ -~]+$(?!\n)")]
MAX_DEV_TTL_S = 366 * 86_400


class DevTokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    sub: Subject
    roles: list[Role] = msgspec.field(default_factory=lambda: ["viewer"])
    # below a minute counts as a minute
    ttl_s: Annotated[int, msgspec.Meta(ge=1, le=MAX_DEV_TTL_S)] = 86_400


class DevToken(msgspec.Struct):
    token: str
    sub: str
    roles: list[Role]


OpenAPIDocument = dict[str, Any]


async def _postgres_up(request: Request) -> bool:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            async with resources(request).pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means "down"
        return False


async def _redis_up(request: Request) -> bool:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            return bool(await resources(request).redis.ping())
    except Exception:  # noqa: BLE001
        return False


async def healthz(request: Request) -> Response:
    pg, rd = await asyncio.gather(_postgres_up(request), _redis_up(request))
    health = Health(ok=pg and rd, postgres="up" if pg else "down", redis="up" if rd else "down")
    return JSON(health, 200 if health.ok else 503)


async def dev_token(request: Request) -> Response:
    settings = resources(request).settings
    if not settings.dev:
        raise NotFound("dev tokens are off; mint tokens with `livesell token`")
    body = await read_json(request, DevTokenRequest)
    try:
        token = mint_token(settings.secret, body.sub, body.roles, ttl_s=max(60, body.ttl_s))
    except ValueError as exc:
        raise Unprocessable(str(exc)) from None
    return JSON(DevToken(token=token, sub=body.sub, roles=body.roles))


async def openapi(request: Request) -> Response:
    return JSON(build_openapi(request.app.routes, "livesell", "0.1.0"))


def core_routes() -> list[BaseRoute]:
    return [
        api_route(
            "/healthz",
            healthz,
            methods=["GET"],
            summary="liveness and dependencies",
            response=Health,
            errors=(503,),
        ),
        api_route(
            "/metrics",
            metrics_endpoint,
            methods=["GET"],
            summary="Prometheus metrics (text exposition format)",
            response=str,
            media_type="text/plain",
        ),
        api_route(
            "/api/openapi.json",
            openapi,
            methods=["GET"],
            summary="this document",
            response=OpenAPIDocument,
        ),
        api_route(
            "/api/dev/token",
            dev_token,
            methods=["POST"],
            summary="mint a token (dev mode)",
            body=DevTokenRequest,
            response=DevToken,
            errors=(404,),
            tag="dev",
        ),
    ]
