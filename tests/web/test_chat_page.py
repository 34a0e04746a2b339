"""The chat panel in headless Chromium, on a phone (375 px) and a desktop (1280 px), in Chinese
and English: a viewer posts, markup stays text, the host deletes a message from the console and
pins a notice, the viewer sees both, the viewer's likes reach the host's count, and nothing
scrolls sideways."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import DESKTOP, PHONE, ROOM_ROUTES, LiveServer
from tests.web.test_browser import Page, _page, _seed_room, pages  # noqa: F401 - fixture
from tests.web.test_phone import LOCALES, _fits

pytestmark = pytest.mark.slow

CHAT_ROUTES = ("/api/rooms/{id}/chat/{message_id}", "/api/rooms/{id}/chat/pin")
SEND = {"en": "Send", "zh": "发送"}


def _post(page: Page, text: str) -> None:
    page.page.fill(".chat-input", text)
    page.page.click(".chat-send")


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["375px", "1280px"])
def test_chat_posts_as_text_moderates_and_fits(
    live_server: LiveServer, browser: Any, pages: list[Page], unique: str,  # noqa: F811
    lang: str, viewport: dict[str, int],
) -> None:  # fmt: skip
    live_server.need(ROOM_ROUTES, CHAT_ROUTES)
    seeded = _seed_room(live_server, unique)
    room_id, host_token = seeded["room_id"], seeded["host"]
    base, locale = live_server.base_url, LOCALES[lang]
    host = _page(pages, browser, viewport, locale=locale).open(
        f"{base}/host/{room_id}#token={host_token}"
    )
    viewer = _page(pages, browser, viewport, locale=locale).open(
        f"{base}/r/{room_id}#token={live_server.token(f'viewer-{unique}')}"
    )
    for page in (host, viewer):
        page.wait_connected()
    viewer.wait_text(".chat-send", SEND[lang])

    markup = "<script>window.pwned = 1</script><img src=x onerror=window.pwned=2>"
    _post(viewer, markup)
    long_word = "无" * 30 + "x" * 170
    _post(viewer, long_word)
    for page in (host, viewer):
        page.wait_text(".chat-list", "x{170}")
        texts = page.page.eval_on_selector_all(".chat-text", "ns => ns.map(n => n.textContent)")
        assert markup in texts
        assert page.page.evaluate("() => window.pwned") is None
        assert page.page.query_selector(".chat-list script, .chat-list img") is None

    # the host deletes the markup message from the console: the viewer sees it go
    host.page.click(".chat-message:has-text('window.pwned')")
    host.page.click(".chat-delete")
    viewer.page.wait_for_function(
        "() => ![...document.querySelectorAll('.chat-text')]"
        ".some(n => n.textContent.includes('pwned'))",
        timeout=5000,
    )
    host.page.fill(".chat-pin-text", "Free shipping today 今天包邮")
    host.page.click(".chat-pin")
    viewer.wait_text(".chat-pinned", "Free shipping today")

    # three taps, batched into one POST, reach the host through likes.changed on room:{id}
    for _ in range(3):
        viewer.page.click(".chat-like")
    host.page.wait_for_function(
        "() => document.querySelector('.chat-like-count').textContent === '3'", timeout=5000
    )

    size = f"{viewport['width']}px"
    _fits(viewer, f"viewer chat {size} {lang}")
    _fits(host, f"host chat {size} {lang}")
