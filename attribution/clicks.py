"""Room entries: link clicks and app entries, gated by Redis, written in group commits.

Per entry the Redis gate (one round trip) enforces two fixed-window rate limits, per client
address and per visitor, and deduplicates: a visitor entering the room again through the same
link they last used there, within `DEDUP_S`, records nothing new. That keeps refreshes and
double taps out of the numbers without changing any binding: the earlier entry of the same link
is still the visitor's latest (and, if it was, earliest) entry into the room.

Entries reach PostgreSQL through `EntryWriter`: concurrent requests share one INSERT and one
commit, and each request still answers only after its entry is committed, so a viewer who buys
right after the redirect is already bound.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Literal

import asyncpg
import msgspec
import redis.asyncio as aioredis

from attribution.errors import ClickRateLimited

RATE_WINDOW_S = 10
CLIENT_LIMIT = 300  # per address per window: generous, many viewers share a carrier NAT
VISITOR_LIMIT = 20  # per visitor per window
DEDUP_S = 30
MAX_BATCH = 500

Outcome = Literal["record", "duplicate"]

# Count one hit in a fixed window.
# KEYS[1] counter key
# ARGV[1] window seconds
# Returns the count in the current window.
RATE_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""

# Rate-limit a visitor and deduplicate their repeated entry through the same link.
# KEYS[1] the visitor's rate counter, KEYS[2] the visitor's last entry target in this room
#   (both under the visitor's hash tag)
# ARGV[1] visitor limit, ARGV[2] window seconds, ARGV[3] entry target (link id, or "-" for a plain
#   entry), ARGV[4] dedup seconds
# Returns 0 when limited, 1 to record the entry, 2 when it repeats the visitor's last entry.
GATE_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then return 0 end
local previous = redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4], 'GET')
if previous == ARGV[3] then return 2 end
return 1
"""


class EntryGate:
    """The Redis side of recording an entry; one per process."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._rate = client.register_script(RATE_SCRIPT)
        self._gate = client.register_script(GATE_SCRIPT)

    async def check(self, *, client_addr: str, visitor: str, room_id: int, target: str) -> Outcome:
        tag = "{entry:" + visitor + "}"
        async with self._client.pipeline(transaction=False) as pipe:
            await self._rate(keys=[f"{{entry-addr:{client_addr}}}:rate"], args=[RATE_WINDOW_S],
                             client=pipe)  # fmt: skip
            await self._gate(
                keys=[f"{tag}:rate", f"{tag}:last:{room_id}"],
                args=[VISITOR_LIMIT, RATE_WINDOW_S, target, DEDUP_S],
                client=pipe,
            )
            per_address, verdict = await pipe.execute()
        if int(per_address) > CLIENT_LIMIT or int(verdict) == 0:
            raise ClickRateLimited(RATE_WINDOW_S)
        return "duplicate" if int(verdict) == 2 else "record"


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    room_id: int
    visitor: str
    source: Literal["click", "enter"]
    user_id: str | None = None
    link_id: int | None = None
    distributor_id: int | None = None


class EntryWriter:
    """Group commit for entries: whoever finds no write in flight writes everything queued."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._queue: list[tuple[Entry, asyncio.Future[datetime]]] = []
        self._lock = asyncio.Lock()

    async def write(self, entry: Entry) -> datetime:
        """Insert `entry`; returns once it is committed, with its recorded time."""
        done: asyncio.Future[datetime] = asyncio.get_running_loop().create_future()
        self._queue.append((entry, done))
        while not done.done():
            async with self._lock:
                if done.done():
                    break
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    at = await self._insert([e for e, _ in batch])
                except BaseException as exc:
                    failure = exc if isinstance(exc, Exception) else RuntimeError("write cancelled")
                    for _, waiting in batch:
                        if waiting is not done and not waiting.done():
                            waiting.set_exception(failure)
                    raise
                for _, waiting in batch:
                    if not waiting.done():
                        waiting.set_result(at)
        return done.result()

    async def _insert(self, entries: list[Entry]) -> datetime:
        async with self._pool.acquire() as conn:
            at = await conn.fetchval(
                """WITH rows AS (
                       INSERT INTO room_entries
                           (room_id, link_id, distributor_id, visitor, user_id, source)
                       SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[],
                                            $4::text[], $5::text[], $6::text[])
                       RETURNING created_at)
                   SELECT min(created_at) FROM rows""",
                [e.room_id for e in entries],
                [e.link_id for e in entries],
                [e.distributor_id for e in entries],
                [e.visitor for e in entries],
                [e.user_id for e in entries],
                [e.source for e in entries],
            )
        return at if at is not None else datetime.now(UTC)
