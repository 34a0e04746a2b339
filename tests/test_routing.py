"""The routes tried first (livesell.app.HOT_PATHS) change no request's route: for every route's
every method, the first route that fully matches is the same in the packages' own order."""

from __future__ import annotations

import re

from starlette.routing import Match, Route

import attribution
import live
import storefront
import web
from core.routes import core_routes
from livesell.app import HOT_PATHS, all_routes


def key(route: object) -> tuple[object, ...]:
    return (
        getattr(route, "path", None),
        tuple(sorted(getattr(route, "methods", None) or ())),
        getattr(getattr(route, "endpoint", None), "__qualname__", None),
    )


def first_match(routes: list[object], method: str, path: str) -> tuple[object, ...] | None:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in routes:
        if isinstance(route, Route) and route.matches(scope)[0] is Match.FULL:
            return key(route)
    return None


def test_trying_hot_routes_first_changes_no_request_s_route() -> None:
    packaged: list[object] = [
        *core_routes(),
        *live.routes(),
        *storefront.routes(),
        *attribution.routes(),
        *web.routes(),
    ]
    ordered = list(all_routes())
    assert [getattr(r, "path", None) for r in ordered[: len(HOT_PATHS)]] == list(HOT_PATHS)
    assert sorted(map(repr, map(key, ordered))) == sorted(map(repr, map(key, packaged)))
    checked = 0
    for route in packaged:
        if not isinstance(route, Route):
            continue
        path = re.sub(r"\{[^}]+\}", "7", route.path)
        for method in route.methods or ():
            assert first_match(ordered, method, path) == first_match(packaged, method, path)
            checked += 1
    assert checked > 30
