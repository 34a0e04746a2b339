"""Errors a person reads: a page in their language instead of a JSON body.

A browser that opens a broken share link or a room that does not exist gets a small HTML page
saying so (in Chinese or English, as the other pages choose); API clients, which do not ask for
HTML first, keep the JSON error every route answers with.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from core.errors import LivesellError
from core.http import error_response
from web.pages import error_page

# media types a browser asks for when it wants a page
_PAGE_TYPES = ("text/html", "application/xhtml+xml")


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return max(0.0, min(1.0, float(value)))
            except ValueError:
                return 0.0
    return 1.0


def prefers_html(accept: str | None) -> bool:
    """Whether an Accept header ranks an HTML page above JSON. Only an explicit `text/html`
    (or XHTML) counts: `*/*` alone, the default of curl and most HTTP libraries, means JSON,
    and so does a tie."""
    best_page = 0.0
    best_json = 0.0
    for item in (accept or "").split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if not media:
            continue
        q = _quality(params)
        if media in _PAGE_TYPES:
            best_page = max(best_page, q)
        if media in ("application/json", "application/*", "*/*"):
            best_json = max(best_json, q)
    return best_page > 0 and best_page > best_json


def error_reply(request: Request, error: LivesellError) -> Response:
    """`error` as a page when the request prefers HTML (a browser), else the JSON error."""
    answer = error_response(error)
    if not prefers_html(request.headers.get("accept")):
        return answer
    retry_after = answer.headers.get("retry-after")
    return error_page(
        error.code, error.status, {"Retry-After": retry_after} if retry_after else None
    )
