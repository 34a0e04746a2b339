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


class SelfReferral(Unprocessable):
    """The buy would credit the buyer themself, and the policy is `reject`."""

    code = "self_referral"

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(
            "this order would credit your own link (self-referral is refused)", reasons=reasons
        )


class ReviewNotFound(NotFound):
    code = "review_not_found"

    def __init__(self, order_id: int) -> None:
        super().__init__(f"no review for order {order_id}", order_id=str(order_id))


class ReviewDecided(Conflict):
    code = "review_decided"

    def __init__(self, order_id: int, status: str) -> None:
        super().__init__(f"order {order_id} was already {status}", status=status)


class WithdrawalNotFound(NotFound):
    code = "withdrawal_not_found"

    def __init__(self, withdrawal_id: int) -> None:
        super().__init__(f"no withdrawal {withdrawal_id}", withdrawal_id=str(withdrawal_id))


class WithdrawalDecided(Conflict):
    code = "withdrawal_decided"

    def __init__(self, withdrawal_id: int, status: str) -> None:
        super().__init__(f"withdrawal {withdrawal_id} is {status}", status=status)


class WithdrawalTooSmall(Unprocessable):
    code = "withdrawal_below_minimum"

    def __init__(self, minimum_cents: int) -> None:
        super().__init__(
            f"a withdrawal is at least {minimum_cents} cents", minimum_cents=minimum_cents
        )


class InsufficientBalance(Conflict):
    """More than the confirmed balance not already set aside for other withdrawals, or a
    negative balance (a clawback) still to be made good."""

    code = "insufficient_balance"

    def __init__(self, available_cents: int, balance_cents: int) -> None:
        super().__init__(
            "not enough confirmed balance for this withdrawal",
            available_cents=available_cents,
            balance_cents=balance_cents,
        )


class RuleInvalid(Unprocessable):
    code = "invalid_commission_rule"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class ReferralCodeNotFound(NotFound):
    """No distributor has this referral code."""

    code = "referral_code_not_found"

    def __init__(self, code: str) -> None:
        super().__init__(f"no referral code {code!r}", referral_code=code)


class ReferralCodeTaken(Conflict):
    code = "referral_code_taken"

    def __init__(self, code: str) -> None:
        super().__init__(f"the referral code {code!r} is taken; choose another", referral_code=code)


class ReferralCodeGuessing(TooManyRequests):
    """Too many referral codes looked up from one user or address in a short window."""

    code = "rate_limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"too many referral codes tried; retry in {retry_after_s} s",
            retry_after_s=retry_after_s,
        )


class RoomNotScheduled(Conflict):
    """Only a scheduled room takes reservations."""

    code = "room_not_scheduled"

    def __init__(self, room_id: int, status: str) -> None:
        super().__init__(
            f"room {room_id} is {status}; only a scheduled room can be reserved",
            room_id=str(room_id),
            status=status,
        )
