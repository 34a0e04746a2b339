"""Many viewer processes driven as one: connect, trim, reset counters, read stats."""

from __future__ import annotations

import asyncio
import bisect
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from load_tests.publish import Sent
from load_tests.viewers import serve_commands


@dataclass
class JoinResult:
    joined: int
    failed: int
    seconds: float
    errors: dict[str, int]

    @property
    def per_s(self) -> float:
        return self.joined / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Stats:
    viewers: int
    events: int  # every publication received, the driver's or not
    received: dict[int, int]  # offset → viewers that received it
    last_offsets: dict[int, int]  # a viewer's highest offset → how many viewers
    dropped: int
    arrivals: list[tuple[int, int]]  # sampled viewers: (offset, ns)

    def delivered(self, sent: Sent) -> int:
        """Deliveries of the driver's events (a latest-value event the server merged: none)."""
        return sum(self.received.get(offset, 0) for offset in sent.at_ns)

    def covered(self, sent: Sent) -> int:
        """Deliveries the viewers are up to date with: the driver's other events as received,
        its latest-value events in full up to each viewer's highest offset."""
        latest = set(sent.coalescable)
        others = sum(self.received.get(o, 0) for o in sent.at_ns if o not in latest)
        return others + sum(
            viewers * bisect.bisect_right(sent.coalescable, last)
            for last, viewers in self.last_offsets.items()
        )

    def latencies_us(self, sent: Sent) -> list[int]:
        return [
            (at - sent.at_ns[offset]) // 1000
            for offset, at in self.arrivals
            if offset in sent.at_ns
        ]


class Fleet:
    """`processes` viewer processes; viewers are spread evenly across them."""

    def __init__(
        self, processes: int = 4, *, sample_every: int = 10, cpus: list[int] | None = None
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        for _ in range(processes):
            ours, theirs = context.Pipe()
            proc = context.Process(
                target=serve_commands, args=(theirs, sample_every, cpus), daemon=True
            )
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)
        self.counts = [0] * processes

    def pin(self, cpus: list[int] | None) -> None:
        """Move the viewer processes to `cpus` (None: every core)."""
        import os

        target = cpus or sorted(os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))
        for pid in self.pids:
            try:
                os.sched_setaffinity(pid, target)
            except OSError:
                pass

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    async def _ask(self, commands: list[tuple[str, tuple[object, ...]] | None]) -> list[Any]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        for pipe, command in zip(self.pipes, commands, strict=True):
            future: asyncio.Future[Any] = loop.create_future()
            futures.append(future)
            if command is None:
                future.set_result(None)
                continue
            pipe.send(command)

            def ready(pipe: Connection = pipe, future: asyncio.Future[Any] = future) -> None:
                loop.remove_reader(pipe.fileno())
                try:
                    future.set_result(pipe.recv())
                except (EOFError, OSError) as exc:
                    future.set_exception(RuntimeError(f"viewer process died: {exc!r}"))

            loop.add_reader(pipe.fileno(), ready)
        replies = await asyncio.gather(*futures)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def connect(
        self, host: str, port: int, dialect: str, channel: str, total: int, parallel: int = 256
    ) -> JoinResult:
        """Open `total` more viewers and wait until every one joined or failed."""
        shares = [total // len(self.pipes)] * len(self.pipes)
        for i in range(total % len(self.pipes)):
            shares[i] += 1
        started = time.time()
        replies = await self._ask(
            [
                ("connect", (host, port, dialect, channel, share, parallel)) if share else None
                for share in shares
            ]
        )
        replies = [r for r in replies if r is not None]
        finished = max((float(r["finished"]) for r in replies), default=started)
        errors: dict[str, int] = {}
        for reply in replies:
            for reason, count in reply["errors"].items():
                errors[reason] = errors.get(reason, 0) + count
        for i, share in enumerate(shares):
            self.counts[i] += share
        return JoinResult(
            joined=sum(int(r["joined"]) for r in replies),
            failed=sum(int(r["failed"]) for r in replies),
            seconds=finished - started,
            errors=errors,
        )

    async def trim(self, total: int) -> int:
        """Close viewers until `total` remain."""
        keep = [total // len(self.pipes)] * len(self.pipes)
        for i in range(total % len(self.pipes)):
            keep[i] += 1
        left = await self._ask([("trim", (k,)) for k in keep])
        return sum(left)

    async def reset(self) -> None:
        await self._ask([("reset", ())] * len(self.pipes))

    async def stats(self, latencies: bool = False) -> Stats:
        replies = await self._ask([("stats", (latencies,))] * len(self.pipes))
        received: dict[int, int] = {}
        last_offsets: dict[int, int] = {}
        for reply in replies:
            for offset, count in reply["received"].items():
                received[offset] = received.get(offset, 0) + count
            for offset, count in reply["last_offsets"].items():
                last_offsets[offset] = last_offsets.get(offset, 0) + count
        return Stats(
            viewers=sum(r["viewers"] for r in replies),
            events=sum(r["events"] for r in replies),
            received=received,
            last_offsets=last_offsets,
            dropped=sum(r["dropped"] for r in replies),
            arrivals=[a for r in replies for a in r["arrivals"]],
        )

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._ask([("exit", ())] * len(self.pipes)), timeout=10)
        except (TimeoutError, RuntimeError, OSError):
            pass
        for proc in self.procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
        for pipe in self.pipes:
            pipe.close()
