"""Buy attempts the gate's memory already refuses, answered before the route.

After a sell-out nearly every attempt of a flash sale is refused, and on the loser's path the
framework costs more than the decision. When the request is ordinary - a valid token with the
viewer role, a valid Idempotency-Key, a valid body - and RecentRefusals proves the refusal,
the response the route would send is sent instead, byte for byte: the same error built by the
same functions. Everything else, including replays, goes on to the route untouched.

One decision (`provable_refusal`) serves two places:
- `early_answerer`, at the HTTP protocol layer (core.early_http), before any ASGI cycle
  exists: the API server answers nearly every loser there;
- `BuyRefusals`, an ASGI middleware in front of the router, for the requests that take the
  ASGI path anyway: those the protocol layer leaves to the application (pipelined behind
  another request, a chunked body, HTTP/1.0) and servers without the hook (test transports).

A refusal proven from memory does not count against the buy rate limits: it costs less than
the limiter's own Redis call, and a limit protects what a refusal never reaches.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.auth import bearer_token, verify_token
from core.early_http import Answer, EarlyAnswerer, Headers, first_headers
from core.errors import LivesellError
from core.http import decode_json, error_response
from core.resources import Resources
from storefront.api import BUY_ROUTE, idempotency_key
from storefront.billing import gate_of
from storefront.checkout import refusal_error
from storefront.gate import idempotency_digest
from storefront.verdicts import Refusal
from storefront.views import BuyRequest

# the path BUY_ROUTE matches, with an id path_id() accepts
BUY_PATH = re.compile(r"/api/drops/([0-9]{1,18})/buy")
BUY_TARGET = re.compile(rb"/api/drops/([0-9]{1,18})/buy")
# a buy body is `{"quantity": n}`; anything longer is left to the route
MAX_BODY = 1024


# Authorization headers longer than this are not remembered (livesell's tokens are ≈ 200 bytes)
REMEMBERED_HEADER_MAX = 1024


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


def provable_verdict(
    res: Resources, drop_id: int, headers: Mapping[bytes, bytes], body: bytes
) -> Refusal | None:
    """The gate's refusal of this attempt when its recent memory proves one
    and the request holds nothing else the route would answer first (a bad token or role, a
    missing key, a bad body); else None: the route must answer."""
    try:
        token = _bearer(headers.get(b"authorization", b""))
        key = idempotency_key(headers.get(b"idempotency-key", b"").decode("latin-1"))
    except LivesellError:
        return None
    if not token:
        return None
    try:
        # remembered after the first time (core.auth); a bad token is the route's to refuse
        who = verify_token(res.settings.secret, token)
    except LivesellError:
        return None
    if not who.has_any(("viewer",)):
        return None
    try:
        quantity = _quantity(body)
    except LivesellError:
        return None
    return gate_of(res).recent.refusal(
        drop_id, who.user_id, quantity, idempotency_digest(who.user_id, key)
    )


def provable_refusal(
    res: Resources, drop_id: int, headers: Mapping[bytes, bytes], body: bytes
) -> LivesellError | None:
    """The error the buy route would answer this attempt with, when provable (see above)."""
    known = provable_verdict(res, drop_id, headers, body)
    return None if known is None else refusal_error(drop_id, known)


def refusal_answer(error: LivesellError) -> Answer:
    """The route's response to `error` (core.http.error_response), as status, headers, body."""
    response = error_response(error)
    return Answer(response.status_code, response.raw_headers, bytes(response.body))


# rendered refusals by (drop, reason, detail): a storm repeats a handful of them
RENDERED_MAX = 4_096


def early_answerer(res: Resources) -> EarlyAnswerer:
    """The buy route's provable refusals, answered at the HTTP protocol layer."""
    rendered: dict[tuple[int, Refusal], Answer] = {}

    def answer(match: re.Match[bytes], headers: Headers, body: bytes) -> Answer | None:
        drop_id = int(match.group(1))
        known = provable_verdict(res, drop_id, headers, body)
        if known is None:
            return None
        key = (drop_id, known)
        found = rendered.get(key)
        if found is None:
            if len(rendered) >= RENDERED_MAX:
                rendered.clear()
            found = rendered[key] = refusal_answer(refusal_error(drop_id, known))
        return found

    return EarlyAnswerer(
        method=b"POST", target=BUY_TARGET, route=BUY_ROUTE, answer=answer, max_body=MAX_BODY
    )


class BuyRefusals:
    """ASGI middleware in front of the router: answers provable refusals of the buy route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: object | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope.get("root_path")
            or (match := BUY_PATH.fullmatch(scope["path"])) is None
        ):
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        refusal = await self._refusal(scope, receive, read, int(match.group(1)))
        if refusal is None:
            await self.app(scope, _replaying(read, receive), send)
            return
        route = self._buy_route(scope)
        if route is not None:
            scope["route"] = route  # the metrics middleware labels by it
        await error_response(refusal)(scope, receive, send)

    async def _refusal(
        self, scope: Scope, receive: Receive, read: list[Message], drop_id: int
    ) -> LivesellError | None:
        headers = first_headers(scope["headers"])
        declared = headers.get(b"content-length", b"0")
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
                break
        return provable_refusal(scope["app"].state.resources, drop_id, headers, body)

    def _buy_route(self, scope: Scope) -> object | None:
        if self._route is None:
            for route in scope["app"].router.routes:
                if getattr(route, "path", None) == BUY_ROUTE:
                    self._route = route
        return self._route


def _replaying(read: list[Message], receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A receive() that first hands on the messages already read."""
    pending = list(read)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
