"""The error tree every package extends, and its one mapping to HTTP.

    LivesellError            any refusal a client should see: status, code, message
    ├── BadRequest           400 malformed input (body not JSON, wrong type, missing field)
    ├── Unprocessable        422 well-formed input that cannot be accepted
    ├── Unauthorized         401 no token, bad token, expired token
    ├── Forbidden            403 authenticated but not allowed
    ├── NotFound             404 no such thing (or not visible to this caller)
    ├── Conflict             409 the thing is in a state that refuses this
    ├── TooManyRequests      429 a limit was reached
    └── ServiceUnavailable   503 a dependency is down; retry later

Packages subclass these with data-carrying errors (`SoldOut(drop_id)`); the hub maps the same
tree to protocol error codes in one place of its own.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LivesellError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message()
        self.details = details
        super().__init__(self.message)

    def default_message(self) -> str:
        return self.code.replace("_", " ")


class BadRequest(LivesellError):
    status = 400
    code = "bad_request"


class Unprocessable(LivesellError):
    status = 422
    code = "unprocessable"


class Unauthorized(LivesellError):
    status = 401
    code = "unauthorized"


class Forbidden(LivesellError):
    status = 403
    code = "forbidden"


class NotFound(LivesellError):
    status = 404
    code = "not_found"


class Conflict(LivesellError):
    status = 409
    code = "conflict"


class TooManyRequests(LivesellError):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(LivesellError):
    status = 503
    code = "unavailable"


class PayloadTooLarge(LivesellError):
    status = 413
    code = "payload_too_large"
