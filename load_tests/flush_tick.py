"""One channel's flush tick alone: `live.feed.Feed.flush` writing to N subscribers whose
transports do nothing, so only the hub's own cost per tick is left.

    python -m load_tests.flush_tick            # 5,000 subscribers, best of 7 × 200 ticks
    python -m load_tests.flush_tick 1 20000    # the per-tick constant
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from live.feed import Feed

DATA = b'{"type":"card.pinned","room_id":"1","product_id":"7"}'


class _Transport:
    __slots__ = ()

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        pass


class _Viewer:
    __slots__ = ("outbox_bytes", "__weakref__")

    def __init__(self) -> None:
        self.outbox_bytes = 1 << 20


async def measure(subscribers: int, ticks: int, rounds: int = 7) -> list[float]:
    """ns per subscriber per tick, one figure per round."""
    feed = Feed("room:1", flush_s=3600, max_held=100, on_empty=lambda _: None)
    feed.epoch = "e"
    for _ in range(subscribers):
        feed.live[_Viewer()] = _Transport()  # type: ignore[index,assignment]
    offset = 0
    figures = []
    for _ in range(rounds):
        spent = 0.0
        for _ in range(ticks):
            offset += 1
            feed.deliver(offset, "e", b"", DATA)
            feed.close()  # no timer: the tick is called here
            started = time.perf_counter()
            feed.flush()
            spent += time.perf_counter() - started
        figures.append(spent / ticks / subscribers * 1e9)
    return figures


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.flush_tick",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("subscribers", type=int, nargs="?", default=5000)
    parser.add_argument("ticks", type=int, nargs="?", default=200, help="ticks per round")
    args = parser.parse_args(argv)
    subscribers, ticks = args.subscribers, args.ticks
    figures = asyncio.run(measure(subscribers, ticks))
    print(
        f"flush to {subscribers} subscribers: best {min(figures):.2f} ns, median"
        f" {statistics.median(figures):.2f} ns per subscriber per tick"
        f" ({min(figures) * subscribers / 1000:.2f} µs per tick)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
