"""Devices and the self-referral rule at the door of a buy.

A request names its device with the `X-Device-Id` header or, from a browser, the `lsd` cookie;
a malformed value counts as none. Every signed-in request that names one records that the user
was seen on it (`device_sightings`): a buyer and a distributor seen on one device are the same
person for commission (migration 0021's `attribution_self_matches`).

Under `LIVESELL_SELF_REFERRAL=reject`, `screen_buyer` refuses a buy whose order would credit
the buyer themself (same account, a shared device, a shared payment instrument) with 422
`self_referral`. Under `flag` (the default) the order is placed, credited 0, and every reason
is recorded with it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from starlette.requests import Request

from attribution.errors import SelfReferral
from core.db import Conn
from core.resources import Resources

DEVICE_HEADER = "x-device-id"
DEVICE_COOKIE = "lsd"
_DEVICE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def device_id(request: Request) -> str | None:
    """The request's device id, or None when it names none (or a malformed one)."""
    value = request.headers.get(DEVICE_HEADER) or request.cookies.get(DEVICE_COOKIE)
    if value is None:
        return None
    value = value.strip()
    return value if _DEVICE.match(value) else None


async def saw_device(conn: Conn, user_id: str, device: str | None) -> None:
    """Record that `user_id` was seen on `device` (nothing when no device is named)."""
    if device is None:
        return
    await conn.execute(
        "INSERT INTO device_sightings (user_id, device_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        user_id,
        device,
    )


# The reasons the buyer's order in the drop's room, were it placed now, would credit the buyer
# themself. $1 buyer, $2 drop, $3 window start, $4 now, $5 rule
_SCREEN = """
SELECT array_agg(m.reason ORDER BY m.reason)
FROM drops dr
CROSS JOIN LATERAL attribution_binding($1, dr.room_id, $3, $4, $5) b
CROSS JOIN LATERAL attribution_self_matches($1, b.distributor_user_id) m
WHERE dr.id = $2 AND b.entry_id IS NOT NULL
"""


# The reasons the distributor of a referral code given with the buy is the buyer. $1 buyer,
# $2 the code's distributor's user
_SCREEN_CODE = "SELECT array_agg(reason ORDER BY reason) FROM attribution_self_matches($1, $2)"


async def screen_buyer(
    res: Resources,
    *,
    buyer_id: str,
    drop_id: int,
    device: str | None,
    referrer_user_id: str | None = None,
) -> None:
    """Before a buy: record the buyer's device; under the `reject` policy refuse (422
    `self_referral`) a buy that would credit the buyer themself (through the distributor of
    the referral code given with it, `referrer_user_id`, else the binding). No round trip at
    all under `flag` when the request names no device."""
    settings = res.settings
    if settings.self_referral != "reject":
        if device is not None:
            async with res.pool.acquire() as conn:
                await saw_device(conn, buyer_id, device)
        return
    now = datetime.now(UTC)
    since = now - timedelta(seconds=settings.attribution_window_s)
    async with res.pool.acquire() as conn:
        # the sighting first, in its own statement, so the match below sees it
        await saw_device(conn, buyer_id, device)
        if referrer_user_id is not None:
            reasons = await conn.fetchval(_SCREEN_CODE, buyer_id, referrer_user_id)
        else:
            reasons = await conn.fetchval(
                _SCREEN, buyer_id, drop_id, since, now, settings.attribution
            )
    if reasons:
        raise SelfReferral(list(reasons))
