"""A join storm's cost on each server, split: user and system CPU per join, and the system calls
per join, by call.

    python -m load_tests.join_costs                          # livesell, Node ws, the floor
    python -m load_tests.join_costs --viewers 5000 --storms 5 --systems livesell,node-ws

`load_tests.hubs` gives each server's CPU per join; this splits it. Each server runs pinned to
its own core, as in `hubs`, and takes `--storms` storms of `--viewers` viewers (all closed
between storms); CPU is counted over each storm, the figures are the median storm's (Node's
first storm, before its JIT warms up, is usually its slowest). System calls are counted by
Linux `perf stat` on the kernel's syscall tracepoints, from before the first storm to after the
last (so the closes between storms are in), divided by the joins: it needs the `perf` command
(Debian: `linux-perf`) and leave to read tracepoints (root, or `kernel.perf_event_paranoid`
at -1); without them the run says so and prints the CPU alone.

On one machine the viewers share the cores with the server, and a storm's rate is set by both.
To take the viewers off the server's machine, start `python -m load_tests.viewer_agent` on
another machine and name it here; the servers then listen on `--dial`:

    python -m load_tests.join_costs --fleet 10.0.0.2:7070 --dial 10.0.0.1
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from load_tests import hubs
from load_tests.fleet import (
    KEY_ENV,
    AgentUnreachable,
    Fleet,
    RemoteViewers,
    add_remote_arguments,
    remote_viewers,
)
from load_tests.measure import ProcessMeter
from load_tests.systems import (
    ALL,
    CLIENT_CPUS,
    LIVESELL,
    NODE_WS,
    Infra,
    System,
    driver_off_server_core,
    infrastructure,
    install_node_peers,
    livesell_hub_available,
    serve,
)
from load_tests.viewers import raise_open_files_limit

# the calls a join makes (accept, reads, writes, the event loop's), and those seen to differ
# between the servers; any other call is in the total only
CALLS = (
    "accept4",
    "read",
    "write",
    "writev",
    "epoll_pwait",
    "epoll_wait",
    "epoll_ctl",
    "io_uring_enter",
    "setsockopt",
    "getsockname",
    "getpeername",
    "getrandom",
    "getpid",
    "shutdown",
    "close",
    "futex",
    "mmap",
    "munmap",
    "brk",
)
TOTAL = "raw_syscalls:sys_enter"
PERF_START_S = 0.5  # perf attaches to the running server before the first storm


@dataclass
class Storm:
    joins_per_s: float
    cpu_us: float  # per join: user + system (the scheduler's nanoseconds)
    user_us: float  # per join, from the kernel's 10 ms ticks
    system_us: float


@dataclass
class Costs:
    system: str
    storms: list[Storm] = field(default_factory=list)
    joined: int = 0  # over every storm
    failed: int = 0
    calls: dict[str, int] | None = None  # by call, over every storm; None: not counted
    why_not_counted: str = ""

    def median(self, pick: Callable[[Storm], float]) -> float:
        return statistics.median(pick(s) for s in self.storms)

    def per_join(self, call: str) -> float | None:
        if self.calls is None or call not in self.calls or not self.joined:
            return None
        return self.calls[call] / self.joined


# --- perf ---


def perf_events() -> tuple[list[str], str]:
    """The tracepoints `perf stat` can count here (the total first), or none and why not."""
    if shutil.which("perf") is None:
        return [], "no perf command (Debian: apt install linux-perf)"
    usable = []
    for event in [TOTAL, *(f"syscalls:sys_enter_{call}" for call in CALLS)]:
        probe = subprocess.run(
            ["perf", "stat", "-x", ",", "-e", event, "--", "true"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            usable.append(event)
        elif event == TOTAL:
            reason = probe.stderr.strip().splitlines()[:1] or ["perf stat failed"]
            return [], f"perf cannot count system calls here: {reason[0]}"
    return usable, ""


def parse_perf_stat(text: str) -> dict[str, int]:
    """Counts by call from `perf stat -x ,` output (`raw_syscalls:sys_enter` as "total")."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split(",")
        if line.startswith("#") or len(fields) < 3 or not fields[0].strip().isdigit():
            continue
        event = fields[2]
        name = "total" if event == TOTAL else event.removeprefix("syscalls:sys_enter_")
        counts[name] = int(fields[0])
    return counts


@contextmanager
def counting(pid: int, events: list[str], into: Costs) -> Iterator[None]:
    """`perf stat` on `pid` (every thread) while the block runs; the counts go to `into`."""
    if not events:
        yield
        return
    with tempfile.NamedTemporaryFile("r", suffix=".csv") as out:
        perf = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-e", ",".join(events), "-p", str(pid), "-o", out.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            yield
        finally:
            perf.send_signal(signal.SIGINT)
            try:
                _, err = perf.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                perf.kill()
                _, err = perf.communicate()
            counts = parse_perf_stat(out.read())
            if "total" in counts:
                into.calls = counts
            else:
                into.why_not_counted = err.decode(errors="replace").strip() or "perf counted none"


# --- the storms ---


