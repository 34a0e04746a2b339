"""Room entries: link clicks and app entries, gated by Redis, recorded in batches.

Per entry the Redis gate (one script under the room's hash tag) enforces two fixed-window rate
limits in that room, per client address and per visitor, and deduplicates: a visitor entering
the room again through the same link they last used there, within `DEDUP_S`, records nothing
new. That keeps refreshes and double taps out of the numbers without changing any binding: the
earlier entry of the same link is still the visitor's latest (and, if it was, earliest) entry.

One person, one visit: a browser that follows a link anonymously gets a signed visitor cookie, and
the room page then enters as the signed-in user, sending that cookie along. When the browser's
latest entry into the room is that anonymous click through the same link, within `DEDUP_S`, the
click is handed over to the user (it becomes theirs: `user_id` set, `visitor` `u:<user id>`)
instead of recording a second click by a second visitor; it binds the user exactly as their own
click would have.

Entries go through `EntryRecorder` in batches: concurrent requests share one Redis pipeline,
one INSERT and commit, and one publish pipeline, and each request still answers only after its
entry is committed, so a viewer who buys right after the redirect is already bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Literal

import asyncpg
import msgspec

from attribution.errors import ClickRateLimited
from attribution.events import ClickRecorded
from core.db import Conn
from core.events import Event, Publisher, dashboard_channel
from core.redis_client import REDIS_ERRORS, RedisClient
from core.scripts import register, run_many

log = logging.getLogger("livesell.attribution")

RATE_WINDOW_S = 10
CLIENT_LIMIT = 300  # per address per window: generous, many viewers share a carrier NAT
VISITOR_LIMIT = 20  # per visitor per window
DEDUP_S = 30
MAX_BATCH = 500

# "continued": admitted, and taken over the browser's anonymous click instead of adding an entry
Outcome = Literal["record", "duplicate", "limited", "continued"]

_VERDICTS: dict[int, Outcome] = {0: "limited", 1: "record", 2: "duplicate"}


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    room_id: int
    visitor: str
    source: Literal["click", "enter", "reserve"]
    client_addr: str
    user_id: str | None = None
    link_id: int | None = None
    distributor_id: int | None = None
    # for the distributor's click.recorded once the entry is committed
    link_code: str | None = None
    product_id: int | None = None
    distributor_user_id: str | None = None
    # the anonymous visitor (`v:…`) of the browser a signed-in entry comes from: its click
    # through the same link moments ago becomes this entry rather than a second one
    claim_visitor: str | None = None
    # the device the entry came from (review signals; a signed-in user is seen on it)
    device_id: str | None = None
    # a referral code the entry came through (instead of a link; distributor_id is its owner)
    code_id: int | None = None

    @property
    def target(self) -> str:
        if self.code_id is not None:
            return f"c{self.code_id}"
        return "-" if self.link_id is None else str(self.link_id)


def _click_events(entries: list[Entry]) -> list[tuple[str, Event]]:
    """One click.recorded per link among `entries`, counting its clicks."""
    per_link: dict[str, tuple[Entry, int]] = {}
    for e in entries:
        if e.link_code is not None and e.distributor_user_id is not None:
            first, count = per_link.get(e.link_code, (e, 0))
            per_link[e.link_code] = (first, count + 1)
    now = datetime.now(UTC)
    return [
        (
            dashboard_channel(str(e.distributor_user_id)),
            ClickRecorded(
                link_code=code,
                room_id=str(e.room_id),
                product_id=None if e.product_id is None else str(e.product_id),
                at=now,
                count=count,
            ),
        )
        for code, (e, count) in per_link.items()
    ]


class EntryRecorder:
    """Gate, record and announce entries in batches; one per process.

    Whoever finds no batch in flight takes everything queued: one Redis pipeline gates the whole
    batch, one INSERT records the admitted entries, one pipeline publishes their events. Each
    caller still gets its own verdict, and only after its entry is committed.
    """

    def __init__(self, pool: asyncpg.Pool, client: RedisClient, publisher: Publisher) -> None:
        self._pool = pool
        self._client = client
        self._publisher = publisher
        self._queue: list[tuple[Entry, asyncio.Future[Outcome]]] = []
        self._lock = asyncio.Lock()
        self._gate_script = register(client, "attribution", "entry_gate")
        self._address_script = register(client, "attribution", "entry_address")

    async def record(self, entry: Entry) -> Outcome:
        """ "record", "duplicate" or "continued"; raises ClickRateLimited when the entry was
        refused."""
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append((entry, done))
        while not done.done():
            async with self._lock:
                if done.done():
                    break
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    verdicts = await self._process([e for e, _ in batch])
                except BaseException as exc:
                    failure = exc if isinstance(exc, Exception) else RuntimeError("cancelled")
                    for _, waiting in batch:
                        if waiting is not done and not waiting.done():
                            waiting.set_exception(failure)
                    raise
                for (_, waiting), verdict in zip(batch, verdicts, strict=True):
                    if not waiting.done():
                        waiting.set_result(verdict)
        outcome = done.result()
        if outcome == "limited":
            raise ClickRateLimited(RATE_WINDOW_S)
        return outcome

    async def _process(self, batch: list[Entry]) -> list[Outcome]:
        verdicts = await self._gate(batch)
        admitted = [i for i, v in enumerate(verdicts) if v == "record"]
        if admitted:
            claims = [(i, batch[i]) for i in admitted if batch[i].claim_visitor is not None]
            async with self._pool.acquire() as conn:
                # one transaction only when a hand-over is tried: plain clicks stay one statement
                async with conn.transaction() if claims else contextlib.nullcontext():
                    continued = await _continue_clicks(conn, claims) if claims else set()
                    added = [batch[i] for i in admitted if i not in continued]
                    if added:
                        await _insert(conn, added)
            for i in continued:
                verdicts[i] = "continued"
            if added:
                try:
                    await self._publisher.publish_many(_click_events(added))
                except REDIS_ERRORS as exc:
                    # committed already: a lost notification must not turn the click into an error
                    log.warning("click events not published: %s", exc)
        return verdicts

    async def _gate(self, batch: list[Entry]) -> list[Outcome]:
        """Each entry's verdict: the address's limit, then the visitor's limit and repeat, each
        key under a hash tag of its own address or visitor (entry_keys), in two round trips."""
        addresses = await run_many(
            self._client,
            self._address_script,
            [([entry_keys(e)[0]], [RATE_WINDOW_S, CLIENT_LIMIT]) for e in batch],
        )
        passed = [e for e, ok in zip(batch, addresses, strict=True) if int(ok)]
        calls = [
            (entry_keys(e)[1:], [e.target, RATE_WINDOW_S, VISITOR_LIMIT, DEDUP_S]) for e in passed
        ]
        replies = iter(await run_many(self._client, self._gate_script, calls) if calls else [])
        return [_VERDICTS[int(next(replies))] if int(ok) else "limited" for ok in addresses]


def entry_keys(entry: Entry) -> tuple[str, str, str]:
    """(address counter, visitor counter, visitor's last target) of an entry into a room."""
    address = "{entry:" + f"{entry.room_id}:a:{entry.client_addr}" + "}"
    visitor = "{entry:" + f"{entry.room_id}:{entry.visitor}" + "}"
    return address, visitor + ":n", visitor + ":last"


# Hand the browsers' latest anonymous clicks over to the signed-in users entering through the
# same link. Per wanted hand-over ($1 its number, $2 room, $3 the browser's visitor, $4 link,
# $5 user): the visitor's latest unclaimed entry into the room within $6 seconds, when it went
# through that link and the user has no later entry through another link (so "last click" and
# "first click" binding decide exactly as if the user had clicked themselves). A claimed click
# becomes the user's as a whole (visitor `u:<user id>`, as the table's check demands), and marks
# its distributor's dashboard, whose visitor count may have shrunk.
_CONTINUE_CLICKS = """
WITH wanted AS (
    SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[], $4::bigint[], $5::text[])
        AS w(n, room_id, visitor, link_id, user_id)
), latest AS (
    SELECT w.n, w.room_id, w.link_id AS wanted_link, w.user_id, e.id, e.link_id, e.created_at
    FROM wanted w
    CROSS JOIN LATERAL (
        SELECT id, link_id, created_at FROM room_entries
        WHERE room_id = w.room_id AND visitor = w.visitor AND user_id IS NULL
          AND created_at > now() - make_interval(secs => $6)
        ORDER BY created_at DESC, id DESC
        LIMIT 1
    ) e
), taken AS (
    UPDATE room_entries r SET user_id = l.user_id, visitor = 'u:' || l.user_id
    FROM latest l
    WHERE r.id = l.id AND r.user_id IS NULL AND l.link_id = l.wanted_link
      AND NOT EXISTS (
          SELECT 1 FROM room_entries o
          WHERE o.user_id = l.user_id AND o.room_id = l.room_id AND o.link_id IS NOT NULL
            AND o.link_id <> l.wanted_link AND o.created_at > l.created_at)
    RETURNING l.n, r.distributor_id
), marked AS (
    INSERT INTO attribution_dirty (kind, target)
    SELECT DISTINCT 'dashboard', distributor_id FROM taken
)
SELECT n FROM taken
"""


async def _continue_clicks(conn: Conn, entries: list[tuple[int, Entry]]) -> set[int]:
    """Of the numbered `entries`, those that took over their browser's anonymous click."""
    wanted = [
        (n, e)
        for n, e in entries
        if e.claim_visitor is not None and e.user_id is not None and e.link_id is not None
    ]
    if not wanted:
        return set()
    rows = await conn.fetch(
        _CONTINUE_CLICKS,
        [n for n, _ in wanted],
        [e.room_id for _, e in wanted],
        [e.claim_visitor for _, e in wanted],
        [e.link_id for _, e in wanted],
        [e.user_id for _, e in wanted],
        float(DEDUP_S),
    )
    return {int(row["n"]) for row in rows}


async def _insert(conn: Conn, entries: list[Entry]) -> None:
    await conn.execute(
        """WITH added AS (
               INSERT INTO room_entries
                   (room_id, link_id, distributor_id, visitor, user_id, source, device_id,
                    client_addr, code_id)
               SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[],
                                    $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                                    $9::bigint[])
               RETURNING distributor_id, user_id, device_id
           ), seen AS (
               INSERT INTO device_sightings (user_id, device_id)
               SELECT DISTINCT user_id, device_id FROM added
               WHERE user_id IS NOT NULL AND device_id IS NOT NULL
               ON CONFLICT DO NOTHING)
           INSERT INTO attribution_dirty (kind, target)
           SELECT DISTINCT 'dashboard', distributor_id FROM added
           WHERE distributor_id IS NOT NULL""",
        [e.room_id for e in entries],
        [e.link_id for e in entries],
        [e.distributor_id for e in entries],
        [e.visitor for e in entries],
        [e.user_id for e in entries],
        [e.source for e in entries],
        [e.device_id for e in entries],
        [e.client_addr[:64] for e in entries],
        [e.code_id for e in entries],
    )
