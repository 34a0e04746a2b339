"""The flash-sale gate's verdicts on one buy attempt, as `gate_acquire.lua` returns them: one
JSON object tagged by "verdict", decoded by `storefront.gate.Gate.acquire` and nowhere else, then
dispatched with `match`."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec


class Granted(msgspec.Struct, tag="ok", tag_field="verdict", frozen=True):
    """Units handed to this attempt; in flight until its order commits (or they go back)."""

    gen: str
    token: str
    units: list[int]


class SoldOut(msgspec.Struct, tag="sold_out", tag_field="verdict", frozen=True):
    reason: ClassVar[str] = "sold_out"
    free: int


class NotActive(msgspec.Struct, tag="not_active", tag_field="verdict", frozen=True):
    reason: ClassVar[str] = "not_active"
    status: Literal["scheduled", "closed", "ended"]


class LimitReached(msgspec.Struct, tag="limit_reached", tag_field="verdict", frozen=True):
    reason: ClassVar[str] = "limit_reached"
    holding: int
    limit: int


class Replay(msgspec.Struct, tag="seen", tag_field="verdict", frozen=True):
    """The buyer's Idempotency-Key was used before, by a request with this fingerprint."""

    fingerprint: str


class Absent(msgspec.Struct, tag="absent", tag_field="verdict", frozen=True):
    """No gate in Redis for the drop: build it from PostgreSQL, then ask again."""


class Missing(msgspec.Struct, tag="missing", tag_field="verdict", frozen=True):
    """No such drop (remembered for MISSING_DROP_TTL_MS)."""


# refusals that stand until stock comes back: the ones a loser of a flash sale gets
Refusal = SoldOut | NotActive | LimitReached
Verdict = Granted | Refusal | Replay | Absent | Missing