async def measure_system(
    system: System, infra: Infra, fleet: Fleet, viewers: int, storms: int, events: list[str]
) -> Costs:
    costs = Costs(system.name)
    with serve(system, infra, pin=True) as server:
        meter = ProcessMeter(server.proc.pid)
        with counting(server.proc.pid, events, costs):
            await asyncio.sleep(PERF_START_S)
            for number in range(storms):
                if number:
                    await fleet.trim(0)
                    await asyncio.sleep(hubs.BETWEEN_STORMS_S)
                user_before, system_before = meter.user_system_seconds()
                storm = await hubs.join(fleet, server, meter, infra, viewers)
                user_after, system_after = meter.user_system_seconds()
                joined = storm["joined"] or 1
                costs.joined += storm["joined"]
                costs.failed += storm["failed"]
                costs.storms.append(
                    Storm(
                        joins_per_s=storm["joins_per_s"],
                        cpu_us=storm["server_cpu_us_per_join"] or 0.0,
                        user_us=(user_after - user_before) * 1e6 / joined,
                        system_us=(system_after - system_before) * 1e6 / joined,
                    )
                )
            await fleet.trim(0)
    return costs


async def run(
    systems: list[System],
    viewers: int,
    storms: int,
    progress: Callable[[str], None],
    remote: RemoteViewers | None = None,
) -> list[Costs]:
    events, why = perf_events()
    if why:
        progress(f"system calls not counted: {why}")
    plan = hubs.QUICK
    results = []
    fleet = Fleet.open(remote, plan.processes, sample_every=plan.sample_every, cpus=CLIENT_CPUS)
    try:
        async with infrastructure() as infra:
            if remote is not None:
                infra.host = remote.dial
                progress(remote.describe())
            with driver_off_server_core():
                await hubs.warm_fleet(infra, fleet, viewers, progress)
                for system in systems:
                    progress(f"{system.name}: {storms} storms of {viewers:,} viewers")
                    costs = await measure_system(system, infra, fleet, viewers, storms, events)
                    if not costs.why_not_counted and events and costs.calls is None:
                        costs.why_not_counted = "perf counted none"
                    results.append(costs)
    finally:
        await fleet.close()
    return results


# --- the report ---


def report(results: list[Costs]) -> str:
    """The CPU table (with each figure against Node's where Node ran) and the calls table."""
    node = next((c for c in results if c.system == NODE_WS.name and c.storms), None)

    def versus(value: float, pick: Callable[[Storm], float]) -> str:
        if node is None:
            return ""
        base = node.median(pick)
        return f" ({value / base:.2f}×)" if base else ""

    lines = [
        "median storm; CPU in µs per join (against Node ws)",
        f"{'system':14} {'joins/s':>16} {'CPU':>15} {'user':>15} {'system':>15}  failed",
    ]
    for c in results:
        if not c.storms:
            continue
        figures = [
            (c.median(lambda s: s.joins_per_s), lambda s: s.joins_per_s, ",.0f"),
            (c.median(lambda s: s.cpu_us), lambda s: s.cpu_us, ".1f"),
            (c.median(lambda s: s.user_us), lambda s: s.user_us, ".1f"),
            (c.median(lambda s: s.system_us), lambda s: s.system_us, ".1f"),
        ]
        cells = [f"{format(v, fmt)}{versus(v, pick)}" for v, pick, fmt in figures]
        lines.append(
            f"{c.system:14} {cells[0]:>16} {cells[1]:>15} {cells[2]:>15} {cells[3]:>15}  {c.failed}"
        )
    counted = [c for c in results if c.calls is not None]
    if counted:
        lines += ["", "system calls per join (storms and the closes between them)"]
        lines.append(f"{'call':16}" + "".join(f"{c.system:>14}" for c in counted))
        for call in ["total", *CALLS]:
            row = [c.per_join(call) for c in counted]
            if call != "total" and all(v is None or v < 0.05 for v in row):
                continue
            lines.append(f"{call:16}" + "".join(_cell(v) for v in row))
    for c in results:
        if c.why_not_counted:
            lines.append(f"{c.system}: system calls not counted ({c.why_not_counted})")
    return "\n".join(lines)


def _cell(per_join: float | None) -> str:
    return f"{'—' if per_join is None else f'{per_join:.2f}':>14}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.join_costs",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="The embedded Valkey and PostgreSQL stop by themselves. With --fleet the viewers "
        "run on another machine, started there by `python -m load_tests.viewer_agent`; the key "
        f"is read from {KEY_ENV} on both machines.",
    )
    parser.add_argument(
        "--viewers", type=int, default=10_000, help="viewers per storm (default: %(default)s)"
    )
    parser.add_argument(
        "--storms", type=int, default=3, help="storms per server (default: %(default)s)"
    )
    parser.add_argument(
        "--systems",
        default="livesell,node-ws,uvloop-floor",
        help=f"comma-separated, of {','.join(s.name for s in ALL)} (default: %(default)s)",
    )
    add_remote_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.viewers < 1 or args.storms < 1:
        parser.error("--viewers and --storms must be at least 1")
    try:
        systems = hubs.parse_systems(args.systems)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if LIVESELL in systems and not livesell_hub_available():
        parser.error("livesell's hub is not available in this checkout")
    if NODE_WS in systems and not install_node_peers():
        print("Node ws is skipped: node or npm is missing", file=sys.stderr)
        systems.remove(NODE_WS)
    remote = remote_viewers(parser, args)
    raise_open_files_limit()
    try:
        results = asyncio.run(
            run(systems, args.viewers, args.storms, lambda line: print(line, flush=True), remote)
        )
    except AgentUnreachable as exc:
        print(exc, file=sys.stderr)
        return 2
    print(report(results))
    return 0 if all(c.failed == 0 for c in results) else 1


if __name__ == "__main__":
    sys.exit(main())
