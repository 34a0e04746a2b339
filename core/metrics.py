"""Prometheus metrics: HTTP request counts and latency, plus what packages register."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "livesell_http_requests_total",
    "HTTP requests by route and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "livesell_http_request_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


ASYNCIO_TASKS = Gauge(
    "livesell_asyncio_tasks", "asyncio tasks alive in this process (a leak shows as growth)"
)


class MetricsMiddleware:
    """Counts requests by route template (not raw path, which would explode cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            observe_request(
                scope["method"], _route_template(scope), status, time.perf_counter() - started
            )


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request in the HTTP series (by route template, never raw path)."""
    count, latency = _series(method, route, status)
    count.inc()
    latency.observe(seconds)


# labelled series by (method, route, status): looking them up through labels() costs more per
# request than the whole router; bounded, as clients choose the method
_SERIES_MAX = 4_096
_series_cache: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _series(method: str, route: str, status: int) -> tuple[Any, Any]:
    key = (method, route, status)
    found = _series_cache.get(key)
    if found is None:
        found = (
            HTTP_REQUESTS.labels(method, route, str(status)),
            HTTP_LATENCY.labels(method, route),
        )
        if len(_series_cache) < _SERIES_MAX:
            _series_cache[key] = found
    return found


def _route_template(scope: Scope) -> str:
    # Starlette's router records the route it chose in the scope (for a 405 the route whose
    # path matched); matching again here would walk every route a second time per request
    route = scope.get("route")
    if route is None:
        return "unmatched"
    return str(getattr(route, "path", "other"))


async def metrics_endpoint(request: Request) -> Response:
    ASYNCIO_TASKS.set(len(asyncio.all_tasks()))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
