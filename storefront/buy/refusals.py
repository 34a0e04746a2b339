"""The gate's recent refusals, remembered for a moment so that a storm of losers stays local.

Once a drop is sold out, closed or over, every further attempt in a flash sale gets the same
answer, and each costs a Redis round trip. So when the gate refuses an attempt as `sold_out` or
`not_active`, this process reads a snapshot of the drop's gate (one script call) and, for the
next MEMORY_S seconds, refuses the attempts it can prove refused from that snapshot without
asking Redis, checking in the gate script's order: a known Idempotency-Key (a replay) always
goes to the gate; then closed, not started, ended, the buyer's limit, and free units.

It never grants anything, so it cannot oversell. What it can do is refuse an attempt the gate
would have taken: stock returned by another process (an expired hold, a refund) becomes
buyable here at most MEMORY_S after the snapshot was asked for; stock returned in this process
(Gate.release) forgets the snapshot at once. Drop ids are never reused, so a snapshot cannot
describe another drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import redis.exceptions

from core.metrics import LoopCounter
from core.redis_client import RedisClient
from core.scripts import register
from storefront.buy.verdicts import LimitReached, NotActive, Refusal, SoldOut

log = logging.getLogger("livesell.storefront.refusals")

# how long a snapshot is trusted to refuse, from the moment it was asked for
MEMORY_S = 0.2
# snapshots of drops with more buyers + idempotency keys than this are not taken (the gate
# answers every attempt): each API process re-reads a snapshot every MEMORY_S / 2 during a
# storm, and a big one would cost Redis more than the round trips it saves
MAX_ENTRIES = 5_000
# drops remembered at once (expired snapshots are dropped first)
MAX_DROPS = 1_000
# an attempt waits at most this long for a snapshot being read, then asks the gate itself
SNAPSHOT_WAIT_S = 0.5

REFUSED_LOCALLY = LoopCounter(
    "livesell_gate_refused_locally_total",
    "buy attempts refused from a recent gate snapshot, without a Redis call",
    ["reason"],
)


class GateState(msgspec.Struct, frozen=True):
    """A drop's gate as gate_snapshot.lua read it."""

    starts_ms: int
    ends_ms: int
    closed: bool
    limit: int
    free: int
    holdings: dict[str, int]
    seen: dict[str, int]


