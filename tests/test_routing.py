"""The routing table: the routes tried first (livesell.app.HOT_PATHS) change no request's route,
and a path's every method is answered by one route, so a 405's and OPTIONS' `Allow` lists them
all."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
from starlette.routing import BaseRoute, Match, Route

import attribution
import live
import storefront
import web
from core.openapi import one_route_per_path
from core.routes import core_routes
from livesell.app import HOT_PATHS, all_routes

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def packaged_routes() -> list[BaseRoute]:
    """Every package's routes in the packages' own order, each method still a route of its own."""
    return [
        *core_routes(),
        *live.routes(),
        *storefront.routes(),
        *attribution.routes(),
        *web.routes(),
    ]


def handler(route: Route, method: str) -> Callable[..., Any]:
    endpoints: dict[str, Callable[..., Any]] = getattr(route, "endpoints", {})
    return endpoints.get(method, route.endpoint)


def first_match(routes: list[BaseRoute], method: str, path: str) -> str | None:
    """The name of the function that serves `method path` (None: no route matches fully)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in routes:
        if isinstance(route, Route) and route.matches(scope)[0] is Match.FULL:
            return str(handler(route, method).__qualname__)
    return None


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "7", path)


def test_trying_hot_routes_first_changes_no_request_s_route() -> None:
    packaged = packaged_routes()
    ordered = all_routes()
    assert [getattr(r, "path", None) for r in ordered[: len(HOT_PATHS)]] == list(HOT_PATHS)
    checked = 0
    for route in packaged:
        if not isinstance(route, Route):
            continue
        for method in route.methods or ():
            path = concrete(route.path)
            assert first_match(ordered, method, path) == first_match(packaged, method, path)
            assert first_match(ordered, method, path) is not None
            checked += 1
    assert checked > 30


def test_paths_declared_with_several_methods_are_one_route() -> None:
    joined = one_route_per_path(packaged_routes())
    paths = [r.path for r in joined if isinstance(r, Route)]
    assert len(paths) == len(set(paths))
    assert {"/api/products", "/api/rooms/{id}/pin"} <= set(paths)
    products = next(r for r in joined if isinstance(r, Route) and r.path == "/api/products")
    assert {"GET", "POST"} <= set(products.methods or ())


def allowed(path: str) -> set[str]:
    """Every method some route of the packages serves at the concrete `path`."""
    methods: set[str] = set()
    for route in packaged_routes():
        if isinstance(route, Route) and route.path_regex.match(path):
            methods |= set(route.methods or ())
    return methods


async def test_405_and_options_allow_every_method_of_the_path(
    client: httpx.AsyncClient,
) -> None:
    checked = 0
    for route in all_routes():
        if not isinstance(route, Route):
            continue
        path = concrete(route.path)
        expected = allowed(path)
        for method in sorted(set(HTTP_METHODS) - expected):
            response = await client.request(method, path)
            assert response.status_code == 405, (method, path, response.status_code)
            if method != "HEAD":
                assert response.json()["error"]["code"] == "method_not_allowed"
            allow = {m.strip() for m in response.headers["allow"].split(",")}
            assert allow == expected, (method, path)
            checked += 1
    assert checked > 100
