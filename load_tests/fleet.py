"""Many viewer processes driven as one: connect, trim, reset counters, read stats and CPU.

The processes run on this machine (`Fleet.local`) or on another one (`Fleet.remote`, each
started there by `load_tests.viewer_agent` for one authenticated connection): the commands and
their replies are the same either way.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import multiprocessing
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection
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


LOOPBACK = "127.0.0.1"
PROCESSES = 4  # viewer processes, unless a benchmark asks for another number
KEY_ENV = "LIVESELL_BENCH_KEY"  # the key a driver and a viewer agent share
MIN_KEY_BYTES = 16
HELLO = "hello"  # a driver's first message to the agent: ("hello", sample_every)


def address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets) as a socket address."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def key_from_env(environ: Mapping[str, str] = os.environ) -> bytes:
    """The shared key (`LIVESELL_BENCH_KEY`); raises `ValueError` when it is missing or short."""
    key = environ.get(KEY_ENV, "").encode()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"set {KEY_ENV} to a shared key of at least {MIN_KEY_BYTES} characters")
    return key


class AgentUnreachable(Exception):
    """The viewer agent refused the driver (another key) or could not be reached."""


@dataclass(frozen=True)
class RemoteViewers:
    """Viewer processes on another machine: its agent's address and key, how many processes,
    and the address of this machine the viewers dial (the servers under test listen on it)."""

    agent: tuple[str, int]
    authkey: bytes
    dial: str
    processes: int = PROCESSES

    def describe(self) -> str:
        return (
            f"{self.processes} viewer processes at {self.agent[0]}:{self.agent[1]},"
            f" dialling {self.dial}"
        )


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fleet",
        type=address,
        metavar="HOST:PORT",
        help="run the viewers on another machine, started there by `python -m "
        f"load_tests.viewer_agent` (the key in {KEY_ENV} on both); default: on this machine",
    )
    parser.add_argument(
        "--dial",
        metavar="ADDRESS",
        help="with --fleet: this machine's address as the viewers reach it; the servers listen "
        "on it",
    )
    parser.add_argument(
        "--fleet-processes",
        type=int,
        metavar="N",
        default=PROCESSES,
        help="with --fleet: viewer processes the agent starts (default: %(default)s)",
    )


def remote_viewers(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> RemoteViewers | None:
    """The remote viewers the arguments name, if any (exits through `parser` on bad ones)."""
    if args.fleet is None:
        if args.dial:
            parser.error("--dial goes with --fleet")
        return None
    if not args.dial:
        parser.error("--fleet needs --dial: this machine's address as the viewers reach it")
    if args.fleet_processes < 1:
        parser.error("--fleet-processes must be at least 1")
    try:
        authkey = key_from_env()
    except ValueError as exc:
        parser.error(str(exc))
    return RemoteViewers(args.fleet, authkey, args.dial, args.fleet_processes)


class Fleet:
    """Viewer processes driven as one; viewers are spread evenly across them. `dial` is the
    address their viewers connect to a server at."""

    def __init__(self, pipes: list[Connection], procs: list[Any], dial: str = LOOPBACK) -> None:
        self.pipes = pipes
        self.procs = procs  # started here (none when they run on another machine)
        self.dial = dial
        self.counts = [0] * len(pipes)

    @classmethod
    def local(
        cls, processes: int = PROCESSES, *, sample_every: int = 10, cpus: list[int] | None = None
    ) -> Fleet:
        """`processes` viewer processes on this machine (pinned to `cpus`, if given)."""
        context = multiprocessing.get_context("spawn")
        pipes, procs = [], []
        for _ in range(processes):
            ours, theirs = context.Pipe()
            proc = context.Process(
                target=serve_commands, args=(theirs, sample_every, cpus), daemon=True
            )
            proc.start()
            theirs.close()
            pipes.append(ours)
            procs.append(proc)
        return cls(pipes, procs)

    @classmethod
    def remote(cls, where: RemoteViewers, *, sample_every: int = 10) -> Fleet:
        """Viewer processes started by the viewer agent `where` names (on another machine),
        whose viewers reach this machine's servers at `where.dial`. Raises `AgentUnreachable`
        when the agent cannot be reached or takes another key."""
        pipes: list[Connection] = []
        try:
            for _ in range(where.processes):
                pipe = Client(where.agent, authkey=where.authkey)
                pipes.append(pipe)
                pipe.send((HELLO, sample_every))
        except BaseException as exc:
            for pipe in pipes:
                pipe.close()
            if isinstance(exc, OSError | multiprocessing.AuthenticationError):
                host, port = where.agent
                raise AgentUnreachable(f"the viewer agent at {host}:{port}: {exc!r}") from exc
            raise
        return cls(pipes, [], where.dial)

    @classmethod
    def open(
        cls,
        remote: RemoteViewers | None,
        processes: int,
        *,
        sample_every: int,
        cpus: list[int] | None,
    ) -> Fleet:
        """The viewers `remote` names, or `processes` viewer processes here pinned to `cpus`."""
        if remote is None:
            return cls.local(processes, sample_every=sample_every, cpus=cpus)
        return cls.remote(remote, sample_every=sample_every)

    async def cpu_seconds(self) -> float:
        """The CPU (user + system) the viewer processes have used so far, together."""
        return sum(await self._ask([("cpu", ())] * len(self.pipes)))

    def pin(self, cpus: list[int] | None) -> None:
        """Move the viewer processes to `cpus` (None: every core); only those started here."""
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
        self, port: int, dialect: str, channel: str, total: int, parallel: int = 256
    ) -> JoinResult:
        """Open `total` more viewers of the server at `dial`:`port` and wait until every one
        joined or failed."""
        shares = [total // len(self.pipes)] * len(self.pipes)
        for i in range(total % len(self.pipes)):
            shares[i] += 1
        started = time.time()
        replies = await self._ask(
            [
                ("connect", (self.dial, port, dialect, channel, share, parallel)) if share else None
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