_gate_state = msgspec.json.Decoder(GateState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A drop's gate as one script call saw it, and until when it is trusted."""

    trusted_until: float  # time.monotonic()
    state: GateState

    def refusal(self, buyer_id: str, quantity: int, digest: str, now_ms: float) -> Refusal | None:
        """The gate's answer when this snapshot proves a refusal, in gate_acquire.lua's order
        of checks, else None."""
        state = self.state
        if digest and digest in state.seen:
            return None  # a replay: the gate answers with the stored response
        if state.closed:
            return NotActive("closed")
        if now_ms < state.starts_ms:
            return NotActive("scheduled")
        if now_ms >= state.ends_ms:
            return NotActive("ended")
        holding = state.holdings.get(buyer_id, 0)
        if holding + quantity > state.limit:
            return LimitReached(holding, state.limit)
        if state.free < quantity:
            return SoldOut(state.free)
        return None


class RecentRefusals:
    """Per-process memory of refusing gates; the Gate consults it before calling Redis.

    While attempts keep being refused from a snapshot, a fresh one is read in the background
    once the current one is half way through its trust, so a storm never waits on Redis."""

    def __init__(
        self,
        client: RedisClient,
        keys_of: Callable[[int], list[str]],
        *,
        memory_s: float = MEMORY_S,
        max_drops: int = MAX_DROPS,
    ) -> None:
        self.memory_s = memory_s
        self.max_drops = max_drops
        self._keys_of = keys_of
        self._snapshot_script = register(client, "storefront.buy", "gate_snapshot")
        self._snapshots: dict[int, Snapshot] = {}
        # drops whose snapshot is being read, and the event set when it is in
        self._loading: dict[int, asyncio.Event] = {}
        self._refreshing: set[asyncio.Task[None]] = set()
        # bumped by forget(): a snapshot read while stock was being returned is not kept
        self._generation = 0

    def refusal(self, drop_id: int, buyer_id: str, quantity: int, digest: str) -> Refusal | None:
        snapshot = self._snapshots.get(drop_id)
        if snapshot is None:
            return None
        left_s = snapshot.trusted_until - time.monotonic()
        if left_s <= 0:
            del self._snapshots[drop_id]
            return None
        found = snapshot.refusal(buyer_id, quantity, digest, time.time() * 1000)
        if found is not None:
            REFUSED_LOCALLY.inc(found.reason)
            if left_s < self.memory_s / 2 and (loading := self._start_read(drop_id)) is not None:
                task = asyncio.create_task(self._read(drop_id, loading))
                self._refreshing.add(task)
                # a task cancelled before it ran (shutdown) must not leave the drop "loading"
                task.add_done_callback(lambda done: self._finish(drop_id, loading, done))
        return found

    async def settled(self, drop_id: int) -> bool:
        """Wait for a snapshot of this drop being read, if any (True when there was one):
        attempts arriving meanwhile are then refused from it rather than sent to Redis."""
        loading = self._loading.get(drop_id)
        if loading is None:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SNAPSHOT_WAIT_S):
                await loading.wait()
        return True

    def forget(self, drop_id: int) -> None:
        """Stock came back, or the drop changed: ask the gate again from now on."""
        self._generation += 1
        self._snapshots.pop(drop_id, None)

    def clear(self) -> None:
        self._generation += 1
        self._snapshots.clear()

    async def learn(self, drop_id: int) -> None:
        """The gate refused an attempt on this drop: read a snapshot to refuse the next ones
        locally (unless a fresh one is here or on its way). Failures only cost the shortcut."""
        current = self._snapshots.get(drop_id)
        if current is not None and time.monotonic() < current.trusted_until:
            return
        loading = self._start_read(drop_id)
        if loading is not None:
            await self._read(drop_id, loading)

    def _start_read(self, drop_id: int) -> asyncio.Event | None:
        # marked at once: requests handled before the read starts must not start another
        if drop_id in self._loading:
            return None
        loading = self._loading[drop_id] = asyncio.Event()
        return loading

    async def _read(self, drop_id: int, loading: asyncio.Event) -> None:
        try:
            await self._read_snapshot(drop_id)
        finally:
            self._finish(drop_id, loading)

    def _finish(
        self, drop_id: int, loading: asyncio.Event, task: asyncio.Task[None] | None = None
    ) -> None:
        if task is not None:
            self._refreshing.discard(task)
        if self._loading.get(drop_id) is loading:
            del self._loading[drop_id]
        loading.set()

    async def _read_snapshot(self, drop_id: int) -> None:
        generation = self._generation
        asked_at = time.monotonic()
        try:
            reply = await self._snapshot_script(keys=self._keys_of(drop_id)[:4], args=[MAX_ENTRIES])
        except redis.exceptions.RedisError as exc:
            log.debug("drop %d: no gate snapshot: %r", drop_id, exc)
            return
        if not reply or generation != self._generation:
            return
        self._remember(drop_id, Snapshot(asked_at + self.memory_s, _gate_state.decode(reply)))

    def _remember(self, drop_id: int, snapshot: Snapshot) -> None:
        self._snapshots.pop(drop_id, None)
        self._snapshots[drop_id] = snapshot
        if len(self._snapshots) > self.max_drops:
            now = time.monotonic()
            for old in [d for d, s in self._snapshots.items() if now >= s.trusted_until]:
                del self._snapshots[old]
            while len(self._snapshots) > self.max_drops:
                del self._snapshots[next(iter(self._snapshots))]
