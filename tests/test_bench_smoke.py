"""A short run of the load-test harness itself: tiny scale, real servers, complete records.

No benchmark runs here (`make bench` does that); this proves the harness measures what it
claims, so a broken viewer, driver or report fails `make test` instead of a bench night.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from core.embedded import free_port
from core.events import Event
from core.settings import Settings
from load_tests import (
    charts,
    hubs,
    join_costs,
    join_path,
    publish,
    report,
    systems,
    viewer_agent,
)
from load_tests.fleet import (
    AgentUnreachable,
    Fleet,
    RemoteViewers,
    Stats,
    address,
    key_from_env,
)
from load_tests.viewers import (
    Counters,
    Viewer,
    ViewerProcess,
    dialect,
    hold_back_full_collections,
)


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        pass


def _frame(payload: bytes) -> bytes:
    assert len(payload) < 65_536
    if len(payload) < 126:
        return bytes((0x81, len(payload))) + payload
    return bytes((0x81, 126)) + len(payload).to_bytes(2, "big") + payload


def _push(event: Event, offset: int) -> bytes:
    """A publication as livesell's hub frames it."""
    data = msgspec.json.encode(event)
    return b'{"push":{"channel":"room:1","pub":{"data":%s,"offset":%d}}}' % (data, offset)


async def test_viewer_counts_batched_split_and_coalesced_pushes() -> None:
    counters = Counters()
    viewer = Viewer("h:1", dialect("centrifugo", "room:1"), counters, sampled=True)
    transport = _Transport()
    viewer.connection_made(transport)  # type: ignore[arg-type]
    timetable = publish.flash_sale_mix("1", duration_s=0.05)  # a drop, 10 stock, 2 orders
    offsets = iter(range(3, 100))
    sent = publish.Sent()
    events: dict[int, Event] = {}
    for _, event in timetable.entries:
        offset = next(offsets)
        events[offset] = event
        sent.at_ns[offset] = time.time_ns() - 5_000_000  # sent 5 ms ago
        if type(event).coalesce:
            sent.coalescable.append(offset)
    last_stock = sent.coalescable[-1]
    # the server merged the stock values: only the latest arrives, standing for all of them
    delivered = [o for o in sorted(events) if o not in sent.coalescable or o == last_stock]
    stream = (
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
        + _frame(b'{"id":1,"connect":{"client":"c"}}')
        + _frame(b'{"id":2,"subscribe":{"data":{"room":{"id":"1"}},"offset":2}}')
        + _frame(b"{}")  # a ping
        + _frame(_push(events[delivered[0]], delivered[0]))
        # one batched frame with the rest
        + _frame(b"\n".join(_push(events[o], o) for o in delivered[1:]))
    )
    for cut in range(0, len(stream), 7):  # TCP may split anywhere
        viewer.data_received(stream[cut : cut + 7])
    assert viewer.joined and viewer.done.result() is True
    assert transport.written[-1] == dialect("centrifugo", "room:1").pong, "ping answered"
    assert counters.events == len(delivered) == 4
    assert viewer.last_offset == max(delivered)

    process = ViewerProcess(sample_every=1)
    process.counters, process.viewers = counters, [viewer]
    viewer.transport = transport  # type: ignore[assignment]
    stats = Stats(**process.stats(latencies=True))  # type: ignore[arg-type]
    assert stats.delivered(sent) == 4
    assert stats.covered(sent) == len(timetable) == 13, "merged stock values count in full"
    latencies = stats.latencies_us(sent)
    assert len(latencies) == 4 and all(4_000 <= v < 1_000_000 for v in latencies)


async def test_viewer_reads_socketio_offsets() -> None:
    counters = Counters()
    viewer = Viewer("h:1", dialect("socketio", "room:1"), counters, sampled=False)
    viewer.connection_made(_Transport())  # type: ignore[arg-type]
    viewer.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
        + _frame(b'0{"sid":"a"}')
        + _frame(b"40")
        + _frame(b'431[{"ok":true}]')
        + _frame(b'42["pub", {"channel": "room:1", "pub": {"data": {}, "offset": 12}}]')
    )
    assert viewer.joined and counters.received == {12: 1} and viewer.last_offset == 12


