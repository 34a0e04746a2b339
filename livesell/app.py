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
from core.resources import Resources, open_resources
from core.routes import core_routes
from core.settings import Settings


def all_routes() -> list[BaseRoute]:
    return [
        *core_routes(),
        *live.routes(),
        *storefront.routes(),
        *attribution.routes(),
        *web.routes(),
    ]


def create_app(settings: Settings, resources: Resources | None = None) -> Starlette:
    """The API app. Given `resources`, it uses them (tests, `serve`); otherwise it opens its own."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if resources is not None:
            app.state.resources = resources
            yield
            return
        async with open_resources(settings) as opened:
            app.state.resources = opened
            yield

    app = Starlette(
        routes=all_routes(),
        middleware=[Middleware(MetricsMiddleware), *storefront.middleware()],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    if resources is not None:
        app.state.resources = resources
    return app
