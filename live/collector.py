"""Freeing what closed connections leave, while the hub is quiet.

A closed connection's `websockets` protocol and its suspended frame parser refer to each other
(the parser's frame holds the protocol; the protocol holds the parser and, when the connection
was lost, the parser's `EOFError` with its traceback), so CPython frees them, about a dozen
objects per connection, only in a full pass of its cyclic collector. Left to itself, the
collector makes that pass when allocations pile up again, which in a hub means during the next
join storm: 10,000 viewers closed together left about 115,000 objects, freed by a 43–50 ms
collection in the middle of the next 10,000-viewer storm (`load_tests/README.md`).

So the hub collects them itself, from its heartbeat, in a second in which few connections
opened, once enough have closed since the last time: their memory comes back within a second
or two of a room emptying, and the next storm does not pay for it. Like CPython's own full
collections (which wait for a quarter of the old objects to be new), it waits for a quarter of
the open connections to have closed, so the pass, which walks everything alive, costs a bounded
amount per closed connection. While joins keep coming the collector runs as it always does.
"""

from __future__ import annotations

import gc
import time

MIN_CLOSED = 1_000
QUIET_OPENED = 100  # connections opened in the last second below which the hub is quiet


class QuietCollector:
    """Counts connections opened and closed; `tick`, once a second, collects when due."""

    __slots__ = ("min_closed", "quiet_opened", "opened", "closed")

    def __init__(self, *, min_closed: int = MIN_CLOSED, quiet_opened: int = QUIET_OPENED) -> None:
        self.min_closed = min_closed
        self.quiet_opened = quiet_opened
        self.opened = 0  # since the last tick
        self.closed = 0  # since the last collection

    def tick(self, open_connections: int) -> float | None:
        """Collect now if enough connections closed since the last collection and few opened
        since the last tick; the seconds it took, or None when it did not run."""
        opened, self.opened = self.opened, 0
        if opened >= self.quiet_opened or self.closed < max(self.min_closed, open_connections // 4):
            return None
        self.closed = 0
        started = time.perf_counter()
        gc.collect()
        return time.perf_counter() - started
