"""The flash-sale gate: Redis in front of PostgreSQL, one Lua script per buy attempt.

Every key of drop 7 shares the hash tag `{drop:7}` (one Redis Cluster slot):

    {drop:7}:gate      hash  gen (build id), v (mutation counter), starts_ms, ends_ms, closed,
                             limit, quantity, expire_at_ms; or `missing` = no such drop (briefly)
    {drop:7}:free      set   unit numbers nobody holds
    {drop:7}:buyers    hash  buyer id -> units the gate counts as theirs
    {drop:7}:idem      hash  digest(buyer, Idempotency-Key) -> request fingerprint (hex)
    {drop:7}:inflight  hash  attempt token -> [ms, buyer, digest, fingerprint, units]: units
                             handed out whose PostgreSQL write has not been acknowledged yet
    {drop:7}:lock      string  held while one process builds the gate from PostgreSQL

A unit is always in exactly one of: the free set, an in-flight entry, or a live claim in
PostgreSQL (moving from in-flight to claimed only after the claim committed). Losers never reach
PostgreSQL. The gate is only an optimisation: PostgreSQL's one-live-claim-per-unit index and the
per-buyer CHECK refuse whatever a wrong gate lets through, so losing Redis can cause undersell
(until the gate is rebuilt from PostgreSQL) but never oversell.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import msgspec
import redis.asyncio as aioredis

from core.scripts import Batched
from storefront.errors import DropNotFound, GateBusy
from storefront.refusals import RecentRefusals

log = logging.getLogger("livesell.storefront.gate")

# keys of a gate outlive the drop's end by this long, then Redis forgets them
GATE_TTL_AFTER_END = timedelta(days=1)
MISSING_DROP_TTL_MS = 5_000
BUILD_LOCK_MS = 10_000
BUILD_WAIT_S = 3.0
# redis-py's pool refuses (rather than queues) calls beyond its max_connections; the gate's
# other calls (release, learn, build) wait here instead, leaving connections for everything
# else (acquire and commit are bounded by core.scripts.Batched's round trips in flight)
MAX_CONCURRENT_CALLS = 128

# One buy attempt. Atomically: refuse inactive, over-limit and sold-out attempts, or pop units
# and record them as in flight for this attempt.
# KEYS[1] gate, KEYS[2] free, KEYS[3] buyers, KEYS[4] idem, KEYS[5] inflight
# ARGV[1] buyer id, ARGV[2] quantity, ARGV[3] idempotency digest ("" = none),
# ARGV[4] request fingerprint, ARGV[5] attempt token,
# ARGV[6] mode: "buy" checks the sale window and the per-buyer limit; "late" (a payment that
#   arrived after its hold expired) only takes free units
# Returns one of {"absent"} (build the gate first), {"missing"} (no such drop), {"seen", fp},
# {"not_active", "scheduled"|"closed"|"ended"}, {"limit_reached", holding, limit},
# {"sold_out", free}, {"ok", gen, unit...}.
ACQUIRE_SCRIPT = """
local g = redis.call('HMGET', KEYS[1], 'gen', 'starts_ms', 'ends_ms', 'closed', 'limit',
                     'missing', 'expire_at_ms')
if g[6] then return {'missing'} end
if not g[1] then return {'absent'} end
local q = tonumber(ARGV[2])
if ARGV[3] ~= '' then
    local seen = redis.call('HGET', KEYS[4], ARGV[3])
    if seen then return {'seen', seen} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[6] == 'buy' then
    if g[4] == '1' then return {'not_active', 'closed'} end
    if now < tonumber(g[2]) then return {'not_active', 'scheduled'} end
    if now >= tonumber(g[3]) then return {'not_active', 'ended'} end
    local holding = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
    if holding + q > tonumber(g[5]) then return {'limit_reached', holding, tonumber(g[5])} end
