"""Fixed-window rate limits in Redis, shared by every process (buy attempts, hub connects).

A limit is a name, a number of hits and a window; a hit counts against one or more subjects at
once (the user and the client address), and is refused when any subject is over its limit.
Counting is one script call per hit. When Redis cannot be reached the hit is allowed: a limiter
must not turn a Redis outage into an outage of its own (the paths it guards fail on their own
when they need Redis).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass

from core.redis_client import REDIS_ERRORS, RedisClient
from core.scripts import Batched, register

log = logging.getLogger("livesell.ratelimit")


def address_subject(address: str | None) -> str | None:
    """The subject a per-address limit counts for a peer address, or None for loopback and
    unknown peers: on loopback every client would share one counter (a local reverse proxy
    resolves real addresses before this; uvicorn does with `proxy_headers`)."""
    if not address:
        return None
    try:
        if ipaddress.ip_address(address).is_loopback:
            return None
    except ValueError:
        return None  # not an IP address (a unix socket, a test transport): nothing to count
    return address


@dataclass(frozen=True)
class Limit:
    """At most `hits` per `window_s` seconds for one subject; `hits == 0` turns it off."""

    name: str
    hits: int
    window_s: int = 10


@dataclass(frozen=True)
class Refusal:
    limit: Limit
    retry_after_s: int


class RateLimiter:
    """One per process (`Resources.limiter`); `hit` counts a request against several (limit,
    subject) pairs."""

    def __init__(self, client: RedisClient) -> None:
        # hits arriving together share round trips, a few at a time: a storm of attempts
        # waits here instead of taking the connections the gate needs
        self._hits = Batched(client, register(client, "core", "ratelimit_hit"))
        self._failing = False

    async def hit(self, *checks: tuple[Limit, str | None]) -> Refusal | None:
        """Count one hit against every (limit, subject); the first limit it exceeds, or None
        when it is allowed. A None subject is not counted. One round trip; each counter has its
        own hash tag (cluster-safe)."""
        active = [(limit, subject) for limit, subject in checks if limit.hits > 0 and subject]
        if not active:
            return None
        now = time.time()
        starts = [int(now // limit.window_s) * limit.window_s for limit, _ in active]
        try:
            hits = [
                self._hits.submit([_counter(limit, subject, start)], [limit.window_s])
                for (limit, subject), start in zip(active, starts, strict=True)
            ]
            counts = [await hits[0]] if len(hits) == 1 else await asyncio.gather(*hits)
        except REDIS_ERRORS as exc:
            if not self._failing:
                log.warning("rate limits not enforced while Redis is unreachable: %r", exc)
                self._failing = True
            return None
        if self._failing:
            log.info("rate limits enforced again")
            self._failing = False
        for (limit, _), start, count in zip(active, starts, counts, strict=True):
            if int(count) > limit.hits:
                return Refusal(limit, max(1, int(start + limit.window_s - now + 0.999)))
        return None


def _counter(limit: Limit, subject: str, window_start: int) -> str:
    return "{rl:" + limit.name + ":" + subject + "}:" + str(window_start)
