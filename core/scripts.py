"""Lua scripts run many at a time, in one round trip.

redis-py's pipeline of `Script` calls asks Redis `SCRIPT EXISTS` before every execution, an
extra round trip each time. `run_many` sends only the EVALSHAs (one command, or a
non-transactional pipeline of them); when Redis has lost the script (a restart, a failover, a
SCRIPT FLUSH), every call fails with NOSCRIPT and none ran, so it loads the script and sends
them again, once.

`Batched` sends the calls of one script that many tasks make at the same moment (a flash
sale's winners arriving together) in such round trips: redis-py spends about three times more
CPU on a lone call than on a call among others in a pipeline.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.exceptions
from redis.commands.core import AsyncScript

from core.redis_client import RedisClient

# one call: the keys, then the arguments
Call = tuple[Sequence[str], Sequence[Any]]

# Batched: calls per round trip, and round trips of one script at once (each holds a pooled
# connection while it waits)
MAX_BATCH = 64
MAX_IN_FLIGHT = 8


def lua_source(package: str, name: str) -> str:
    """The text of the script `<package>/lua/<name>.lua` (its KEYS and ARGV at its top)."""
    for folder in importlib.import_module(package).__path__:
        path = Path(folder) / "lua" / f"{name}.lua"
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(f"no script {name}.lua in {package}/lua")


def register(client: RedisClient, package: str, name: str) -> AsyncScript:
    """The script `<package>/lua/<name>.lua`, registered with `client` (loaded on first use)."""
    return client.register_script(lua_source(package, name))


async def run_many(client: RedisClient, script: AsyncScript, calls: Sequence[Call]) -> list[Any]:
    """The replies of `script` run once per call, in order."""
    for attempt in (1, 2):
        try:
            return await _send(client, script.sha, calls)
        except redis.exceptions.NoScriptError:
            if attempt == 2:
                raise
            script.sha = await client.script_load(script.script)
    raise AssertionError("unreachable")


async def _send(
    client: RedisClient, sha: str, calls: Sequence[Call], *, raise_on_error: bool = True
) -> list[Any]:
    """The replies of the EVALSHAs; with `raise_on_error` False a call's own error (the script
    raised, NOSCRIPT) is its reply instead of raised."""
    if len(calls) == 1:
        keys, args = calls[0]
        try:
            return [await client.evalsha(sha, len(keys), *keys, *args)]  # type: ignore[misc]
        except redis.exceptions.ResponseError as exc:
            if raise_on_error:
                raise
            return [exc]
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=raise_on_error)  # type: ignore[no-any-return]


class Batched:
    """One script's calls, each sent with the others made at the same moment.

    A burst of tasks calling one script (a flash sale's winners arriving together) would pay
    redis-py's cost of a lone call each, several times that of a call among others in a
    pipeline. A call is queued instead; once the tasks already ready have run (and queued their
    own calls), the queue goes in one round trip (`run_many`'s non-transactional pipeline), at
    most `max_batch` calls each and at most `max_in_flight` round trips at once; calls made
    meanwhile wait for the next. A lone call waits only for that turn of the event loop.

    Each call is still one atomic script run, and a round trip runs its calls in the order they
    were made. A call's own error (the script raised) is its caller's alone; an error of the
    round trip (Redis unreachable) is every caller's in it, as if each had called alone. A
    caller cancelled before its round trip leaves, leaves its call out of it.
    """

    def __init__(
        self,
        client: RedisClient,
        script: AsyncScript,
        *,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._client = client
        self._script = script
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._queue: list[tuple[Call, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._in_flight = 0
        self._senders: set[asyncio.Task[None]] = set()
        self.round_trips = 0  # for tests and curiosity

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The reply of one run of the script."""
        return await self.submit(keys, args)

    def submit(self, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue one run of the script; its reply comes in the future (cancel it to take the
        call back before it is sent)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(((keys, args), future))
        self._schedule(loop)
        return future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        # after the callbacks already ready: the tasks they resume may call too
        if not self._scheduled and self._in_flight < self.max_in_flight:
            self._scheduled = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        while self._queue and self._in_flight < self.max_in_flight:
            batch = [(call, f) for call, f in self._queue[: self.max_batch] if not f.done()]
            del self._queue[: self.max_batch]
            if batch:
                self._in_flight += 1
                sender = asyncio.create_task(self._send(batch))
                self._senders.add(sender)
                sender.add_done_callback(self._senders.discard)

    async def _send(self, batch: list[tuple[Call, asyncio.Future[Any]]]) -> None:
        try:
            self.round_trips += 1
            replies = await self._replies([call for call, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the round trip
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        finally:
            self._in_flight -= 1
            if self._queue:
                self._schedule(asyncio.get_running_loop())

    async def _replies(self, calls: list[Call]) -> list[Any]:
        """One reply (or error) per call; calls Redis refused for a lost script are sent again
        once it is loaded (NOSCRIPT: they did not run)."""
        replies = await _send(self._client, self._script.sha, calls, raise_on_error=False)
        lost = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if lost:
            self._script.sha = await self._client.script_load(self._script.script)
            again = await _send(
                self._client, self._script.sha, [calls[i] for i in lost], raise_on_error=False
            )
            for i, reply in zip(lost, again, strict=True):
                replies[i] = reply
        return replies