async def test_viewer_reports_a_refused_subscription() -> None:
    counters = Counters()
    viewer = Viewer("h:1", dialect("centrifugo", "room:1"), counters, sampled=False)
    viewer.connection_made(_Transport())  # type: ignore[arg-type]
    viewer.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
        + _frame(b'{"id":1,"connect":{}}')
        + _frame(b'{"id":2,"error":{"code":102,"message":"unknown channel"}}')
    )
    assert viewer.done.result() is False
    assert counters.failed == 1 and counters.joined == 0


@pytest.mark.timeout(60)
async def test_harness_produces_a_complete_record(settings: Settings, tmp_path: Path) -> None:
    assert settings.redis_url and settings.database_url
    infra = systems.Infra(
        root=Path(tempfile.mkdtemp(prefix="bench-smoke-")),
        redis_url=settings.redis_url,
        database_url=settings.database_url,
        logs=tmp_path,
    )
    infra.room_id = await systems._seed_room(infra)
    chosen = [systems.FLOOR]
    if systems.livesell_hub_available():
        chosen.append(systems.LIVESELL)
    started = time.monotonic()
    lines: list[str] = []
    results = {"hubs": await hubs.run(chosen, infra, hubs.SMOKE, lines.append, scaling=False)}
    assert time.monotonic() - started < 30
    assert lines[0].startswith("warming the viewer processes")  # before any measured storm
    second = [line.split(":")[0] for line in lines if line.endswith("pass 2")]
    assert second == [s.name for s in reversed(chosen)]  # the second pass in reverse order

    for system in chosen:
        record = results["hubs"]["systems"][system.name]
        assert "error" not in record, record
        assert record["join"]["joined"] == 20 and record["join"]["failed"] == 0
        # one storm in each of two passes, each on its own server
        assert [s["pass"] for s in record["join"]["storms"]] == [1, 2]
        assert all(s["joined"] == 20 for s in record["join"]["storms"])
        assert all(cpu > 0 for cpu in record["join"]["repeats_server_cpu_us_per_join"])
        assert record["memory"]["kb_per_viewer"] is not None
        (fanout,) = record["fanout"]
        assert fanout["complete"] and fanout["delivered"] == fanout["expected"] > 0
        assert fanout["cpu_us_per_delivered"] > 0
        assert fanout["latency"]["p99_ms"] is not None and fanout["latency"]["p99_ms"] < 5_000
        mix = record["mix"]
        assert mix["complete"], mix
        assert mix["covered"] == mix["expected"] == mix["events"] * 20
        assert mix["events_per_cpu_s"] > 0 and mix["cdf"]

    results["targets"] = report.targets(results)
    written = json.loads(json.dumps(results, allow_nan=False))
    assert set(written["hubs"]["systems"]) == {s.name for s in chosen}
    table = report.table(results)
    assert "fan-out cost @20" in table and "uvloop-floor" in table
    pictures = charts.draw_all(results, tmp_path, "smoke")
    assert len(pictures) == 3
    assert all(p.stat().st_size > 10_000 for p in pictures)


@pytest.mark.timeout(60)
async def test_join_path_times_each_step_of_joins_that_were_all_answered(
    settings: Settings, tmp_path: Path
) -> None:
    assert settings.redis_url and settings.database_url
    infra = systems.Infra(
        root=tmp_path, redis_url=settings.redis_url, database_url=settings.database_url
    )
    infra.room_id = await systems._seed_room(infra)
    lines: list[str] = []
    rounds = await join_path.measure_on(infra, 40, 2, lines.append)  # raises if one is unanswered
    assert [r.viewers for r in rounds] == [40, 40]
    for r in rounds:
        assert set(r.step_ns) == set(join_path.STEPS)
        assert all(ns > 0 for ns in r.step_ns.values())
        assert 0 <= r.waited <= 40
        assert r.total_us == pytest.approx(sum(r.step_ns.values()) / 40 / 1000)
    assert [line.split()[0] for line in lines] == ["1", "2"]
    waits = await join_path.cold_joins_on(infra, 3)  # raises if one is unanswered
    assert len(waits) == 3 and all(0 < wait < 5 for wait in waits)


def _hub_record(joins_per_s: float, viewers: int, kb_per_viewer: float) -> dict[str, Any]:
    join = {
        "viewers": viewers,
        "joins_per_s_per_process": joins_per_s,
        "failed": 0,
        "seconds": 1.0,
        "server_cpu_us_per_join": 100.0,
    }
    return {"join": join, "memory": {"kb_per_viewer": kb_per_viewer}}


