"""Room entries: link clicks and app entries, gated by Redis, recorded in batches.

Per entry the Redis gate (one script under the room's hash tag) enforces two fixed-window rate
limits in that room, per client address and per visitor, and deduplicates: a visitor entering
the room again through the same link they last used there, within `DEDUP_S`, records nothing
new. That keeps refreshes and double taps out of the numbers without changing any binding: the
earlier entry of the same link is still the visitor's latest (and, if it was, earliest) entry.

Entries go through `EntryRecorder` in batches: concurrent requests share one Redis pipeline,
one INSERT and commit, and one publish pipeline, and each request still answers only after its
entry is committed, so a viewer who buys right after the redirect is already bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import asyncpg
import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from attribution.errors import ClickRateLimited
from core.events import Event, Publisher, room_channel

log = logging.getLogger("livesell.attribution")

RATE_WINDOW_S = 10
CLIENT_LIMIT = 300  # per address per window: generous, many viewers share a carrier NAT
VISITOR_LIMIT = 20  # per visitor per window
DEDUP_S = 30
MAX_BATCH = 500

Outcome = Literal["record", "duplicate", "limited"]

# Rate-limit an entry into a room per client address and per visitor, and deduplicate the
# visitor's repeated entry through the same link. All keys live under the room's hash tag.
# KEYS[1] the address's counter, KEYS[2] the visitor's counter, KEYS[3] the visitor's last entry
#   target in the room
# ARGV[1] address limit, ARGV[2] visitor limit, ARGV[3] window seconds, ARGV[4] entry target
#   (link id, or "-" for a plain entry), ARGV[5] dedup seconds
# Returns 0 when limited, 1 to record the entry, 2 when it repeats the visitor's last entry.
GATE_SCRIPT = """
local function hit(key)
    local n = redis.call('INCR', key)
    if n == 1 then redis.call('EXPIRE', key, ARGV[3]) end
    return n
end
if hit(KEYS[1]) > tonumber(ARGV[1]) or hit(KEYS[2]) > tonumber(ARGV[2]) then return 0 end
local previous = redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5], 'GET')
if previous == ARGV[4] then return 2 end
return 1
"""


_VERDICTS: dict[int, Outcome] = {0: "limited", 1: "record", 2: "duplicate"}


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    room_id: int
    visitor: str
    source: Literal["click", "enter"]
    client_addr: str
    user_id: str | None = None
    link_id: int | None = None
    distributor_id: int | None = None
    # published to the distributor's dashboard once the entry is committed
    announce: tuple[str, Event] | None = None

    @property
    def target(self) -> str:
        return "-" if self.link_id is None else str(self.link_id)


class EntryRecorder:
    """Gate, record and announce entries in batches; one per process.

    Whoever finds no batch in flight takes everything queued: one Redis pipeline gates the whole
    batch, one INSERT records the admitted entries, one pipeline publishes their events. Each
    caller still gets its own verdict, and only after its entry is committed.
    """

    def __init__(self, pool: asyncpg.Pool, client: aioredis.Redis, publisher: Publisher) -> None:
        self._pool = pool
        self._client = client
        self._publisher = publisher
        self._queue: list[tuple[Entry, asyncio.Future[Outcome]]] = []
        self._lock = asyncio.Lock()
        self._gate_sha = client.register_script(GATE_SCRIPT).sha

    async def record(self, entry: Entry) -> Outcome:
        """ "record" or "duplicate"; raises ClickRateLimited when the entry was refused."""
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
        admitted = [e for e, v in zip(batch, verdicts, strict=True) if v == "record"]
        if admitted:
            await self._insert(admitted)
            events = [e.announce for e in admitted if e.announce is not None]
            try:
                await self._publisher.publish_many(events)
            except (redis.exceptions.RedisError, OSError) as exc:
                # committed already: a lost notification must not turn the click into an error
                log.warning("click events not published: %s", exc)
        return verdicts

    async def _gate(self, batch: list[Entry]) -> list[Outcome]:
        for attempt in (1, 2):
            async with self._client.pipeline(transaction=False) as pipe:
                for e in batch:
                    tag = "{" + room_channel(e.room_id) + "}:entry"
                    pipe.evalsha(
                        self._gate_sha, 3,
                        f"{tag}-addr:{e.client_addr}", f"{tag}:{e.visitor}:n",
                        f"{tag}:{e.visitor}:last",
                        CLIENT_LIMIT, VISITOR_LIMIT, RATE_WINDOW_S, e.target, DEDUP_S,
                    )  # fmt: skip
                try:
                    replies = await pipe.execute()
                    break
                except redis.exceptions.NoScriptError:
                    if attempt == 2:
                        raise
                    await self._client.script_load(GATE_SCRIPT)
        return [_VERDICTS[int(reply)] for reply in replies]

    async def _insert(self, entries: list[Entry]) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                """WITH added AS (
                       INSERT INTO room_entries
                           (room_id, link_id, distributor_id, visitor, user_id, source)
                       SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[],
                                            $4::text[], $5::text[], $6::text[])
                       RETURNING distributor_id)
                   INSERT INTO attribution_dirty (kind, target)
                   SELECT DISTINCT 'dashboard', distributor_id FROM added
                   WHERE distributor_id IS NOT NULL""",
                [e.room_id for e in entries],
                [e.link_id for e in entries],
                [e.distributor_id for e in entries],
                [e.visitor for e in entries],
                [e.user_id for e in entries],
                [e.source for e in entries],
            )