end
local free = redis.call('SCARD', KEYS[2])
if free < q then return {'sold_out', free} end
local units = redis.call('SPOP', KEYS[2], q)
for i = 1, #units do units[i] = tonumber(units[i]) end
redis.call('HINCRBY', KEYS[3], ARGV[1], q)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[4], ARGV[3], ARGV[4]) end
redis.call('HSET', KEYS[5], ARGV[5], cjson.encode({now, ARGV[1], ARGV[3], ARGV[4], units}))
redis.call('HINCRBY', KEYS[1], 'v', 1)
for i = 3, 5 do redis.call('PEXPIREAT', KEYS[i], g[7]) end
return {'ok', g[1], unpack(units)}
"""

# The attempt's PostgreSQL write committed: its units are claimed there now.
# KEYS as ACQUIRE. ARGV[1] token, ARGV[2] gen the units came from, ARGV[3] idempotency digest,
# ARGV[4] fingerprint, ARGV[5...] units.
# When the gate was rebuilt meanwhile, the rebuild may have read PostgreSQL before the commit and
# put our units back in the free set: take them out again and remember the key. (The buyer's
# count is left as the rebuild made it: an undercount only sends an attempt on to PostgreSQL,
# whose CHECK refuses it.) Returns 1, or 0 when there is no gate.
COMMIT_SCRIPT = """
local gen = redis.call('HGET', KEYS[1], 'gen')
if not gen then return 0 end
if gen == ARGV[2] then
    redis.call('HDEL', KEYS[5], ARGV[1])
else
    if #ARGV >= 5 then redis.call('SREM', KEYS[2], unpack(ARGV, 5)) end
    if ARGV[3] ~= '' then redis.call('HSET', KEYS[4], ARGV[3], ARGV[4]) end
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
return 1
"""

# Units go back on sale: an attempt whose write failed, an expired hold, a refund.
# KEYS as ACQUIRE. ARGV[1] token ("" = none), ARGV[2] gen the units came from ("" = released in
# PostgreSQL already, so they are free whatever gate is current), ARGV[3] buyer, ARGV[4] units to
# take off the buyer's count, ARGV[5] idempotency digest to forget ("" = none), ARGV[6...] units.
# A gate rebuilt since the attempt read PostgreSQL after it, so it is left alone.
# Returns 1, or 0 when nothing was changed.
RELEASE_SCRIPT = """
local gen = redis.call('HGET', KEYS[1], 'gen')
if not gen then return 0 end
if ARGV[2] ~= '' and gen ~= ARGV[2] then return 0 end
if ARGV[1] ~= '' then redis.call('HDEL', KEYS[5], ARGV[1]) end
if #ARGV >= 6 then redis.call('SADD', KEYS[2], unpack(ARGV, 6)) end
local left = redis.call('HINCRBY', KEYS[3], ARGV[3], -tonumber(ARGV[4]))
if left <= 0 then redis.call('HDEL', KEYS[3], ARGV[3]) end
if ARGV[5] ~= '' then redis.call('HDEL', KEYS[4], ARGV[5]) end
redis.call('HINCRBY', KEYS[1], 'v', 1)
return 1
"""

# Build the gate from a PostgreSQL snapshot, or reconcile it with one.
# KEYS as ACQUIRE. ARGV[1] mode "fresh" (no gate: build one) or "reconcile" (rebuild in place,
# keeping in-flight attempts younger than ARGV[8]); ARGV[2] expected gen and ARGV[3] expected v
# (reconcile: abort when anything moved since the snapshot was taken); ARGV[4] gen of a fresh
# build; ARGV[5] drop JSON {starts_ms, ends_ms, closed, limit, quantity, expire_at_ms};
# ARGV[6] JSON list of units with a live claim; ARGV[7] JSON {buyer: live units};
# ARGV[8] JSON {digest: fingerprint}; ARGV[9] in-flight entries older than this (ms) are
# abandoned (their writer died).
# Returns {"built", gen}, {"exists"}, {"absent"} or {"changed"}.
BUILD_SCRIPT = """
local gen
local v = 0
if ARGV[1] == 'fresh' then
    local cur = redis.call('HMGET', KEYS[1], 'gen', 'missing')
    if cur[1] and not cur[2] then return {'exists'} end
    gen = ARGV[4]
    -- in-flight entries of a lost gate are void: their units are free unless PostgreSQL says not
    redis.call('DEL', KEYS[5])