@pytest.mark.parametrize(
    ("ours", "node_viewers", "met", "goal_met"),
    [
        (6_000.0, 10_000, True, False),  # 1.2× Node's
        (4_800.0, 10_000, False, False),  # 0.96×
        (7_500.0, 10_000, True, True),  # 1.5×
        (9_000.0, 5_000, False, False),  # Node joined a storm of another size: no ratio
    ],
)
def test_the_join_target_is_a_ratio_to_node_in_a_storm_of_the_same_size(
    ours: float, node_viewers: int, met: bool, goal_met: bool
) -> None:
    results = {
        "hubs": {
            "systems": {
                "livesell": _hub_record(ours, 10_000, 3.9),
                "node-ws": _hub_record(5_000.0, node_viewers, 6.4),
            }
        }
    }
    checked = {t["target"]: t for t in report.targets(results)}
    assert checked["join storm ≥ 1.0× Node ws joins/s per process"]["met"] is met
    assert checked["join storm ≥ 1.5× Node ws joins/s per process (goal)"]["met"] is goal_met
    assert checked["join storm ≥ 1.5× Node ws joins/s per process (goal)"]["note"] == ""
    assert checked["RSS per idle viewer ≤ 1.0× Node ws"]["value"] == 0.61
    assert checked["RSS per idle viewer ≤ 1.0× Node ws"]["met"]
    assert checked["RSS per idle viewer ≤ 6 KB (goal)"]["met"]


def test_the_join_goal_says_how_far_the_floor_got_against_node() -> None:
    floor = _hub_record(6_600.0, 10_000, 1.2)
    floor["join"]["viewer_cpu_s"] = 0.99
    results = {
        "hubs": {
            "systems": {
                "livesell": _hub_record(5_500.0, 10_000, 3.9),
                "node-ws": _hub_record(5_000.0, 10_000, 6.4),
                "uvloop-floor": floor,
            }
        }
    }
    checked = {t["target"]: t for t in report.targets(results)}
    goal = checked["join storm ≥ 1.5× Node ws joins/s per process (goal)"]
    assert not goal["met"]
    assert goal["note"].startswith(
        "the uvloop floor: 1.32× Node in this run, its viewers busy 0.99"
    )
    floor["join"]["viewers"] = 5_000
    checked = {t["target"]: t for t in report.targets(results)}
    assert checked["join storm ≥ 1.5× Node ws joins/s per process (goal)"]["note"] == ""


def test_latency_measured_by_viewers_on_another_machine_says_so() -> None:
    ours = _hub_record(6_000.0, 10_000, 3.9)
    ours["mix"] = {
        "events_per_cpu_s": 900.0,
        "latency": {"p99_ms": 12.0},
        "server_cpu_s": 1.0,
        "viewer_cpu_s": 2.0,
        "seconds": 10.0,
    }
    results: dict[str, Any] = {"hubs": {"systems": {"livesell": ours}}}

    def p99_note() -> str:
        checked = {t["target"]: t for t in report.targets(results)}
        return str(checked["event mix p99 ≤ 250 ms"]["note"])

    assert "clock" not in p99_note()
    results["hubs"]["remote_viewers"] = "4 viewer processes at 10.0.0.2:7070, dialling 10.0.0.1"
    assert p99_note().endswith(
        "; viewers on another machine (4 viewer processes at 10.0.0.2:7070, dialling 10.0.0.1):"
        " latency across two clocks"
    )


def test_join_costs_reads_perf_counts_and_reports_them_per_join() -> None:
    perf_output = (
        "# started on Sun Dec  6 23:11:32 2026\n\n"
        "104035,,syscalls:sys_enter_write,3592200765,100.00,,\n"
        "0,,syscalls:sys_enter_writev,3592200765,100.00,,\n"
        "<not counted>,,syscalls:sys_enter_futex,0,0.00,,\n"
        "688163,,raw_syscalls:sys_enter,3592200765,100.00,,\n"
    )
    counts = join_costs.parse_perf_stat(perf_output)
    assert counts == {"write": 104_035, "writev": 0, "total": 688_163}
    storm = join_costs.Storm
    livesell = join_costs.Costs(
        "livesell",
        [storm(8_000, 100.0, 70.0, 30.0), storm(9_000, 90.0, 60.0, 30.0), storm(1, 500, 400, 100)],
        joined=30_000,
        calls=counts,
    )
    node = join_costs.Costs(
        "node-ws",
        [storm(10_000, 80.0, 56.0, 24.0)] * 3,
        joined=30_000,
        calls={"total": 402_672, "write": 30_541, "writev": 60_000},
    )
    floor = join_costs.Costs("uvloop-floor", [storm(12_000, 40.0, 20.0, 20.0)], joined=10_000)
    floor.why_not_counted = "no perf command"
    lines = join_costs.report([livesell, node, floor]).splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.strip()}
    # the median storm's figures, each against Node's, then the failed joins
    assert rows["livesell"] == [
        "8,000",
        "(0.80×)",
        "100.0",
        "(1.25×)",
        "70.0",
        "(1.25×)",
        "30.0",
        "(1.25×)",
        "0",
    ]
    calls = {name: rows[name] for name in ("total", "write", "writev")}
    assert calls["total"] == ["22.94", "13.42"]
    assert calls["write"] == ["3.47", "1.02"]
    assert calls["writev"] == ["0.00", "2.00"]
    assert "uvloop-floor: system calls not counted (no perf command)" in lines


