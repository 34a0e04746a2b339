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


# Situations every context meets: one name and one code each, whichever route meets them.


class RoomNotFound(NotFound):
    code = "room_not_found"

    def __init__(self, room_id: int | str) -> None:
        super().__init__(f"no room {room_id}", room_id=str(room_id))


class ProductNotFound(NotFound):
    code = "product_not_found"

    def __init__(self, product_id: int | str) -> None:
        super().__init__(f"no product {product_id}", product_id=str(product_id))


class OrderNotFound(NotFound):
    """No such order, or the caller may not see it."""

    code = "order_not_found"

    def __init__(self, order_id: int | str) -> None:
        super().__init__(f"no order {order_id}", order_id=str(order_id))


class UnknownProduct(Unprocessable):
    """A body names a product that does not exist."""

    code = "unknown_product"

    def __init__(self, product_id: int | str) -> None:
        super().__init__(f"no product {product_id}", field="product_id")


class NotRoomHost(Forbidden):
    code = "not_room_host"

    def __init__(self, room_id: int | str) -> None:
        super().__init__(f"only the host of room {room_id} may do this", room_id=str(room_id))


class RoomEnded(Conflict):
    code = "room_ended"

    def __init__(self, room_id: int | str) -> None:
        super().__init__(f"room {room_id} has ended", room_id=str(room_id))
