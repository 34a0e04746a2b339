"""Buy attempts the gate's memory already refuses, answered before Starlette's routing.

After a sell-out nearly every attempt of a flash sale is refused, and on the loser's path the
framework costs more than the decision (routing over every route, request objects, raising
and mapping the error). When the request is ordinary - a valid token with the viewer role, a
valid Idempotency-Key, a valid body - and RecentRefusals
proves the refusal, this middleware sends the response the route would send, byte for byte:
the same error built by the same functions. Everything else, including replays, goes on to
the route untouched, with the body it read handed on.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.auth import bearer_token, verify_token
from core.errors import LivesellError
from core.http import decode_json, error_response
from core.resources import Resources
from storefront.api import BUY_ROUTE, idempotency_key
from storefront.billing import gate_of
from storefront.checkout import refusal_error
from storefront.gate import Refused, idempotency_digest
from storefront.views import BuyRequest

# the path BUY_ROUTE matches, with an id path_id() accepts
BUY_PATH = re.compile(r"/api/drops/([0-9]{1,18})/buy")
# a buy body is `{"quantity": n}`; anything longer is left to the route
MAX_BODY = 1024


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
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first one wins, as in Starlette's Headers
        try:
            token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
            key = idempotency_key(headers.get(b"idempotency-key", b"").decode("latin-1"))
        except LivesellError:
            return None
        if not token:
            return None
        res: Resources = scope["app"].state.resources
        try:
            # remembered after the first time (core.auth); a bad token is the route's to refuse
            who = verify_token(res.settings.secret, token)
        except LivesellError:
            return None
        if not who.has_any(("viewer",)):
            return None
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
        try:
            request = decode_json(body if body.strip() else b"{}", BuyRequest)
        except LivesellError:
            return None
        known = gate_of(res).recent.refusal(
            drop_id, who.user_id, request.quantity, idempotency_digest(who.user_id, key)
        )
        return None if known is None else refusal_error(drop_id, Refused(*known))

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
