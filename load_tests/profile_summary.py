"""Summarise py-spy's collapsed stacks (`flash_sale --profile`) as a per-attempt breakdown.

    python -m load_tests.profile_summary load_tests/results/flash_sale_livesell.folded
    python -m load_tests.profile_summary FILE --attempts 21000 --top 25

Each line of a collapsed-stack file is `frame;frame;...;frame COUNT`, root first. A sample is
charged to the first of OWNERS with a frame anywhere in its stack (a piece of work with its own
I/O, such as a Redis call: its socket writes are its cost), else to the innermost frame's
layer in LAYERS (so uvicorn's socket write for the response counts as uvicorn's, not as the
Starlette code that called it), so the parts add up to the whole. `--top` lists the functions
where samples end (self time). With `--cpu-us` (the process's CPU µs per attempt from the load
test) the shares are also shown as µs per attempt. Samples only come from Python frames: time
in C called from Python (uvloop, syscalls) is charged to the calling line.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

# (part, substrings of a frame that put a sample in it), checked in this order
OWNERS: list[tuple[str, tuple[str, ...]]] = [
    ("JWT verification", ("verify_token", "core/auth.py", "jwt/")),
    ("body decode (read_json)", ("read_json", "decode_json")),
    ("metrics bookkeeping", ("_route_template", "prometheus_client/")),
    ("error -> JSON response", ("livesell_error_handler", "error_body", "JSON.render")),
    ("Redis call (redis-py + socket)", ("redis/", "RecentRefusals.learn")),
    ("PostgreSQL call (asyncpg)", ("asyncpg/",)),
]
# the innermost of these in a stack takes the sample
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # the buy route's outermost ASGI layer: refusals the gate's memory proves, before routing
    ("early refusals (storefront.buy.early)", ("storefront/buy/early.py", "(early.py:")),
    ("buy handler and gate, other", ("storefront/", "naive_buy")),
    ("core.http helpers", ("core/http.py", "(http.py:")),
    ("Starlette routing, middleware, request objects", ("starlette/", "metrics.py:")),
    ("uvicorn HTTP protocol (httptools), incl. response socket writes", ("uvicorn/",)),
    ("event loop, sockets, tasks", ("asyncio/", "uvloop", "selector", "<frozen", "runners")),
]


def load(path: Path) -> Counter[str]:
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def _part(stack: str) -> str:
    for name, patterns in OWNERS:
        if any(p in stack for p in patterns):
            return name
    for frame in reversed(stack.split(";")):
        for name, patterns in LAYERS:
            if any(p in frame for p in patterns):
                return name
    return "other"


def breakdown(stacks: Counter[str]) -> Counter[str]:
    parts: Counter[str] = Counter()
    for stack, count in stacks.items():
        parts[_part(stack)] += count
    return parts


def self_time(stacks: Counter[str]) -> Counter[str]:
    leaves: Counter[str] = Counter()
    for stack, count in stacks.items():
        leaves[stack.rsplit(";", 1)[-1]] += count
    return leaves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=15, help="self-time functions to list (15)")
    parser.add_argument("--cpu-us", type=float, help="the process's CPU µs per attempt")
    args = parser.parse_args(argv)
    stacks = load(args.file)
    total = sum(stacks.values())
    if not total:
        print("no samples")
        return 1
    print(f"{args.file}: {total} samples")
    for name, count in breakdown(stacks).most_common():
        share = count / total
        per = f"{share * args.cpu_us:8.1f} µs" if args.cpu_us else ""
        print(f"  {share:6.1%} {per}  {name}")
    print("self time:")
    for frame, count in self_time(stacks).most_common(args.top):
        print(f"  {count / total:6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
