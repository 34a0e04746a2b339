"""Share-link QR codes, drawn on the server by segno as SVG (`GET /l/{code}/qr.svg`): rendered by
Chromium as the distributor page shows them, and read back by an independent decoder (zxing-cpp).
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from tests.web.conftest import ATTRIBUTION_ROUTES, ROOM_ROUTES, LiveServer
from web.pages import link_qr_svg

pytestmark = pytest.mark.slow


def _scan(page: Any) -> list[str]:
    """What zxing reads in the page as Chromium draws it."""
    picture = Image.open(io.BytesIO(page.screenshot(full_page=True)))
    return [found.text for found in zxingcpp.read_barcodes(picture)]


def test_a_links_qr_code_scans_to_the_url_the_links_api_reports(
    live_server: LiveServer, browser: Any, unique: str
) -> None:
    live_server.need(ROOM_ROUTES, ATTRIBUTION_ROUTES)
    host = live_server.token(f"qrhost-{unique}", "host")
    room = live_server.call("POST", "/api/rooms", host, {"title": f"QR {unique}"})
    distributor = live_server.token(f"qr-{unique}", "viewer", "distributor")
    live_server.call("POST", "/api/distributors", distributor, {})
    link = live_server.call("POST", "/api/links", distributor, {"room_id": str(room["id"])})
    context = browser.new_context(viewport={"width": 400, "height": 400})
    try:
        page = context.new_page()
        page.goto(f"{live_server.base_url}/healthz")  # the page's origin, for the image
        page.set_content(
            f'<body style="margin:0;background:#fff"><img src="/l/{link["code"]}/qr.svg"></body>'
        )
        page.wait_for_function("() => document.querySelector('img').naturalWidth > 0")
        assert _scan(page) == [link["url"]]
    finally:
        context.close()


# byte-mode lengths across QR versions 1–10 at level M (14 … 213 bytes), each just full
@pytest.mark.parametrize("length", [14, 26, 42, 62, 84, 106, 122, 152, 180, 213])
def test_every_size_of_link_scans_back_exactly(browser: Any, length: int) -> None:
    base = "https://live.example.com/l/8kQ2mN7pRt?room=42&"
    text = (base + "x" * length)[:length]
    context = browser.new_context(viewport={"width": 800, "height": 800})
    try:
        page = context.new_page()
        page.set_content(
            '<body style="margin:0;background:#fff">' + link_qr_svg(text).decode() + "</body>"
        )
        assert _scan(page) == [text]
    finally:
        context.close()
