"""Hub benchmarks: livesell's hub and the peers on the same viewers and the same messages.

Per system, on one server process pinned to core 0 (viewers, driver and Valkey on core 1):

- join storm: N viewers connect, subscribe and receive their snapshot, as fast as they can;
  three storms on the same server (all viewers closed between them), then, once every system
  has had its turn, three more on a fresh server, the systems in reverse order (so a drift of
  the machine over the run weighs on each alike); the median of the six reported. Before any
  of them, one storm to a throwaway server warms the viewer processes up;
- memory: RSS per idle subscribed viewer after the first storm;
- fan-out cost: server CPU µs (user + sys) per delivered event at each viewer count, with card
  pins spaced so each is its own broadcast;
- flash-sale event mix: a drop, 200 `stock.changed`/s, 50 `order.placed`/s, viewer counts 1/s,
  to 5,000 viewers: events covered per server CPU-second and end-to-end latency.

And for livesell alone, scaling: `livesell hub --workers 1` vs `--workers 2`, unpinned.

    python -m load_tests.hubs --systems livesell,uvloop-floor --quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from load_tests import publish
from load_tests.fleet import PROCESSES, Fleet, RemoteViewers, add_remote_arguments
from load_tests.measure import ProcessMeter, cdf_points, cpu_delta, latency_summary
from load_tests.profile import sampled
from load_tests.systems import (
    ALL,
    BY_NAME,
    CLIENT_CPUS,
    FLOOR,
    LIVESELL,
    Infra,
    Running,
    System,
    driver_off_server_core,
    serve,
)

Progress = Callable[[str], None]
BETWEEN_STORMS_S = 1.0  # the server lets go of the last storm's viewers


@dataclass(frozen=True)
class Plan:
    join_viewers: int = 10_000
    join_repeats: int = 3  # storms per server, the median reported (memory: after the first)
    # the storms are taken in passes over the servers, each pass on fresh servers and in the
    # reverse order of the one before: the machine's drift weighs on every server alike
    join_passes: int = 2
    fanout_viewers: tuple[int, ...] = (10_000, 5_000, 1_000)
    fanout_deliveries_per_s: int = 20_000  # events/s = this / viewers, so each is its own frame
    fanout_seconds: float = 4.0
    fanout_repeats: int = 3  # the machine is shared: the median of repeats resists noise
    mix_viewers: int = 5_000
    mix_seconds: float = 10.0
    drain_cap_s: float = 15.0
    scaling_viewers: int = 5_000
    scaling_rate: float = 100.0
    scaling_seconds: float = 6.0
    processes: int = PROCESSES
    sample_every: int = 10


FULL = Plan()
QUICK = Plan(
    join_viewers=5_000,
    fanout_viewers=(5_000, 1_000),
    fanout_seconds=2.0,
    fanout_repeats=1,
    mix_seconds=2.0,
    drain_cap_s=3.0,
    scaling_viewers=2_000,
    scaling_seconds=3.0,
)
SMOKE = Plan(
    join_viewers=20,
    join_repeats=1,
    fanout_viewers=(20,),
    fanout_deliveries_per_s=400,
    fanout_seconds=0.5,
    fanout_repeats=1,
    mix_viewers=20,
    mix_seconds=0.5,
    drain_cap_s=3.0,
    scaling_viewers=20,
    scaling_seconds=0.5,
    processes=1,
    sample_every=2,
)


@dataclass
class Window:
    """What one timed publication run measured."""

    published: int
    expected: int  # event × viewer deliveries a complete server makes
    delivered: int  # events the viewers received (coalesced ones count once)
    covered: int  # deliveries the viewers are up to date with (coalesced ones count in full)
    seconds: float
    server_cpu_s: float
    busiest_process_cpu_s: float
    viewer_cpu_s: float  # the viewer processes: near 1.0 per second means they were the limit
    publish_lag_s: float
    dropped: int
    latency: dict[str, float | None]
    cdf: list[tuple[float, float]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.covered >= self.expected


async def timed_run(
    fleet: Fleet,
    meter: ProcessMeter,
    sink: publish.Sink,
    timetable: publish.Timetable,
    viewers: int,
    plan: Plan,
) -> Window:
    """Publish `timetable`, wait until every viewer is up to date (or the cap), and measure."""
    await settle(fleet, plan.drain_cap_s)
    await fleet.reset()
    expected = len(timetable) * viewers
    viewers_before = await fleet.cpu_seconds()
    cpu_before = meter.cpu_by_process()
    started = time.monotonic()
    sent = await publish.play(sink, timetable)
    deadline = time.monotonic() + plan.drain_cap_s
    last, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        covered = (await fleet.stats()).covered(sent)
        if covered >= expected:
            break
        if covered != last:
            last, still_since = covered, time.monotonic()
        elif time.monotonic() - still_since > 3.0:
            break  # nothing moves any more: lost, not late
        await asyncio.sleep(0.05)
    seconds = time.monotonic() - started
    spent = cpu_delta(cpu_before, meter.cpu_by_process())
    viewer_cpu = await fleet.cpu_seconds() - viewers_before
    stats = await fleet.stats(latencies=True)
    covered = stats.covered(sent)
    latencies_us = stats.latencies_us(sent)
    sampled_missing = max(0, expected - covered) // plan.sample_every
    return Window(
        published=len(timetable),
        expected=expected,
        delivered=stats.delivered(sent),
        covered=min(covered, expected),
        seconds=round(seconds, 3),
        server_cpu_s=round(sum(spent.values()), 3),
        busiest_process_cpu_s=round(max(spent.values(), default=0.0), 3),
        viewer_cpu_s=round(viewer_cpu, 3),
        publish_lag_s=round(sent.lag_s, 3),
        dropped=stats.dropped,
        latency=latency_summary(latencies_us, sampled_missing),
        cdf=cdf_points(latencies_us),
    )


async def settle(fleet: Fleet, cap_s: float) -> None:
    """Wait until a server that fell behind has flushed its backlog (bounded by `cap_s`), so
    late events of one window are not counted in the next."""
    deadline = time.monotonic() + cap_s
    last = -1
    while time.monotonic() < deadline:
        events = (await fleet.stats()).events
        if events == last:
            return
        last = events
        await asyncio.sleep(0.5)


def make_sink(system: System, infra: Infra) -> publish.Sink:
    if system.sink == "socketio":
        return publish.SocketioSink(infra.redis_url, infra.channel)
    return publish.LuaSink(infra.redis_url, infra.channel)


async def join(
    fleet: Fleet, server: Running, meter: ProcessMeter, infra: Infra, count: int
) -> dict:
    viewers_before = await fleet.cpu_seconds()
    cpu_before = meter.cpu_seconds()
    result = await fleet.connect(server.port, server.system.dialect, infra.channel, count)
    cpu = meter.cpu_seconds() - cpu_before
    viewer_cpu = await fleet.cpu_seconds() - viewers_before
    return {
        "viewers": count,
        "joined": result.joined,
        "failed": result.failed,
        "seconds": round(result.seconds, 3),
        "joins_per_s": round(result.per_s, 1),
        "joins_per_s_per_process": round(result.per_s / server.system.workers, 1),
        "server_cpu_us_per_join": round(cpu * 1e6 / result.joined, 1) if result.joined else None,
        # the viewer processes' CPU over the storm's seconds: near 1.0 means they were the limit
        "viewer_cpu_s": round(viewer_cpu, 3),
        "server_cpu_s": round(cpu, 3),
        "errors": result.errors,
    }


async def join_storms(
    fleet: Fleet, server: Running, meter: ProcessMeter, infra: Infra, plan: Plan, number: int
) -> tuple[list[dict], int]:
    """`plan.join_repeats` storms on `server`, every viewer closed between them, the storms
    marked with pass `number`; and the server's RSS a second after the first storm, its
    viewers still in."""
    storms = []
    rss_after = 0
    for n in range(plan.join_repeats):
        if n:
            await fleet.trim(0)
            await asyncio.sleep(BETWEEN_STORMS_S)
        storm = await join(fleet, server, meter, infra, plan.join_viewers)
        storms.append({**storm, "pass": number})
        if n == 0:
            await asyncio.sleep(1.0)
            rss_after = meter.rss_bytes()
    return storms, rss_after


async def warm_fleet(infra: Infra, fleet: Fleet, viewers: int, progress: Progress) -> None:
    """One storm of `viewers` from the fleet to a throwaway server (the floor), measured by no
    one. The viewer processes' first storm costs them up to three times the CPU per join of
    their later ones (their heaps grow, every code path runs for the first time) and saturates
    their core, so the first server measured in a run would be measured against slower
    viewers than the others."""
    progress(f"warming the viewer processes: one storm of {viewers} viewers, not measured")
    with serve(FLOOR, infra, pin=True) as server:
        try:
            await fleet.connect(server.port, FLOOR.dialect, infra.channel, viewers)
        finally:
            await fleet.trim(0)
    await asyncio.sleep(BETWEEN_STORMS_S)


def join_record(storms: list[dict]) -> dict:
    """The median storm by joins/s (the machine is shared: the median resists noise; of an
    even count, the slower middle one); every storm kept, with its rate and CPU per join also
    listed, and the failures and errors of all of them."""
    ranked = sorted(storms, key=lambda s: s["joins_per_s"])
    record = dict(ranked[(len(ranked) - 1) // 2])
    record["storms"] = storms
    record["repeats_joins_per_s"] = [s["joins_per_s"] for s in storms]
    record["repeats_server_cpu_us_per_join"] = [s["server_cpu_us_per_join"] for s in storms]
    record["failed"] = sum(s["failed"] for s in storms)
    errors: dict[str, int] = {}
    for storm in storms:
        for reason, count in storm["errors"].items():
            errors[reason] = errors.get(reason, 0) + count
    record["errors"] = errors
    return record


async def bench_system(
    system: System,
    infra: Infra,
    fleet: Fleet,
    plan: Plan,
    progress: Progress,
    profile_dir: Path | None = None,
) -> dict:
    """Join storm, memory, fan-out at each viewer count and the event mix, on one server."""
    record: dict = {
        "system": system.name,
        "label": system.label,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }
    with serve(system, infra, pin=True) as server:
        meter = ProcessMeter(server.proc.pid)
        sink = make_sink(system, infra)
        try:
            rss_before = meter.rss_bytes()
            progress(
                f"{system.name}: join storm of {plan.join_viewers} viewers × {plan.join_repeats}"
            )
            with watch(server, profile_dir, "join") as where:
                storms, rss_after = await join_storms(fleet, server, meter, infra, plan, 1)
            record["join"] = join_record(storms)
            record["join"]["profile"] = where
            joined = storms[0]["joined"]
            record["memory"] = {
                "viewers": joined,
                "rss_before_mb": round(rss_before / 2**20, 1),
                "rss_after_mb": round(rss_after / 2**20, 1),
                "kb_per_viewer": round((rss_after - rss_before) / 1024 / joined, 2)
                if joined
                else None,
            }
            record["fanout"] = []
            for viewers in sorted(plan.fanout_viewers, reverse=True):
                have = await fleet.trim(viewers)
                if have < viewers:
                    more = await fleet.connect(
                        server.port, system.dialect, infra.channel, viewers - have
                    )
                    have += more.joined
                rate = min(40.0, plan.fanout_deliveries_per_s / viewers)
                count = max(5, int(rate * plan.fanout_seconds))
                progress(
                    f"{system.name}: fan-out of {count} events to {have} viewers"
                    f" × {plan.fanout_repeats}"
                )
                cards = publish.cards(str(infra.room_id), rate, count)
                windows = [
                    await timed_run(fleet, meter, sink, cards, have, plan)
                    for _ in range(plan.fanout_repeats)
                ]
                record["fanout"].append(fanout_record(have, rate, windows))
            have = await fleet.trim(plan.mix_viewers)
            if have < plan.mix_viewers:
                more = await fleet.connect(
                    server.port,
                    system.dialect,
                    infra.channel,
                    plan.mix_viewers - have,
                )
                have += more.joined
            timetable = publish.flash_sale_mix(str(infra.room_id), plan.mix_seconds)
            progress(f"{system.name}: flash-sale event mix ({len(timetable)} events) to {have}")
            with watch(server, profile_dir, "mix") as where:
                window = await timed_run(fleet, meter, sink, timetable, have, plan)
            record["mix"] = mix_record(have, window)
            record["mix"]["profile"] = where
            record["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
        finally:
            await sink.aclose()
            await fleet.trim(0)
    return record


@contextlib.contextmanager
def watch(server: Running, profile_dir: Path | None, phase: str) -> Iterator[dict[str, Any]]:
    """py-spy the server during `phase` when profiling is on (Python servers only)."""
    if profile_dir is None or server.system.name == "node-ws":
        yield {}
        return
    output = profile_dir / f"{server.system.name}-{phase}.txt"
    with sampled(server.proc.pid, output) as summary:
        yield summary


def fanout_record(viewers: int, rate: float, windows: list[Window]) -> dict:
    """The median repeat's cost; latency from the same repeat; every repeat's cost kept."""
    costs = [w.server_cpu_s * 1e6 / w.delivered if w.delivered else math.inf for w in windows]
    ranked = sorted(range(len(windows)), key=lambda i: costs[i])
    w = windows[ranked[(len(ranked) - 1) // 2]]
    return {
        "viewers": viewers,
        "events": w.published,
        "rate_per_s": round(rate, 2),
        "delivered": w.delivered,
        "expected": w.expected,
        "complete": all(x.complete for x in windows),
        "server_cpu_s": w.server_cpu_s,
        "viewer_cpu_s": w.viewer_cpu_s,
        "cpu_us_per_delivered": round(w.server_cpu_s * 1e6 / w.delivered, 2)
        if w.delivered
        else None,
        "repeats_cpu_us_per_delivered": [None if math.isinf(c) else round(c, 2) for c in costs],
        "latency": w.latency,
        "cdf": w.cdf,
        "dropped": sum(x.dropped for x in windows),
    }


def mix_record(viewers: int, w: Window) -> dict:
    return {
        "viewers": viewers,
        "events": w.published,
        "expected": w.expected,
        "covered": w.covered,
        "delivered": w.delivered,
        "complete": w.complete,
        "seconds": w.seconds,
        "server_cpu_s": w.server_cpu_s,
        "viewer_cpu_s": w.viewer_cpu_s,
        "events_per_cpu_s": round(w.covered / w.server_cpu_s) if w.server_cpu_s else None,
        "latency": w.latency,
        "cdf": w.cdf,
        "publish_lag_s": w.publish_lag_s,
        "dropped": w.dropped,
    }


async def bench_scaling(infra: Infra, fleet: Fleet, plan: Plan, progress: Progress) -> dict:
    """livesell's hub with 1 then 2 worker processes, unpinned, on the same workload."""
    fleet.pin(None)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    runs = []
    try:
        for workers in (1, 2):
            system = replace(LIVESELL, name=f"livesell-{workers}w", workers=workers)
            with serve(system, infra, pin=False) as server:
                meter = ProcessMeter(server.proc.pid)
                sink = make_sink(system, infra)
                try:
                    progress(f"scaling: {workers} hub worker(s), {plan.scaling_viewers} viewers")
                    joined = await join(fleet, server, meter, infra, plan.scaling_viewers)
                    count = int(plan.scaling_rate * plan.scaling_seconds)
                    timetable = publish.cards(str(infra.room_id), plan.scaling_rate, count)
                    w = await timed_run(fleet, meter, sink, timetable, joined["joined"], plan)
                finally:
                    await sink.aclose()
                    await fleet.trim(0)
            runs.append(
                {
                    "workers": workers,
                    "processes": len(meter.processes()) or workers,
                    "viewers": joined["joined"],
                    "join": joined,
                    "delivered": w.delivered,
                    "complete": w.complete,
                    "seconds": w.seconds,
                    "events_per_s": round(w.covered / w.seconds) if w.seconds else None,
                    "server_cpu_s": w.server_cpu_s,
                    "busiest_process_cpu_s": w.busiest_process_cpu_s,
                    "viewer_cpu_s": w.viewer_cpu_s,
                    # what the deployment delivers when its busiest process has a core to itself
                    "capacity_events_per_s": round(w.covered / w.busiest_process_cpu_s)
                    if w.busiest_process_cpu_s
                    else None,
                    "latency": w.latency,
                }
            )
    finally:
        fleet.pin(CLIENT_CPUS)
    one, two = runs
    return {
        "runs": runs,
        "events_per_s_ratio": _ratio(two["events_per_s"], one["events_per_s"]),
        "capacity_ratio": _ratio(two["capacity_events_per_s"], one["capacity_events_per_s"]),
    }


