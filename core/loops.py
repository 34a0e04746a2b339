"""Background loops that survive their dependencies restarting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("livesell.loops")


async def run_periodically(
    name: str,
    step: Callable[[], Awaitable[object]],
    interval_s: float,
    *,
    max_backoff_s: float = 30.0,
) -> None:
    """Run `step` every `interval_s` until cancelled.

    A failing step (PostgreSQL or Redis restarting) is retried with exponential backoff; the
    failure is logged once when it starts and once when the loop recovers, not on every retry.

    A step may lose a cancellation: Python 3.11's `asyncio.wait_for` returns the result of a
    call that finished in the same turn of the event loop as the cancel, and redis-py sends
    every command through it when a socket timeout is set. The loop then stops anyway, as its
    task was asked to (`Task.cancelling`), instead of running on until cancelled again.
    """
    task = asyncio.current_task()
    assert task is not None
    backoff = interval_s
    failing = False
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a loop must outlive any single failure
            if not failing:
                log.warning("%s failing, retrying with backoff: %r", name, exc)
                failing = True
            backoff = min(max(backoff * 2, 0.2), max_backoff_s)
        else:
            if failing:
                log.info("%s recovered", name)
                failing = False
            backoff = interval_s
        if task.cancelling():
            raise asyncio.CancelledError(f"{name} was cancelled during a step")
        await asyncio.sleep(backoff)
