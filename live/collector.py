"""Freeing what closed connections leave, while the hub is quiet.

A closed connection's `websockets` protocol and its suspended frame parser refer to each other
(the parser's frame holds the protocol; the protocol holds the parser and, when the connection
was lost, the parser's `EOFError` with its traceback), so CPython frees them, about a dozen
objects per connection, only in a full pass of its cyclic collector. Left to itself, the
collector makes that pass when allocations pile up again, which in a hub means during the next
join storm: 10,000 viewers closed together left about 115,000 objects, freed by a 43–50 ms
collection in the middle of the next 10,000-viewer storm (`load_tests/README.md`).

So the hub collects them itself, once enough have closed, as soon as a quarter second passes
in which few connections opened or closed: their memory comes back right after a room empties,
and the next storm does not pay for it. Like CPython's own full collections (which wait for a
quarter of the old objects to be new), it waits for a quarter of the open connections to have
closed, so the pass, which walks everything alive, costs a bounded amount per closed
connection. While connections keep coming or going, the collector runs as it always does.
"""

from __future__ import annotations

import gc
import time

CHECK_EVERY_S = 0.25
# connections opened, or closed, within one check below which the hub is quiet (100 a second)
QUIET = 25
MIN_CLOSED = 1_000


class QuietCollector:
    """Counts connections opened and closed; `check`, every `CHECK_EVERY_S`, collects when
    due."""

    __slots__ = ("min_closed", "quiet", "opened", "closed", "_closed_at_check")

    def __init__(self, *, min_closed: int = MIN_CLOSED, quiet: int = QUIET) -> None:
        self.min_closed = min_closed
        self.quiet = quiet
        self.opened = 0  # since the last check
        self.closed = 0  # since the last collection
        self._closed_at_check = 0

    def check(self, open_connections: int) -> float | None:
        """Collect now if enough connections closed since the last collection and the hub was
        quiet since the last check; the seconds it took, or None when it did not run."""
        opened, self.opened = self.opened, 0
        closing, self._closed_at_check = self.closed - self._closed_at_check, self.closed
        if (
            opened >= self.quiet
            or closing >= self.quiet
            or self.closed < max(self.min_closed, open_connections // 4)
        ):
            return None
        self.closed = self._closed_at_check = 0
        started = time.perf_counter()
        gc.collect()
        return time.perf_counter() - started
