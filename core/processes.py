"""Several server processes on one port (`livesell api --workers N`, `livesell hub --workers N`).

Each process binds its own listening socket with SO_REUSEPORT, so the kernel spreads new
connections over them and every process has its own event loop, PostgreSQL pool and Redis
connections: a flash sale or a join storm uses every core. The parent only starts the workers,
forwards SIGINT/SIGTERM to them and waits; it returns the worst exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from core.settings import Settings


def event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop's runner where uvloop is installed (it ships with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run
    return uvloop.run


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port that other processes may bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def run_processes(target: Callable[[Settings], None], settings: Settings, n: int, name: str) -> int:
    """Run `target(settings)` in `n` spawned processes named `name-<i>` until they all stop.
    Returns the worst exit code; a worker that the forwarded stop ended before it could handle
    the signal (it was still starting) stopped cleanly. A stop while the workers are being
    started reaches every worker started, and no more are started."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=target, args=(settings,), name=f"{name}-{i}") for i in range(n)
    ]
    started: list[multiprocessing.process.BaseProcess] = []
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            _terminate(worker)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for worker in workers:
            if stopping:
                break
            worker.start()
            started.append(worker)
            if stopping:
                # the stop came while this one was being started, before it had a pid to signal
                _terminate(worker)
        for process in started:
            process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max((_exit_code(w.exitcode, stopping) for w in started), default=0)


def _terminate(worker: multiprocessing.process.BaseProcess) -> None:
    if worker.is_alive() and worker.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)


def _exit_code(exitcode: int | None, stopping: bool) -> int:
    if stopping and exitcode == -signal.SIGTERM:
        return 0
    return abs(exitcode or 0)
