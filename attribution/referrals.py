"""Referral codes: a distributor's human-readable code (`ANNA88`), typed by a viewer at a buy,
or given when entering or reserving a room.

A code is 4 to 16 letters and digits, case-insensitive (stored upper-case), one per
distributor. An order whose buy names a code credits its distributor ahead of any link binding
(rule `code`, migration 0040); a code given at entry or reservation binds the same way for
later orders, ahead of links. Codes are short enough to guess, so every lookup counts against
per-user and per-address limits (`res.limiter`;
`LIVESELL_REFERRAL_LOOKUPS_PER_USER`, `..._PER_IP`): past them the answer is 429, whether or not
the code exists.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import msgspec

from attribution.errors import ReferralCodeGuessing, ReferralCodeNotFound, ReferralCodeTaken
from attribution.views import ReferralCode
from core.db import Conn
from core.ratelimit import Limit, address_subject
from core.resources import Resources

# lookups are limited per user and per address (settings) in windows of this many seconds
LOOKUP_WINDOW_S = 10
# generated codes: letters without the ones read as digits, then two digits
_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
_NAME_LETTERS = re.compile(r"[A-Z]")


class CodeBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    code: ReferralCode | None = None


class ReferralCodeView(msgspec.Struct, kw_only=True):
    code: str
    distributor_id: str
    created_at: datetime


class ReferralCodeList(msgspec.Struct, kw_only=True):
    codes: list[ReferralCodeView]


@dataclass(frozen=True, slots=True)
class Referral:
    """A code, found: its id and whom it credits."""

    code_id: int
    code: str
    distributor_id: int
    distributor_user_id: str


def _view(row: asyncpg.Record) -> ReferralCodeView:
    return ReferralCodeView(
        code=row["code"], distributor_id=str(row["distributor_id"]), created_at=row["created_at"]
    )


def _generated(user_id: str) -> str:
    """`ANNA88` for anna: up to four letters of the user's id, then random letters to four,
    then two random digits."""
    letters = "".join(_NAME_LETTERS.findall(user_id.upper()))[:4]
    while len(letters) < 4:
        letters += secrets.choice(_LETTERS)
    return f"{letters}{secrets.randbelow(100):02d}"


async def ensure_code(
    conn: Conn, distributor_id: int, user_id: str, wanted: str | None
) -> tuple[ReferralCodeView, bool]:
    """The distributor's code, created when they have none (`wanted`, or generated); and
    whether it was created. One code per distributor: a repeat call returns theirs."""
    row = await conn.fetchrow(
        "SELECT * FROM referral_codes WHERE distributor_id = $1", distributor_id
    )
    if row is not None:
        return _view(row), False
    for attempt in range(20):
        code = wanted.upper() if wanted is not None else _generated(user_id)
        if wanted is None and attempt >= 10:
            code += secrets.choice("23456789")
        try:
            async with conn.transaction():
                row = await conn.fetchrow(
                    """INSERT INTO referral_codes (code, distributor_id) VALUES ($1, $2)
                       RETURNING *""",
                    code,
                    distributor_id,
                )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "referral_codes_distributor_id_key":
                row = await conn.fetchrow(
                    "SELECT * FROM referral_codes WHERE distributor_id = $1", distributor_id
                )
                assert row is not None
                return _view(row), False
            if wanted is not None:
                raise ReferralCodeTaken(wanted.upper()) from None
            continue
        assert row is not None
        return _view(row), True
    raise ReferralCodeTaken(code)


async def my_codes(conn: Conn, distributor_id: int) -> ReferralCodeList:
    rows = await conn.fetch(
        "SELECT * FROM referral_codes WHERE distributor_id = $1 ORDER BY id", distributor_id
    )
    return ReferralCodeList(codes=[_view(r) for r in rows])


async def lookup_referral_code(
    res: Resources, code: str, *, user_id: str, client_addr: str | None
) -> Referral:
    """The distributor a code credits; ReferralCodeNotFound when none, ReferralCodeGuessing
    once the caller has looked up too many codes."""
    settings = res.settings
    refused = await res.limiter.hit(
        (Limit("referral-user", settings.referral_lookups_per_user, LOOKUP_WINDOW_S), user_id),
        (
            Limit("referral-ip", settings.referral_lookups_per_ip, LOOKUP_WINDOW_S),
            address_subject(client_addr),
        ),
    )
    if refused is not None:
        raise ReferralCodeGuessing(refused.retry_after_s)
    async with res.pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT r.id, r.code, r.distributor_id, d.user_id
               FROM referral_codes r JOIN distributors d ON d.id = r.distributor_id
               WHERE r.code = $1""",
            code.upper(),
        )
    if row is None:
        raise ReferralCodeNotFound(code)
    return Referral(row["id"], row["code"], row["distributor_id"], row["user_id"])
