"""Errors of the live package: HTTP refusals for room controls, and the hub's protocol errors.

    RoomNotFound        404  no such room
    NotRoomHost         403  only the room's host (or an admin) controls it
    RoomEnded           409  the room has ended; nothing changes any more
    RoomAlreadyLive     409  going live twice
    UnknownProduct      422  pinning a product that does not exist

Hub errors are replies to one command (`{"id": N, "error": {"code", "message"}}`), the codes of
Centrifugo's client protocol; `Disconnect` closes the whole connection with a close code.
`live.protocol.hub_error_for` maps core errors onto them, in one place.
"""

from __future__ import annotations

from typing import ClassVar

from core.errors import (
    Conflict,
)


class RoomAlreadyLive(Conflict):
    code = "room_already_live"

    def __init__(self, room_id: int) -> None:
        super().__init__(f"room {room_id} is already live", room_id=str(room_id))


# --- the hub's protocol errors (Centrifugo client protocol codes) ---


class HubError(Exception):
    """A refusal of one command; the connection carries on."""

    code: ClassVar[int] = 100
    message: ClassVar[str] = "internal server error"
    temporary: ClassVar[bool] = False
    # the client's reply says `detail` instead of `message` (refusals that explain themselves:
    # "muted until ..."); internal details are never shown
    public: ClassVar[bool] = False

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(detail or self.message)


class InternalError(HubError):
    code, message, temporary = 100, "internal server error", True


class HubUnauthorized(HubError):
    code, message = 101, "unauthorized"


class UnknownChannel(HubError):
    code, message = 102, "unknown channel"


class PermissionDenied(HubError):
    code, message = 103, "permission denied"


class MethodNotFound(HubError):
    code, message = 104, "method not found"


class AlreadySubscribed(HubError):
    code, message = 105, "already subscribed"


class LimitExceeded(HubError):
    code, message = 106, "limit exceeded"


class HubBadRequest(HubError):
    code, message = 107, "bad request"


class TokenExpired(HubError):
    code, message = 109, "token expired"


class TooManyRequests(HubError):
    code, message, temporary = 111, "too many requests", True


class UnrecoverablePosition(HubError):
    code, message = 112, "unrecoverable position"


class Disconnect(Exception):
    """Close the connection with a WebSocket close code; SDKs reconnect for 3000–3499."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code} {reason}")

    def fresh(self) -> Disconnect:
        """A new instance to raise (the shared constants below must not carry tracebacks)."""
        return Disconnect(self.code, self.reason)

    @property
    def reconnect(self) -> bool:
        return not (3500 <= self.code < 4000 or 4500 <= self.code < 5000)


SHUTDOWN = Disconnect(3001, "shutdown")
STALE = Disconnect(3502, "stale")  # never said connect
EXPIRED = Disconnect(3005, "expired")  # the token ran out unrefreshed: reconnect with a new one
SLOW = Disconnect(3008, "slow")
INSUFFICIENT_STATE = Disconnect(3010, "insufficient state")
NO_PONG = Disconnect(3012, "no pong")
FLOODING = Disconnect(3013, "too many requests")
INVALID_TOKEN = Disconnect(3500, "invalid token")
BAD_REQUEST = Disconnect(3501, "bad request")