async def more_storms(
    record: dict,
    system: System,
    infra: Infra,
    fleet: Fleet,
    plan: Plan,
    progress: Progress,
    number: int,
) -> None:
    """Add join pass `number` to a system's record: a fresh server, the storms as in
    `bench_system` (one whose first pass failed is left as it is; a failed later pass is
    recorded and the storms before it stand)."""
    if "join" not in record:
        return
    progress(
        f"{system.name}: join storm of {plan.join_viewers} viewers × {plan.join_repeats},"
        f" pass {number}"
    )
    try:
        with serve(system, infra, pin=True) as server:
            try:
                meter = ProcessMeter(server.proc.pid)
                storms, _ = await join_storms(fleet, server, meter, infra, plan, number)
            finally:
                await fleet.trim(0)
    except Exception as exc:  # noqa: BLE001 - one broken peer must not sink the run
        progress(f"{system.name}: join pass {number} failed: {exc!r}")
        record["join"].setdefault("pass_errors", []).append(repr(exc))
        return
    before = record["join"]
    record["join"] = join_record([*before["storms"], *storms])
    record["join"]["profile"] = before["profile"]
    if "pass_errors" in before:
        record["join"]["pass_errors"] = before["pass_errors"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


async def run(
    systems: list[System],
    infra: Infra,
    plan: Plan,
    progress: Progress,
    *,
    scaling: bool,
    profile: tuple[str, ...] = (),
    profile_dir: Path | None = None,
    remote: RemoteViewers | None = None,
) -> dict:
    """Every hub dimension for `systems`; a system that fails is recorded with its error.
    Systems named in `profile` are sampled with py-spy during the join storm and the mix.
    With `remote`, the viewers run on another machine, and the servers listen on the address
    they dial."""
    fleet = Fleet.open(remote, plan.processes, sample_every=plan.sample_every, cpus=CLIENT_CPUS)
    results: dict = {"plan": asdict(plan), "systems": {}}
    if remote is not None:
        infra.host = remote.dial
        results["remote_viewers"] = remote.describe()
        progress(remote.describe())
    # the driver publishes from this process: keep it off the server's core too
    with driver_off_server_core():
        try:
            await warm_fleet(infra, fleet, plan.join_viewers, progress)
            for system in systems:
                try:
                    results["systems"][system.name] = await bench_system(
                        system,
                        infra,
                        fleet,
                        plan,
                        progress,
                        profile_dir if system.name in profile else None,
                    )
                except Exception as exc:  # noqa: BLE001 - one broken peer must not sink the run
                    progress(f"{system.name} failed: {exc!r}")
                    results["systems"][system.name] = {"system": system.name, "error": repr(exc)}
            for number in range(2, plan.join_passes + 1):
                order = systems if number % 2 else systems[::-1]
                for system in order:
                    await more_storms(
                        results["systems"][system.name],
                        system,
                        infra,
                        fleet,
                        plan,
                        progress,
                        number,
                    )
            if scaling:
                results["scaling"] = await bench_scaling(infra, fleet, plan, progress)
        finally:
            await fleet.close()
    return results


def parse_systems(text: str) -> list[System]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown systems {unknown}; choose from {list(BY_NAME)}")
    return [BY_NAME[n] for n in names]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="the short version (about 2 min)")
    parser.add_argument(
        "--systems",
        type=parse_systems,
        default=ALL,
        help=f"comma-separated subset of {','.join(BY_NAME)} (default: all)",
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the 1 vs 2 workers run")
    parser.add_argument(
        "--join-viewers",
        type=int,
        default=0,
        help="viewers in the join storm (and the memory row); default: the plan's",
    )
    add_remote_arguments(parser)
    parser.add_argument(
        "--profile",
        default="livesell",
        help="comma-separated Python systems to sample with py-spy during the join storm and "
        "the event mix ('' for none; default livesell)",
    )


if __name__ == "__main__":
    import sys

    from load_tests.runner import main

    sys.exit(main(only="hubs"))
