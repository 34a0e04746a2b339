"""Work that follows a commit without making the request wait: one owner per process.

A command commits, answers, and then tells others (the gate that its units are claimed, the
room that stock moved). That follow-up work runs here, in one `asyncio.TaskGroup` that the
process's lifespan enters with its resources and leaves when it stops: on the way out it waits
for every piece still running, so nothing committed is left half-announced by a clean stop.

Each piece is the caller's to make safe: an exception it lets out is logged here and stops
nothing else (a TaskGroup would otherwise cancel its siblings).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any

log = logging.getLogger("livesell.aftercommit")


class AfterCommit:
    """Follow-up work of committed commands (see the module's docstring)."""

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self._group: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AfterCommit:
        self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._group = None
        await self._stack.aclose()

    def soon(self, work: Coroutine[Any, Any, None], *, what: str) -> None:
        """Run `work` after the current request, in the background; `what` names it in logs."""
        if self._group is None:
            work.close()
            raise RuntimeError(f"after-commit work ({what}) outside the process's lifespan")
        task = self._group.create_task(_guarded(work, what))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def drain(self) -> None:
        """Wait until the work started so far (and what it starts) has finished."""
        while self._running:
            await asyncio.wait(list(self._running))


async def _guarded(work: Coroutine[Any, Any, None], what: str) -> None:
    try:
        await work
    except Exception:  # noqa: BLE001 - one piece failing must not cancel the others
        log.exception("after-commit work failed: %s", what)
