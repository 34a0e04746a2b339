"""HTTP metrics are labelled by route template, whatever the outcome of the request."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from core import metrics
from core.metrics import HttpSeries


def _count(method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("livesell_http_requests_total", labels) or 0.0


async def test_requests_are_counted_by_route_template(client: httpx.AsyncClient) -> None:
    buys = _count("POST", "/api/drops/{id}/buy", "401")
    products = _count("GET", "/api/products/{id}", "404")
    unmatched = _count("GET", "unmatched", "404")
    for drop_id in ("1", "22", "333"):
        assert (await client.post(f"/api/drops/{drop_id}/buy")).status_code == 401
    assert (await client.get("/api/products/987654")).status_code == 404
    assert (await client.get("/no/such/route")).status_code == 404
    assert _count("POST", "/api/drops/{id}/buy", "401") == buys + 3
    assert _count("GET", "/api/products/{id}", "404") == products + 1
    assert _count("GET", "unmatched", "404") == unmatched + 1


def test_the_http_series_render_as_prometheus_counter_and_histogram(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    series = HttpSeries(buckets=(0.01, 0.1))
    registry = CollectorRegistry()
    registry.register(series)
    for seconds in (0.005, 0.01, 0.05, 3.0):
        series.observe("POST", "/api/drops/{id}/buy", 409, seconds)
    series.observe("POST", "/api/drops/{id}/buy", 201, 0.02)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(
            name, {"method": "POST", "route": "/api/drops/{id}/buy", **labels}
        )

    assert sample("livesell_http_requests_total", status="409") == 4
    assert sample("livesell_http_requests_total", status="201") == 1
    # buckets are cumulative and inclusive of their bound, as Prometheus reads them
    assert sample("livesell_http_request_seconds_bucket", le="0.01") == 2
    assert sample("livesell_http_request_seconds_bucket", le="0.1") == 4
    assert sample("livesell_http_request_seconds_bucket", le="+Inf") == 5
    assert sample("livesell_http_request_seconds_count") == 5
    assert sample("livesell_http_request_seconds_sum") == pytest.approx(3.085)

    # methods a client invents cannot grow the exposition without bound
    monkeypatch.setattr(metrics, "SERIES_MAX", 3)
    for method in ("BREW", "WHEN", "MKCOL"):
        series.observe(method, "unmatched", 405, 0.001)
    assert (
        registry.get_sample_value(
            "livesell_http_requests_total",
            {"method": "BREW", "route": "unmatched", "status": "405"},
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "livesell_http_requests_total",
            {"method": "OTHER", "route": "unmatched", "status": "405"},
        )
        == 2
    )
