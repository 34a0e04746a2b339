"""When the hub's full garbage collections run: not in the middle of a join storm, and soon
after connections closed.

A join storm makes only objects that live on (each viewer's session and `websockets` protocol,
about a dozen objects the cyclic collector tracks), so CPython's full collections during it free
nothing and walk every viewer joined so far: two or three per 10,000-viewer storm, 12–35 ms
each (holding them back took 6–10 % off the hub's CPU per join in alternating runs,
`load_tests/README.md`). While connections keep opening,
the hub holds CPython's full collections back (the third threshold, `gc.set_threshold`);
young collections go on as usual.

A closed connection's protocol and its suspended frame parser refer to each other (the parser's
frame holds the protocol; the protocol holds the parser and, when the connection was lost, the
parser's `EOFError` with its traceback), so only a full collection frees them. Left to itself,
CPython makes that pass when allocations pile up again, which in a hub means during the next
join storm: 10,000 viewers closed together left about 115,000 objects, freed by a 43–50 ms
collection in the middle of the next storm.

So the hub makes its full collections itself, in the first quarter second in which few
connections opened or closed, once enough connections have come or gone since the last one: a
quarter of those open, as CPython waits for a quarter of the old objects to be new, so a pass
(which walks everything alive) costs a bounded amount per connection. The memory of closed
viewers comes back right after a room empties, what a storm held back is collected right after
it, and a hub whose connections never stop coming still gets one when due, after `MAX_DEFER_S`
of holding back.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

CHECK_EVERY_S = 0.25
# connections opened, or closed, within one check below which the hub is quiet (100 a second)
QUIET = 25
MIN_CHURN = 1_000
# the longest CPython's full collections wait at a time while connections keep opening
MAX_DEFER_S = 10.0
# the third threshold while they wait: more young-generation passes than a storm makes
_HELD_BACK = 1_000_000
# the thresholds are the process's: the collectors holding them back (a process may run several
# hubs, as tests do), and CPython's thresholds from before the first of them
_holding: set[int] = set()
_threshold: tuple[int, int, int] | None = None


class QuietCollector:
    """Counts connections opened and closed; `check`, every `CHECK_EVERY_S`, holds CPython's
    full collections back while connections open, and makes one when due."""

    __slots__ = (
        "min_churn",
        "quiet",
        "max_defer_s",
        "opened",
        "closed",
        "_churn",
        "_clock",
        "_deferred_at",
    )

    def __init__(
        self,
        *,
        min_churn: int = MIN_CHURN,
        quiet: int = QUIET,
        max_defer_s: float = MAX_DEFER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_churn = min_churn
        self.quiet = quiet
        self.max_defer_s = max_defer_s
        self.opened = 0  # since the last check
        self.closed = 0  # since the last check
        self._churn = 0  # connections opened or closed since the last full collection
        self._clock = clock
        self._deferred_at: float | None = None  # holding full collections back since then

    @property
    def deferring(self) -> bool:
        return self._deferred_at is not None

    def check(self, open_connections: int) -> float | None:
        """Hold full collections back while connections open; make one when enough came or
        went since the last, and the hub was quiet since the last check or has held back for
        `max_defer_s`. The seconds it took, or None when it did not run."""
        opened, closed = self.opened, self.closed
        self.opened = self.closed = 0
        self._churn += opened + closed
        due = self._churn >= max(self.min_churn, open_connections // 4)
        if opened >= self.quiet:
            if self._deferred_at is None:
                self._hold_back()
            elif due and self._clock() - self._deferred_at >= self.max_defer_s:
                spent = self._collect()
                self._hold_back()
                return spent
            return None
        self.release()
        if closed >= self.quiet or not due:
            return None
        return self._collect()

    def release(self) -> None:
        """CPython's full collections as usual again (the hub is stopping, or quiet), unless
        another collector of the process still holds them back."""
        global _threshold
        self._deferred_at = None
        _holding.discard(id(self))
        if not _holding and _threshold is not None:
            gc.set_threshold(*_threshold)
            _threshold = None

    def _hold_back(self) -> None:
        global _threshold
        if _threshold is None:
            _threshold = gc.get_threshold()
            young, middle, _ = _threshold
            gc.set_threshold(young, middle, _HELD_BACK)
        _holding.add(id(self))
        self._deferred_at = self._clock()

    def _collect(self) -> float:
        self._churn = 0
        started = time.perf_counter()
        gc.collect()
        return time.perf_counter() - started
