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
    """
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
            await asyncio.sleep(backoff)
            continue
        if failing:
            log.info("%s recovered", name)
            failing = False
        backoff = interval_s
        await asyncio.sleep(interval_s)
