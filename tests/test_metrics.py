"""HTTP metrics are labelled by route template, whatever the outcome of the request."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY


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
