"""Connection tokens: checking them at connect and refresh, and expiring sessions that did not
refresh in time.

A session connected with a token that carries `exp` is told `expires` and `ttl` in the connect
reply; the SDK sends the `refresh` command with a new token before then. A session that has
not refreshed by `exp` plus a short grace is disconnected with 3005 (the SDK reconnects with a
new token). The deadlines of every session on the node sit in one heap, checked on the hub's
one-second heartbeat, instead of a timer per connection.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import time
import weakref
from typing import TYPE_CHECKING, Any

import msgspec

from core.auth import Principal, TokenVerifier
from core.errors import Unauthorized
from live.errors import BAD_REQUEST, EXPIRED, INVALID_TOKEN, TokenExpired

if TYPE_CHECKING:
    from live.session import Session

# seconds a session keeps its channels past its token's `exp`: the SDKs ask for a new token at
# `ttl` exactly, and fetching it and sending `refresh` takes a round trip or two
EXPIRED_CLOSE_DELAY_S = 10.0
# stale heap entries (refreshed or gone sessions) tolerated before the heap is rebuilt
_COMPACT_AFTER = 64


class _Claims(msgspec.Struct):
    exp: int | float | None = None
    name: Any = None


# a display name from the token: printable, at most this many characters (else none)
MAX_NAME = 40


_claims = msgspec.json.Decoder(_Claims)


class Credentials(msgspec.Struct, frozen=True):
    principal: Principal
    exp: int | None  # Unix seconds; None: the token never expires
    ttl: int  # whole seconds left until `exp`: 0 when there is none, or when it has passed
    name: str = ""  # the token's `name` claim (the chat shows it), "" when absent or unfit


def connect_credentials(tokens: TokenVerifier, token: str) -> Credentials:
    """The connect token's holder: an expired token is error 109 (the SDK fetches a new one and
    connects again), any other defect closes 3500."""
    try:
        principal = tokens.verify(token)
    except Unauthorized as exc:
        if exc.details.get("reason") == "expired":
            raise TokenExpired() from None
        raise INVALID_TOKEN.fresh() from None
    credentials = _with_expiry(principal, token)
    if credentials.exp is not None and credentials.ttl <= 0:
        raise TokenExpired()  # inside the verification's clock-skew leeway, yet past `exp`
    return credentials


def refresh_credentials(tokens: TokenVerifier, token: str, user_id: str) -> Credentials:
    """A refreshed token for a connection of `user_id`, as Centrifugo takes it: an expired token
    closes 3005 (the SDK reconnects and fetches another); an invalid one, or another user's,
    closes 3500; none at all is a bad request."""
    if not token:
        raise BAD_REQUEST.fresh()
    try:
        principal = tokens.verify(token)
    except Unauthorized as exc:
        if exc.details.get("reason") == "expired":
            raise EXPIRED.fresh() from None
        raise INVALID_TOKEN.fresh() from None
    if not user_id or principal.user_id != user_id:
        raise INVALID_TOKEN.fresh()
    credentials = _with_expiry(principal, token)
    if credentials.exp is not None and credentials.ttl <= 0:
        raise EXPIRED.fresh()
    return credentials


def _with_expiry(principal: Principal, token: str) -> Credentials:
    claims = _token_claims(token)
    exp = None if claims.exp is None else int(claims.exp)
    raw_name = claims.name
    name = ""
    if isinstance(raw_name, str) and raw_name.strip() and raw_name.isprintable():
        name = raw_name.strip()[:MAX_NAME]
    if exp is None:
        return Credentials(principal, None, 0, name)
    # rounded down, so an SDK refreshing at `ttl` is never late; under a second left is 1
    left = exp - time.time()
    return Credentials(principal, exp, 0 if left <= 0 else max(1, int(left)), name)


def _token_claims(token: str) -> _Claims:
    """The claims the hub reads of a token that has already passed verification."""
    try:
        payload = token.split(".")[1]
        return _claims.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, msgspec.DecodeError):
        return _Claims()


def token_exp(token: str) -> int | None:
    """The `exp` (Unix seconds) of a token that has already passed verification, or None."""
    exp = _token_claims(token).exp
    return None if exp is None else int(exp)


# (deadline, tie-breaker, session): the session is weakly held, so a closed one is not kept
# alive until its deadline; an entry is current while `session.expiry` is that very entry
_Entry = tuple[float, int, "weakref.ref[Session]"]


class Expiries:
    """The node's sessions by the deadline their token gives them (its `exp` plus
    `close_delay_s`); `due` hands out those past it."""

    def __init__(self, close_delay_s: float = EXPIRED_CLOSE_DELAY_S) -> None:
        self.close_delay_s = close_delay_s
        self._heap: list[_Entry] = []
        self._stale = 0
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap) - self._stale

    @property
    def held(self) -> int:
        """Heap entries, stale ones included: what the heap costs in memory."""
        return len(self._heap)

    def track(self, session: Session, exp: int | None) -> None:
        """`session` holds a token that runs out at `exp` (None: never), replacing any before."""
        self.set(session, None if exp is None else exp + self.close_delay_s)

    def set(self, session: Session, deadline: float | None) -> None:
        """`session` must refresh before `deadline` (wall-clock seconds); None: never expires."""
        if session.expiry is not None:
            session.expiry = None
            self._stale += 1
        if deadline is not None:
            entry: _Entry = (deadline, next(self._order), weakref.ref(session))
            session.expiry = entry
            heapq.heappush(self._heap, entry)
        if self._stale > _COMPACT_AFTER and self._stale * 2 > len(self._heap):
            self._heap = [e for e in self._heap if _current(e)]
            heapq.heapify(self._heap)
            self._stale = 0

    def discard(self, session: Session) -> None:
        self.set(session, None)

    def due(self, now: float) -> list[Session]:
        """The sessions whose deadline has passed by `now`, no longer tracked."""
        expired = []
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            session = entry[2]()
            if session is None or session.expiry is not entry:
                self._stale = max(0, self._stale - 1)
                continue
            session.expiry = None
            expired.append(session)
        return expired


def _current(entry: _Entry) -> bool:
    session = entry[2]()
    return session is not None and session.expiry is entry
