"""Prometheus metrics: HTTP request counts and latency, plus what packages register."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import time
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    generate_latest,
)
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


class LoopCounter(Collector):
    """A labelled counter kept as plain numbers and rendered when scraped, for counts taken on
    every request of the event loop's hot paths (prometheus_client's Counter takes a lock per
    increment; the API process is one event loop, and a scrape runs on it too). Label values
    must come from a bounded set."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labels = list(labels)
        self.counts: dict[tuple[str, ...], int] = {}
        if registry is not None:
            registry.register(self)

    def inc(self, *values: str) -> None:
        counts = self.counts
        counts[values] = counts.get(values, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, count in list(self.counts.items()):
            family.add_metric(values, count)
        yield family


class LoopHistogram(Collector):
    """An unlabelled histogram kept as plain numbers like LoopCounter: `observe` is a bisect and
    two additions, for durations measured on the event loop's hot paths."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = (*buckets, math.inf)
        self._le = [floatToGoString(b) for b in self._bounds]
        self._counts = [0] * len(self._bounds)  # per bucket, not cumulative
        self._sum = 0.0
        if registry is not None:
            registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation)
        cumulative = list(itertools.accumulate(self._counts))
        family.add_metric([], list(zip(self._le, cumulative, strict=True)), sum_value=self._sum)
        yield family


class HttpSeries(Collector):
    """The HTTP request counter and latency histogram (by method, route template and status),
    kept as plain numbers like LoopCounter: every request of the API passes through `observe`.
    Exposed as `livesell_http_requests_total` and the histogram `livesell_http_request_seconds`,
    as prometheus_client's own types would name them."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = (*buckets, math.inf)
        self._le = [floatToGoString(b) for b in self._bounds]
        self._requests = LoopCounter(
            "livesell_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=None,
        )
        # (method, route) -> [count in each bucket (not cumulative)..., sum of seconds]
        self._latency: dict[tuple[str, str], list[float]] = {}
        self._statuses = {status: str(status) for status in range(100, 600)}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        code = self._statuses.get(status) or str(status)
        requests = self._requests.counts
        if (method, route, code) not in requests and len(requests) >= SERIES_MAX:
            method = "OTHER"
        self._requests.inc(method, route, code)
        pair = (method, route)
        latency = self._latency.get(pair)
        if latency is None:
            latency = self._latency[pair] = [0.0] * (len(self._bounds) + 1)
        latency[bisect.bisect_left(self._bounds, seconds)] += 1
        latency[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        yield from self._requests.collect()
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


def exposition() -> bytes:
    """Everything registered in this process, in the Prometheus text format (`CONTENT_TYPE`):
    the API's `/metrics` and the hub's answer the same, so a process running both (`livesell
    serve`) shows all of it on either port."""
    ASYNCIO_TASKS.set(len(asyncio.all_tasks()))
    return generate_latest()


CONTENT_TYPE = CONTENT_TYPE_LATEST


async def metrics_endpoint(request: Request) -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE)
