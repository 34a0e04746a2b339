"""Routes serving the pages, their static modules, the hub client they load, share-link QR codes,
and the small config the pages start from."""

from __future__ import annotations

import html
import io
import re
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import segno
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from core.errors import NotFound
from core.http import DEPENDENCY_ERRORS, JSON, resources
from core.openapi import api_route
from core.rooms import room_exists

STATIC_DIR = Path(__file__).parent / "static"
# Browser libraries from web/package.json, installed by `make` when npm is present (never in git).
NODE_MODULES = Path(__file__).parent / "node_modules"
# The hub client: the npm `centrifuge` SDK's browser build (its own route, which says what the
# pages do without it)
SDK_FILE = NODE_MODULES / "centrifuge" / "dist" / "centrifuge.js"
SDK_PATH = "/vendor/centrifuge.js"
# what /vendor/{name} serves besides, by name: only these files of node_modules, never the tree
VENDOR_FILES = {"chart.umd.js": "chart.js/dist/chart.umd.js"}

# Pages load only their own modules and styles; the hub listens on its own port, hence ws:/wss:.
# Product images may live anywhere, so images are the one thing allowed from other origins.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob: https: http:; connect-src 'self' ws: wss:; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'; object-src 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
# When payments go through Stripe (LIVESELL_PAYMENTS=stripe), the viewer page also loads
# Stripe.js, which frames its card form and calls Stripe's API.
STRIPE_PAGE_HEADERS = {
    **PAGE_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY.replace(
        "script-src 'self';", "script-src 'self' https://js.stripe.com;"
    ).replace("connect-src 'self'", "connect-src 'self' https://api.stripe.com")
    + "; frame-src https://js.stripe.com https://hooks.stripe.com",
}


class WebConfig(msgspec.Struct, kw_only=True):
    """What a page needs before it can talk to the hub."""

    hub_url: str
    hub_port: int
    dev: bool


@cache
def _page(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def _html(name: str, status: int = 200, headers: dict[str, str] = PAGE_HEADERS) -> Response:
    return HTMLResponse(_page(name), status_code=status, headers=headers)


def _pays_by_stripe(request: Request) -> bool:
    payments = resources(request).settings.payments
    return payments is not None and payments.provider == "stripe"


# the error page carries the error's code; its script picks the words in the reader's language
_ERROR_CODE_SLOT = 'data-error="not_found"'


def error_page(code: str, status: int, headers: dict[str, str] | None = None) -> Response:
    """The page for an error `code` ("room_not_found", "link_not_found", ...)."""
    template = _page("error.html").decode()
    body = template.replace(_ERROR_CODE_SLOT, f'data-error="{html.escape(code)}"', 1)
    return HTMLResponse(body, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


async def _room_missing(request: Request, room_id: int) -> bool:
    try:
        async with resources(request).pool.acquire() as conn:
            return not await room_exists(conn, room_id)
    except DEPENDENCY_ERRORS:
        return False  # the page loads and says itself that it cannot reach the server


def _room_page(name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        raw = request.path_params["room_id"]
        if not raw.isdigit() or len(raw) > 18 or await _room_missing(request, int(raw)):
            return error_page("room_not_found", 404)
        return _html(
            name, headers=STRIPE_PAGE_HEADERS if _pays_by_stripe(request) else PAGE_HEADERS
        )

    endpoint.__name__ = name.removesuffix(".html") + "_page"
    return endpoint


async def distributor_page(request: Request) -> Response:
    return _html("distributor.html")


async def operator_page(request: Request) -> Response:
    return _html("operator.html")


async def vendor_file(request: Request) -> Response:
    """A browser library the pages load; 404 when npm was missing at install time, and the
    page then does without it (the operator page shows tables without charts)."""
    name = request.path_params["name"]
    relative = VENDOR_FILES.get(name)
    path = NODE_MODULES / relative if relative else None
    if path is None or not path.is_file():
        raise NotFound(f"no vendored file {name}")
    return FileResponse(
        path,
        media_type="text/javascript",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


async def web_config(request: Request) -> Response:
    settings = resources(request).settings
    return JSON(WebConfig(hub_url=settings.hub_url, hub_port=settings.hub_port, dev=settings.dev))


def sdk_route(sdk_file: Path = SDK_FILE) -> Route:
    """`GET /vendor/centrifuge.js`: the SDK's browser bundle, or 404 `not_found` when it was not
    installed (no npm at set-up): the pages then say the live connection is unavailable."""

    async def hub_client(request: Request) -> Response:
        if not sdk_file.is_file():
            raise NotFound("the hub client is not installed: run `npm ci` in web/ (make serve)")
        return FileResponse(
            sdk_file,
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    return Route(SDK_PATH, hub_client, methods=["GET"])


# a link code as the share-link route takes it: the QR always points at this deployment's own
# `/l/{code}`, which answers unknown codes with its own error page
_LINK_CODE = re.compile(r"[0-9A-Za-z]{1,64}")
QR_HEADERS = {
    "Cache-Control": "public, max-age=3600",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


def link_qr_svg(url: str) -> bytes:
    """`url` as a QR code in SVG: level M (a phone still reads it when a corner is smudged),
    black on white with the standard four-module quiet zone, four pixels a module."""
    code = segno.make(url, error="m", micro=False, boost_error=False)
    out = io.BytesIO()
    code.save(out, kind="svg", scale=4, border=4, dark="#000", light="#fff", xmldecl=False)
    return out.getvalue()


async def link_qr(request: Request) -> Response:
    code = request.path_params["code"]
    if not _LINK_CODE.fullmatch(code):
        raise NotFound("no such link")
    # the URL the links API reports for this code (attribution's `LinkView.url`)
    url = f"{resources(request).settings.api_base_url}/l/{code}"
    return Response(link_qr_svg(url), media_type="image/svg+xml", headers=QR_HEADERS)


class _Static(StaticFiles):
    """Static modules, revalidated on every load so a new deploy is picked up at once."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def routes() -> list[BaseRoute]:
    return [
        Route("/host/{room_id}", _room_page("host.html"), methods=["GET"]),
        Route("/r/{room_id}", _room_page("room.html"), methods=["GET"]),
        Route("/d", distributor_page, methods=["GET"]),
        Route("/l/{code}/qr.svg", link_qr, methods=["GET"]),
        Route("/ops", operator_page, methods=["GET"]),
        sdk_route(),  # before /vendor/{name}: the exact path wins
        Route("/vendor/{name}", vendor_file, methods=["GET"]),
        api_route(
            "/api/config",
            web_config,
            methods=["GET"],
            summary="where the pages find the hub",
            response=WebConfig,
            tag="web",
        ),
        Mount("/static", app=_Static(directory=STATIC_DIR), name="static"),
    ]
