"""Buy attempts the gate's memory already refuses, answered before the router.

After a sell-out nearly every attempt of a flash sale is refused, and on a loser's path the
framework (routing, the request object, the exception handlers) costs more than the decision.
`EarlyRefusals` is a small pure-ASGI layer, the app's outermost middleware, the way Starlette's
`CORSMiddleware` answers a preflight: for a request to the buy route that is ordinary - a valid
token with the viewer role, a valid Idempotency-Key, a small valid body - and whose refusal
`RecentRefusals` proves, it sends the response the route would send, byte for byte (the same
error, rendered by the same function, once per drop and refusal). Everything else, replays
included, goes on to the router with the body it already read.

A refusal proven from memory does not count against the buy rate limits: it costs less than
the limiter's own Redis call, and a limit protects what a refusal never reaches.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.auth import bearer_token
from core.errors import LivesellError
from core.http import decode_json, error_response
from core.metrics import LoopCounter, observe_request
from storefront.buy.flow import refusal_error
from storefront.buy.idempotency import HEADER, idempotency_digest, idempotency_key
from storefront.buy.verdicts import Refusal
from storefront.shop import Shop
from storefront.views import BuyRequest

ROUTE = "/api/drops/{id}/buy"
# the path ROUTE matches, with an id path_id() accepts
PATH = re.compile(r"/api/drops/([0-9]{1,18})/buy")
# a buy body is `{"quantity": n}`; anything longer is left to the route
MAX_BODY = 1024
# Authorization headers longer than this are not remembered (livesell's tokens are ≈ 200 bytes)
REMEMBERED_HEADER_MAX = 1024
# rendered refusals by (drop, refusal): a storm repeats a handful of them
RENDERED_MAX = 4_096

ANSWERED_EARLY = LoopCounter(
    "livesell_http_early_answers_total",
    "requests answered before the router, from what a recent snapshot proves",
    ["route"],
)

_AUTHORIZATION = b"authorization"
_KEY = HEADER.lower().encode()
_LENGTH = b"content-length"


class EarlyRefusals:
    """ASGI middleware in front of the router (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._rendered: dict[tuple[int, Refusal], tuple[int, list[tuple[bytes, bytes]], bytes]]
        self._rendered = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or (match := PATH.fullmatch(scope["path"])) is None
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = _first(scope["headers"])
        read: list[Message] = []
        body = await _small_body(headers, receive, read)
        drop_id = int(match.group(1))
        refusal = None if body is None else provable_refusal(_shop(scope), drop_id, headers, body)
        if refusal is None:
            await self.app(scope, _replaying(read, receive), send)
            return
        ANSWERED_EARLY.inc(ROUTE)
        status, raw_headers, content = self._render(drop_id, refusal)
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": content})
        # outside the metrics middleware: counted here, under the route's template
        observe_request("POST", ROUTE, status, time.perf_counter() - started)

    def _render(
        self, drop_id: int, refusal: Refusal
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        key = (drop_id, refusal)
        found = self._rendered.get(key)
        if found is None:
            response = error_response(refusal_error(drop_id, refusal))
            if len(self._rendered) >= RENDERED_MAX:
                self._rendered.clear()
            found = self._rendered[key] = (
                response.status_code,
                response.raw_headers,
                bytes(response.body),
            )
        return found


def provable_refusal(
    shop: Shop, drop_id: int, headers: dict[bytes, bytes], body: bytes
) -> Refusal | None:
    """The gate's refusal of this attempt when its recent memory proves one and the request
    holds nothing else the route would answer first (a bad token or role, a missing key, a bad
    body); else None: the route must answer."""
    try:
        token = _bearer(headers.get(_AUTHORIZATION, b""))
        key = idempotency_key(headers.get(_KEY, b"").decode("latin-1"))
        if not token:
            return None
        # remembered after the first time (core.auth); a bad token is the route's to refuse
        who = shop.res.tokens.verify(token)
        if not who.has_any(("viewer",)):
            return None
        quantity = _quantity(body)
    except LivesellError:
        return None
    return shop.gate.recent.refusal(
        drop_id, who.user_id, quantity, idempotency_digest(who.user_id, key)
    )


def _shop(scope: Scope) -> Shop:
    shop: Shop = scope["app"].state.shop
    return shop


def _first(raw: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Headers by (lower-case) name, the first one winning, as Starlette's Headers reads them."""
    headers: dict[bytes, bytes] = {}
    for name, value in raw:
        headers.setdefault(name, value)
    return headers


async def _small_body(
    headers: dict[bytes, bytes], receive: Receive, read: list[Message]
) -> bytes | None:
    """The whole body when it is declared and small; None (the route answers) otherwise. What
    was received is kept in `read` for the route."""
    declared = headers.get(_LENGTH, b"0")
    if not declared.isdigit() or int(declared) > MAX_BODY:
        return None
    body = b""
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body", False):
            return body


def _bearer(authorization: bytes) -> str | None:
    """The token of an Authorization header (a storm repeats each buyer's header)."""
    if len(authorization) > REMEMBERED_HEADER_MAX:
        return bearer_token(authorization.decode("latin-1"))
    return _remembered_bearer(authorization)


@functools.lru_cache(maxsize=16_384)
def _remembered_bearer(authorization: bytes) -> str | None:
    return bearer_token(authorization.decode("latin-1"))


@functools.lru_cache(maxsize=256)
def _quantity(body: bytes) -> int:
    """The quantity of a buy body (nearly every one is `{"quantity": 1}`)."""
    return decode_json(body if body.strip() else b"{}", BuyRequest).quantity


def _replaying(read: list[Message], receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A receive() that first hands on the messages already read."""
    pending = list(read)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