@pytest.mark.timeout(120)
async def test_join_costs_splits_a_real_storm() -> None:
    results = await join_costs.run([systems.LIVESELL], 20, 2, lambda _: None)
    (costs,) = results
    assert costs.joined == 40 and costs.failed == 0
    assert len(costs.storms) == 2
    assert all(s.joins_per_s > 0 and s.cpu_us > 0 for s in costs.storms)
    if costs.calls is None:  # no perf here, or no leave to read tracepoints: it says why
        assert costs.why_not_counted
    else:
        assert costs.calls["total"] > 0
        assert costs.per_join("accept4") == pytest.approx(1.0)


AGENT_KEY = b"bench-key-of-this-test-0123456789"


@contextlib.contextmanager
def _viewer_agent(runs: int) -> Iterator[tuple[tuple[str, int], list[str]]]:
    """A viewer agent serving `runs` driver connections on loopback (in a thread; its viewer
    processes are real processes), and what it said."""
    listen = ("127.0.0.1", free_port())
    said: list[str] = []
    thread = threading.Thread(
        target=viewer_agent.serve, args=(listen, AGENT_KEY, None, said.append, runs), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not said and time.monotonic() < deadline:
        time.sleep(0.01)
    assert said == [f"viewer agent listening on 127.0.0.1:{listen[1]}"]
    yield listen, said
    thread.join(timeout=20)
    assert not thread.is_alive()


async def test_join_costs_drives_viewers_a_viewer_agent_started() -> None:
    """With the viewers on another machine, the agent starts them and the driver's storms
    reach the servers at the address it dials (here loopback, over real TCP to the agent)."""
    with _viewer_agent(runs=2) as (agent, said):
        remote = RemoteViewers(agent, AGENT_KEY, "127.0.0.1", processes=2)
        progress: list[str] = []
        results = await join_costs.run(
            [systems.FLOOR, systems.LIVESELL], 20, 1, progress.append, remote
        )
    started = [line for line in said if line.startswith("viewer process ")]
    assert len(started) == 2  # the driver's two processes, both the agent's
    assert f"2 viewer processes at 127.0.0.1:{agent[1]}, dialling 127.0.0.1" in progress
    for costs in results:
        assert costs.joined == 20 and costs.failed == 0, costs
        assert all(s.joins_per_s > 0 and s.cpu_us > 0 for s in costs.storms)


async def test_a_remote_fleet_reports_its_cpu_and_a_wrong_key_is_refused() -> None:
    with _viewer_agent(runs=1) as (agent, said):  # the refused connection is not a run
        with pytest.raises(AgentUnreachable, match="AuthenticationError"):
            Fleet.remote(RemoteViewers(agent, b"another-key-0123456789", "127.0.0.1", 1))
        fleet = Fleet.remote(RemoteViewers(agent, AGENT_KEY, "127.0.0.1", 1))
        try:
            assert fleet.procs == [] and fleet.pids == []  # none of them here
            first = await fleet.cpu_seconds()
            assert first > 0  # the viewer process's own CPU, as it counts it
            assert await fleet.trim(0) == 0
        finally:
            await fleet.close()
    assert any(line.startswith("refused a connection") for line in said)


def test_the_agent_and_the_driver_refuse_unusable_settings() -> None:
    with pytest.raises(ValueError, match="LIVESELL_BENCH_KEY"):
        key_from_env({"LIVESELL_BENCH_KEY": "short"})
    assert key_from_env({"LIVESELL_BENCH_KEY": "k" * 16}) == b"k" * 16
    assert address("10.0.0.2:7070") == ("10.0.0.2", 7070)
    assert address("[fd00::2]:7070") == ("fd00::2", 7070)
    for bad in ("10.0.0.2", "10.0.0.2:0", ":7070", "host:http"):
        with pytest.raises(argparse.ArgumentTypeError):
            address(bad)
    with pytest.raises(AgentUnreachable, match="ConnectionRefusedError"):
        Fleet.remote(RemoteViewers(("127.0.0.1", free_port()), AGENT_KEY, "127.0.0.1", 1))
    env = {k: v for k, v in os.environ.items() if k != "LIVESELL_BENCH_KEY"}
    for command, args, says in [
        ("join_costs", ["--fleet", "127.0.0.1:7070"], "--fleet needs --dial"),
        ("join_costs", ["--dial", "127.0.0.1"], "--dial goes with --fleet"),
        ("join_costs", ["--fleet", "127.0.0.1:7070", "--dial", "::1"], "LIVESELL_BENCH_KEY"),
        ("hubs", ["--fleet", "127.0.0.1:7070"], "--fleet needs --dial"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", f"load_tests.{command}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 2 and says in done.stderr, done.stderr
    keyed = {**env, "LIVESELL_BENCH_KEY": AGENT_KEY.decode()}
    for args, environ, says in [
        ([], env, "LIVESELL_BENCH_KEY"),
        (["--cpus", "1,x"], keyed, "expected core numbers such as 2,3"),
        (["--listen", "0.0.0.0"], keyed, "expected HOST:PORT"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "load_tests.viewer_agent", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=environ,
        )
        assert done.returncode == 2 and says in done.stderr, done.stderr


def _full_collections_while_keeping(objects: int) -> int:
    """CPython's full collections while `objects` tracked objects are made and all kept."""
    before = gc.get_stats()[2]["collections"]
    kept = [[object()] for _ in range(objects)]
    made = gc.get_stats()[2]["collections"] - before
    del kept
    return made


def test_viewer_processes_make_no_full_collection_while_joining() -> None:
    """A viewer process holds back CPython's full collections (they stalled storms); its young
    collections go on."""
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()  # what pytest holds is not the viewers'
    try:
        assert _full_collections_while_keeping(200_000) > 0  # CPython's own, by default
        hold_back_full_collections()
        assert gc.get_threshold()[:2] == threshold[:2]
        young = gc.get_stats()[0]["collections"]
        assert _full_collections_while_keeping(200_000) == 0
        assert gc.get_stats()[0]["collections"] > young
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two CPUs to pin to one of them",
)
def test_a_process_tree_is_pinned_with_its_children(tmp_path: Path) -> None:
    """PostgreSQL is pinned off the server's core with the background processes it started."""
    # the harness runs above (`hubs.run`, `join_costs.run`) pin this process while they run
    # and must give it its cores back
    assert len(os.sched_getaffinity(0)) >= 2
    script = (
        "import subprocess\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        try:
            pid_file = tmp_path / "postmaster.pid"
            pid_file.write_text(f"{parent.pid}\n/some/data/dir\n")
            one = [min(os.sched_getaffinity(0))]
            assert os.sched_getaffinity(child) != set(one)
            systems.pin_process_tree(pid_file, one)
            assert os.sched_getaffinity(parent.pid) == set(one)
            assert os.sched_getaffinity(child) == set(one)
        finally:
            os.kill(child, signal.SIGKILL)  # the parent reaps it and ends


LOAD_TESTS = sorted(
    p.stem
    for p in (Path(__file__).resolve().parent.parent / "load_tests").glob("*.py")
    if not p.stem.startswith("_")
)


@pytest.mark.parametrize("name", LOAD_TESTS)
def test_every_load_test_imports_and_helps(name: str) -> None:
    """Each load test at least imports and, when it is a command, prints its --help (a name
    moved out from under one fails here, not on a bench night)."""
    import importlib
    import subprocess
    import sys

    module = importlib.import_module(f"load_tests.{name}")
    if not any(hasattr(module, entry) for entry in ("main", "build_parser")):
        return
    command = "load_tests" if name == "runner" else f"load_tests.{name}"  # `python -m load_tests`
    done = subprocess.run(
        [sys.executable, "-m", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout.lower(), done.stdout
