"""Operational routes: health, metrics, OpenAPI, the dev-mode token mint, outbound webhooks."""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any, Literal

import msgspec
from redis.asyncio.cluster import RedisCluster
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from core.auth import mint_token
from core.errors import NotFound, Unprocessable
from core.http import JSON, read_json, resources
from core.metrics import metrics_endpoint
from core.openapi import api_route, build_openapi
from core.redis_client import RedisClient
from core.webhooks_api import webhook_routes

HEALTH_TIMEOUT_S = 2.0
HEALTH_KEY = "livesell:health"
HEALTH_KEY_TTL_MS = 10_000


class Health(msgspec.Struct, omit_defaults=True):
    ok: bool
    postgres: str
    redis: str
    # each failing check, by what it checked ("postgres", "redis 10.0.0.7:6379"): its error
    errors: dict[str, str] = {}


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


async def _postgres_errors(request: Request) -> dict[str, str]:
    """A query on a pooled connection, which must reach a primary that takes writes (behind a
    pooler or a failover, a connection may reach a standby)."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            async with resources(request).pool.acquire() as conn:
                standby = await conn.fetchval("SELECT pg_is_in_recovery()")
        if standby:
            return {"postgres": "read-only: the server is a standby in recovery"}
        return {}
    except Exception as exc:  # noqa: BLE001 - any failure means "down", named
        return {"postgres": _describe(exc)}


async def _redis_errors(request: Request) -> dict[str, str]:
    """A write and a read on every Redis node this process writes to (each primary of a
    cluster, through a key in its slots), at once."""
    client = resources(request).redis
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            checks = health_keys(client)
    except Exception as exc:  # noqa: BLE001 - the cluster's nodes are unknown
        return {"redis": _describe(exc)}
    outcomes = await asyncio.gather(*(_write_read(client, key) for key in checks.values()))
    return {
        f"redis {where}": error
        for where, error in zip(checks, outcomes, strict=True)
        if error is not None
    }


def health_keys(client: RedisClient) -> dict[str, str]:
    """{node address: a key that node serves}; one node: its URL's address."""
    if not isinstance(client, RedisCluster):
        kwargs = client.connection_pool.connection_kwargs
        return {f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}": HEALTH_KEY}
    keys: dict[str, str] = {}
    wanted = {node.name for node in client.get_primaries()}
    for n in range(16_384 * 4):
        key = f"{HEALTH_KEY}:{{h{n}}}"
        node = client.get_node_from_key(key)
        if node is not None and node.name in wanted and node.name not in keys:
            keys[node.name] = key
            if len(keys) == len(wanted):
                break
    return keys


async def _write_read(client: RedisClient, key: str) -> str | None:
    token = secrets.token_hex(8)
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            await client.set(key, token, px=HEALTH_KEY_TTL_MS)
            read = await client.get(key)
        if read != token.encode():
            return f"read {read!r} back after writing {token!r}"
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "down", named
        return _describe(exc)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def healthz(request: Request) -> Response:
    """Up only when PostgreSQL answers a query and every Redis node takes a write and a read."""
    pg, rd = await asyncio.gather(_postgres_errors(request), _redis_errors(request))
    health = Health(
        ok=not pg and not rd,
        postgres="down" if pg else "up",
        redis="down" if rd else "up",
        errors={**pg, **rd},
    )
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
        *webhook_routes(),
    ]
