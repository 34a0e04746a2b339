"""Prometheus metrics: HTTP request counts and latency, plus what packages register."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# distinct (method, route, status) series kept; beyond, new ones count under method OTHER (a
# client chooses the method, and must not grow the exposition without bound)
SERIES_MAX = 4_096


class HttpSeries(Collector):
    """The HTTP request counter and latency histogram (by method, route template and status),
    kept as plain numbers and rendered as Prometheus families when scraped.

    Every request of the API passes through `observe`, so it costs a dict update and a bisect
    rather than prometheus_client's per-sample locks (the API process is one event loop; a
    scrape runs on it too). Exposed as `livesell_http_requests_total` and the histogram
    `livesell_http_request_seconds`, as prometheus_client's own types would name them."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = (*buckets, math.inf)
        self._le = [floatToGoString(b) for b in self._bounds]
        self._requests: dict[tuple[str, str, str], int] = {}
        # (method, route) -> [count in each bucket (not cumulative)..., sum of seconds]
        self._latency: dict[tuple[str, str], list[float]] = {}
        self._statuses = {status: str(status) for status in range(100, 600)}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, self._statuses.get(status) or str(status))
        requests = self._requests
        count = requests.get(key)
        if count is None:
            if len(requests) >= SERIES_MAX:
                key = ("OTHER", route, key[2])
            count = requests.get(key, 0)
        requests[key] = count + 1
        pair = (key[0], route)
        latency = self._latency.get(pair)
        if latency is None:
            latency = self._latency[pair] = [0.0] * (len(self._bounds) + 1)
        latency[bisect.bisect_left(self._bounds, seconds)] += 1
        latency[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "livesell_http_requests",
            "HTTP requests by route and status",
            labels=["method", "route", "status"],
        )
        for labels, count in list(self._requests.items()):
            requests.add_metric(labels, count)
        yield requests
        latency = HistogramMetricFamily(
            "livesell_http_request_seconds",
            "HTTP request latency by route",
            labels=["method", "route"],
        )
        for (method, route), counts in list(self._latency.items()):
            cumulative = list(itertools.accumulate(counts[:-1]))
            latency.add_metric(
                [method, route], list(zip(self._le, cumulative, strict=True)), sum_value=counts[-1]
            )
        yield latency


HTTP_SERIES = HttpSeries()
REGISTRY.register(HTTP_SERIES)
observe_request = HTTP_SERIES.observe


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
