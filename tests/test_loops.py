"""Background loops stop when cancelled, even when a step loses the cancellation."""

from __future__ import annotations

import asyncio

import pytest

from core.loops import run_periodically


class Steps:
    """A step that waits on a gate the test opens; `entered` is set while one waits."""

    def __init__(self, *, lose_cancel: bool = False, fail_after: bool = False) -> None:
        self.calls = 0
        self.entered = asyncio.Event()
        self.gate: asyncio.Future[None] | None = None
        self.lose_cancel = lose_cancel
        self.fail_after = fail_after

    async def __call__(self) -> None:
        self.calls += 1
        self.gate = asyncio.get_running_loop().create_future()
        self.entered.set()
        try:
            await self.gate
        except asyncio.CancelledError:
            if not self.lose_cancel:
                raise
            # what a library does when it returns the result of a call that finished as the
            # cancel came, instead of raising
        if self.fail_after:
            raise ConnectionError("redis restarting")


async def _stopped(task: asyncio.Task[None]) -> None:
    """The task ended cancelled, promptly (not after another interval or cancel)."""
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), 2)


@pytest.mark.parametrize("fail_after", [False, True], ids=["step returns", "step raises"])
async def test_a_loop_stops_when_its_step_loses_the_cancel(fail_after: bool) -> None:
    steps = Steps(lose_cancel=True, fail_after=fail_after)
    task = asyncio.create_task(run_periodically("test loop", steps, 0.05))
    await steps.entered.wait()
    task.cancel()
    await _stopped(task)
    assert steps.calls == 1


async def test_a_loop_stops_when_wait_for_returns_a_result_instead_of_the_cancel() -> None:
    """Python 3.11's `asyncio.wait_for` (redis-py sends commands through it) returns the result
    when the call it waits on finishes in the same turn of the event loop as the cancel."""
    gates: list[asyncio.Future[None]] = []
    entered = asyncio.Event()

    async def step() -> None:
        gate = asyncio.get_running_loop().create_future()
        gates.append(gate)
        entered.set()
        await asyncio.wait_for(gate, 5)

    task = asyncio.create_task(run_periodically("test loop", step, 0.05))
    await entered.wait()
    await asyncio.sleep(0)
    gates[-1].set_result(None)
    task.cancel()
    await _stopped(task)
    assert len(gates) == 1


async def test_a_loop_keeps_running_after_a_failed_step_and_stops_when_cancelled() -> None:
    steps = Steps(fail_after=True)
    task = asyncio.create_task(run_periodically("test loop", steps, 0.01, max_backoff_s=0.01))
    for _ in range(3):
        steps.entered.clear()
        await steps.entered.wait()
        assert steps.gate is not None
        steps.gate.set_result(None)
    steps.entered.clear()
    await steps.entered.wait()
    task.cancel()
    await _stopped(task)
    assert steps.calls == 4
