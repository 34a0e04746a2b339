"""The Starlette application: every package's routes behind one error shape and one lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

import attribution
import live
import storefront
import web
from core.http import exception_handlers
from core.metrics import MetricsMiddleware
from core.openapi import one_route_per_path
from core.resources import Resources, open_resources
from core.routes import core_routes
from core.settings import Settings

# Routes the router tries first: the ones a flash sale or a shared link's campaign calls
# thousands of times a second (Starlette tries routes in order, a regex match each). None of them
# overlaps another route, so trying them first changes no request's route.
HOT_PATHS = ("/api/drops/{id}/buy", "/l/{code}")


def all_routes() -> list[BaseRoute]:
    routes = [
        *core_routes(),
        *live.routes(),
        *storefront.routes(),
        *attribution.routes(),
        *web.routes(),
    ]
    hot = [r for path in HOT_PATHS for r in routes if getattr(r, "path", None) == path]
    # one route per path, so a 405's (and OPTIONS') `Allow` lists every method of the path
    return one_route_per_path(hot + [r for r in routes if r not in hot])


def create_app(
    settings: Settings, resources: Resources | None = None, shop: storefront.Shop | None = None
) -> Starlette:
    """The API app. Given `resources`, it uses them (tests, `serve`), with `shop` or a shop of
    its own; otherwise its lifespan opens both and closes them when the app stops."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if resources is not None:
            yield
            return
        async with open_resources(settings) as opened:
            app.state.resources = opened
            app.state.shop = storefront.Shop(opened)
            try:
                yield
            finally:
                await app.state.shop.aclose()

    app = Starlette(
        routes=all_routes(),
        # the early answers first: they count themselves in the HTTP metrics
        middleware=[*storefront.middleware(), Middleware(MetricsMiddleware)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    if resources is not None:
        app.state.resources = resources
        app.state.shop = shop or storefront.Shop(resources)
    return app
