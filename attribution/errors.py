"""Attribution's refusals, each carrying the data a client needs; mapped once by core.http."""

from __future__ import annotations

from core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unprocessable,
)


class LinkNotFound(NotFound):
    """Unknown or forged link code. Forged and unknown look the same, on purpose."""

    code = "link_not_found"

    def __init__(self) -> None:
        super().__init__("no such link")


class LinkRoomMismatch(Unprocessable):
    code = "link_room_mismatch"

    def __init__(self, room_id: int) -> None:
        super().__init__("the link leads into another room", room_id=str(room_id))


class NotADistributor(Forbidden):
    code = "not_a_distributor"

    def __init__(self, user_id: str) -> None:
        super().__init__("become a distributor first (POST /api/distributors)", user_id=user_id)


class DistributorNotFound(NotFound):
    code = "distributor_not_found"

    def __init__(self, distributor_id: int | str) -> None:
        super().__init__(f"no distributor {distributor_id}", distributor_id=str(distributor_id))


class PayoutNotFound(NotFound):
    code = "payout_not_found"

    def __init__(self, batch_id: int) -> None:
        super().__init__(f"no payout batch {batch_id}", batch_id=str(batch_id))


class ClickRateLimited(TooManyRequests):
    code = "click_rate_limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("too many link clicks; slow down", retry_after_s=retry_after_s)


class PayoutInProgress(Conflict):
    code = "payout_in_progress"

    def __init__(self) -> None:
        super().__init__("another payout batch is being created; retry shortly")