else
    local cur = redis.call('HMGET', KEYS[1], 'gen', 'v')
    if not cur[1] then return {'absent'} end
    if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] then return {'changed'} end
    gen = cur[1]
    v = tonumber(cur[2]) + 1
end
local drop = cjson.decode(ARGV[5])
local taken = {}
for _, u in ipairs(cjson.decode(ARGV[6])) do taken[u] = true end
local buyers = cjson.decode(ARGV[7])
local idem = cjson.decode(ARGV[8])
local abandoned = 0
if ARGV[1] == 'reconcile' then
    local entries = redis.call('HGETALL', KEYS[5])
    for i = 1, #entries, 2 do
        local e = cjson.decode(entries[i + 1])
        if e[1] < tonumber(ARGV[9]) then
            redis.call('HDEL', KEYS[5], entries[i])
            abandoned = abandoned + 1
        else
            for _, u in ipairs(e[5]) do taken[u] = true end
            buyers[e[2]] = (buyers[e[2]] or 0) + #e[5]
            if e[3] ~= '' then idem[e[3]] = e[4] end
        end
    end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local batch = {}
for u = 1, drop.quantity do
    if not taken[u] then
        batch[#batch + 1] = u
        if #batch == 1000 then
            redis.call('SADD', KEYS[2], unpack(batch))
            batch = {}
        end
    end
end
if #batch > 0 then redis.call('SADD', KEYS[2], unpack(batch)) end
for buyer, n in pairs(buyers) do
    if n > 0 then redis.call('HSET', KEYS[3], buyer, n) end
end
for digest, fp in pairs(idem) do redis.call('HSET', KEYS[4], digest, fp) end
redis.call('HSET', KEYS[1], 'gen', gen, 'v', v, 'starts_ms', drop.starts_ms,
           'ends_ms', drop.ends_ms, 'closed', drop.closed, 'limit', drop.limit,
           'quantity', drop.quantity, 'expire_at_ms', drop.expire_at_ms)
for i = 1, 5 do redis.call('PEXPIREAT', KEYS[i], drop.expire_at_ms) end
return {'built', gen, abandoned}
"""

# Release the build lock only if we still own it.
# KEYS[1] lock, ARGV[1] owner token. Returns 1 when released.
UNLOCK_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# What the cheap health check of a gate needs, in one round trip.
# KEYS as ACQUIRE. Returns {gen or false, v, free count, in-flight units, oldest in-flight ms}.
PROBE_SCRIPT = """
local g = redis.call('HMGET', KEYS[1], 'gen', 'v')
if not g[1] then return {false, 0, 0, 0, 0} end
local units, oldest = 0, 0
local entries = redis.call('HVALS', KEYS[5])
for _, raw in ipairs(entries) do
    local e = cjson.decode(raw)
    units = units + #e[5]
    if oldest == 0 or e[1] < oldest then oldest = e[1] end
end
return {g[1], tonumber(g[2]), redis.call('SCARD', KEYS[2]), units, oldest}
"""


def gate_keys(drop_id: int) -> list[str]:
    tag = f"{{drop:{drop_id}}}"
    return [f"{tag}:gate", f"{tag}:free", f"{tag}:buyers", f"{tag}:idem", f"{tag}:inflight"]


def lock_key(drop_id: int) -> str:
    return f"{{drop:{drop_id}}}:lock"


def idempotency_digest(buyer_id: str, key: str) -> str:
    return hashlib.sha256(f"{buyer_id}\0{key}".encode()).hexdigest()[:32]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Granted:
    gen: str
    units: list[int]
    token: str


@dataclass(frozen=True)
class Refused:
    """The gate said no: reason is not_active, limit_reached, sold_out, seen, missing, absent."""

    reason: str
    detail: tuple[str, ...] = ()


@dataclass(frozen=True)
class Probe:
    gen: str | None
    version: int
    free: int
    in_flight: int
    oldest_in_flight_ms: int


class Gate:
    """The Redis side of the buy path; one per process, built from the Redis client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._acquire = Batched(client, client.register_script(ACQUIRE_SCRIPT))
        self._commit = Batched(client, client.register_script(COMMIT_SCRIPT))
        self._release = client.register_script(RELEASE_SCRIPT)
        self._build = client.register_script(BUILD_SCRIPT)
        self._unlock = client.register_script(UNLOCK_SCRIPT)
        self._probe = client.register_script(PROBE_SCRIPT)
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        # refusals proven by a recent snapshot are answered without a Redis call
        self.recent = RecentRefusals(client, gate_keys)

    async def acquire(
        self,
        drop_id: int,
        buyer_id: str,
        quantity: int,
        *,
        digest: str = "",
        fingerprint: str = "",
        mode: str = "buy",
    ) -> Granted | Refused:
        if mode == "buy":
            known = self.recent.refusal(drop_id, buyer_id, quantity, digest)
            if known is None and await self.recent.settled(drop_id):
                known = self.recent.refusal(drop_id, buyer_id, quantity, digest)
            if known is not None:
                return Refused(*known)
        token = secrets.token_hex(8)
        keys = gate_keys(drop_id)
        reply = await self._acquire(keys, [buyer_id, quantity, digest, fingerprint, token, mode])
        verdict = _text(reply[0])
        if verdict == "ok":
            return Granted(gen=_text(reply[1]), units=[int(u) for u in reply[2:]], token=token)
        if mode == "buy" and verdict in ("sold_out", "not_active"):
            async with self._slots:
                await self.recent.learn(drop_id)
        return Refused(verdict, tuple(_text(x) for x in reply[1:]))

    async def commit(
        self, drop_id: int, granted: Granted, *, digest: str = "", fingerprint: str = ""
    ) -> None:
        await self._commit(
            gate_keys(drop_id), [granted.token, granted.gen, digest, fingerprint, *granted.units]
        )

    async def release(
        self,
        drop_id: int,
        buyer_id: str,
        units: list[int],
        *,
        count: int | None = None,
        granted: Granted | None = None,
        digest: str = "",
    ) -> bool:
        """Put `units` back on sale and take `count` (default: len(units)) off the buyer."""
        token, gen = (granted.token, granted.gen) if granted is not None else ("", "")
        try:
            async with self._slots:
                done = await self._release(
                    keys=gate_keys(drop_id),
                    args=[
                        token,
                        gen,
                        buyer_id,
                        len(units) if count is None else count,
                        digest,
                        *units,
                    ],
                )
        finally:
            # snapshots read before the units were back must not refuse attempts on them
            self.recent.forget(drop_id)
        return bool(done)

    async def close(self, drop_id: int) -> None:
        """Refuse further attempts at once (the drop row is closed already)."""
        gate = gate_keys(drop_id)[0]
        if await self.redis.exists(gate):
            await self.redis.hset(gate, "closed", "1")
        self.recent.forget(drop_id)

    async def probe(self, drop_id: int) -> Probe:
        gen, version, free, in_flight, oldest = await self._probe(keys=gate_keys(drop_id), args=[])
        return Probe(
            gen=_text(gen) if gen else None,
            version=int(version),
            free=int(free),
            in_flight=int(in_flight),
            oldest_in_flight_ms=int(oldest),
        )

    async def mark_missing(self, drop_id: int) -> None:
        gate = gate_keys(drop_id)[0]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(gate, "missing", "1")
            pipe.pexpire(gate, MISSING_DROP_TTL_MS)
            await pipe.execute()

    async def build(self, pool: asyncpg.Pool, drop_id: int) -> bool:
        """Build a missing gate from PostgreSQL (DropNotFound when the drop does not exist).

        One process builds under a lock; the others wait for it. Returns True when a gate is
        present afterwards."""
        lock = lock_key(drop_id)
        owner = secrets.token_hex(8)
        async with self._slots:
            locked = await self.redis.set(lock, owner, nx=True, px=BUILD_LOCK_MS)
        if locked:
            try:
                snapshot = await read_snapshot(pool, drop_id)
                if snapshot is None:
                    await self.mark_missing(drop_id)
                    raise DropNotFound(drop_id)
                reply = await self._build(
                    keys=gate_keys(drop_id),
                    args=["fresh", "", "", secrets.token_hex(6), *snapshot.args(0)],
                )
                if _text(reply[0]) == "built":
                    self.recent.forget(drop_id)
                    log.info("gate of drop %d built from PostgreSQL", drop_id)
                return True
            finally:
                await self._unlock(keys=[lock], args=[owner])
        deadline = time.monotonic() + BUILD_WAIT_S
        gate = gate_keys(drop_id)[0]
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            async with self._slots:
                if await self.redis.exists(gate):
                    return True
        raise GateBusy(drop_id)

    async def reconcile(self, pool: asyncpg.Pool, drop_id: int, *, stale_after_s: float) -> str:
        """Rebuild the gate in place from PostgreSQL, keeping attempts in flight younger than
        `stale_after_s` and dropping older ones (their process died between gate and write).
        Returns "built", "absent" (no gate: nothing done) or "changed" (the gate moved while
        PostgreSQL was read; try again later)."""
        probe = await self.probe(drop_id)
        if probe.gen is None:
            return "absent"
        snapshot = await read_snapshot(pool, drop_id)
        if snapshot is None:
            return "absent"
        reply = await self._build(
            keys=gate_keys(drop_id),
            args=[
                "reconcile",
                probe.gen,
                str(probe.version),
                "",
                *snapshot.args(int(time.time() * 1000 - stale_after_s * 1000)),
            ],
        )
        verdict = _text(reply[0])
        if verdict == "built":
            self.recent.forget(drop_id)
        if verdict == "built" and int(reply[2]):
            log.warning("drop %d: %d abandoned attempts healed", drop_id, int(reply[2]))
        return verdict


@dataclass
class Snapshot:
    """What PostgreSQL says about a drop's stock, read in one consistent snapshot."""

    starts_at: datetime
    ends_at: datetime
    closed: bool
    per_buyer_limit: int
    quantity: int
    claimed: list[int]
    buyers: dict[str, int]
    fingerprints: dict[str, str]

    def args(self, stale_before_ms: int) -> list[str]:
        drop = {
            "starts_ms": _ms(self.starts_at),
            "ends_ms": _ms(self.ends_at),
            "closed": 1 if self.closed else 0,
            "limit": self.per_buyer_limit,
            "quantity": self.quantity,
            "expire_at_ms": _ms(self.ends_at + GATE_TTL_AFTER_END),
        }
        encode = msgspec.json.encode
        return [
            encode(drop).decode(),
            encode(self.claimed).decode(),
            # an empty dict must still encode as a JSON object for cjson
            encode(self.buyers).decode(),
            encode(self.fingerprints).decode(),
            str(stale_before_ms),
        ]


async def read_snapshot(pool: asyncpg.Pool, drop_id: int) -> Snapshot | None:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        drop = await conn.fetchrow(
            """SELECT starts_at, ends_at, closed_at, per_buyer_limit, quantity
               FROM drops WHERE id = $1""",
            drop_id,
        )
        if drop is None:
            return None
        claimed = await conn.fetch(
            "SELECT unit_no FROM stock_claims WHERE drop_id = $1 AND state <> 'released'",
            drop_id,
        )
        buyers = await conn.fetch(
            "SELECT buyer_id, live_units FROM drop_buyers WHERE drop_id = $1 AND live_units > 0",
            drop_id,
        )
        keys = await conn.fetch(
            "SELECT buyer_id, key, fingerprint FROM idempotency_keys WHERE drop_id = $1", drop_id
        )
    return Snapshot(
        starts_at=drop["starts_at"],
        ends_at=drop["ends_at"],
        closed=drop["closed_at"] is not None,
        per_buyer_limit=drop["per_buyer_limit"],
        quantity=drop["quantity"],
        claimed=[r["unit_no"] for r in claimed],
        buyers={r["buyer_id"]: r["live_units"] for r in buyers},
        fingerprints={
            idempotency_digest(r["buyer_id"], r["key"]): bytes(r["fingerprint"]).hex() for r in keys
        },
    )
