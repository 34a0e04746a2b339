"""The result record: targets checked, the printed table, the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NODE, FLOOR, LIVESELL = "node-ws", "uvloop-floor", "livesell"


def _fanout(record: dict[str, Any]) -> dict[int, float]:
    return {
        f["viewers"]: f["cpu_us_per_delivered"]
        for f in record.get("fanout", [])
        if f.get("cpu_us_per_delivered")
    }


def _nearest(values: dict[int, float], viewers: int) -> float | None:
    """The peer's figure at the same viewer count (join failures can leave a few short)."""
    if not values:
        return None
    best = min(values, key=lambda v: abs(v - viewers))
    return values[best] if abs(best - viewers) <= max(50, viewers // 50) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system per dimension, with ratios against Node ws and the uvloop floor."""
    systems: dict[str, dict[str, Any]] = results.get("hubs", {}).get("systems", {})
    node, floor = systems.get(NODE, {}), systems.get(FLOOR, {})
    out: list[dict[str, Any]] = []
    for name, record in systems.items():
        if "error" in record:
            out.append({"dimension": "all", "system": name, "value": None, "unit": record["error"]})
            continue
        for viewers, value in sorted(_fanout(record).items()):
            out.append(
                {
                    "dimension": f"fan-out cost @{viewers}",
                    "system": name,
                    "value": value,
                    "unit": "CPU µs/event",
                    "vs_node": _ratio(value, _nearest(_fanout(node), viewers)),
                    "vs_floor": _ratio(value, _nearest(_fanout(floor), viewers)),
                }
            )
        mix = record.get("mix", {})
        if mix:
            out.append(
                {
                    "dimension": f"event mix @{mix['viewers']}",
                    "system": name,
                    "value": mix["events_per_cpu_s"],
                    "unit": "events/CPU-s",
                    "vs_node": _ratio(
                        mix["events_per_cpu_s"], node.get("mix", {}).get("events_per_cpu_s")
                    ),
                    "vs_floor": _ratio(
                        mix["events_per_cpu_s"], floor.get("mix", {}).get("events_per_cpu_s")
                    ),
                }
            )
            p99 = mix["latency"].get("p99_ms")
            out.append(
                {
                    "dimension": "event mix p99",
                    "system": name,
                    "value": p99,
                    "unit": "ms" if p99 is not None else "ms (>1% never delivered)",
                }
            )
        join = record.get("join", {})
        if join:
            out.append(
                {
                    "dimension": f"join storm @{join['viewers']}",
                    "system": name,
                    "value": join["joins_per_s_per_process"],
                    "unit": f"joins/s/process, {join['failed']} failed",
                    "vs_node": _ratio(join["joins_per_s"], node.get("join", {}).get("joins_per_s")),
                    "vs_floor": _ratio(
                        join["joins_per_s"], floor.get("join", {}).get("joins_per_s")
                    ),
                }
            )
        memory = record.get("memory", {})
        if memory.get("kb_per_viewer") is not None:
            out.append(
                {
                    "dimension": "memory per idle viewer",
                    "system": name,
                    "value": memory["kb_per_viewer"],
                    "unit": "KB RSS",
                    "vs_node": _ratio(
                        memory["kb_per_viewer"], node.get("memory", {}).get("kb_per_viewer")
                    ),
                    "vs_floor": _ratio(
                        memory["kb_per_viewer"], floor.get("memory", {}).get("kb_per_viewer")
                    ),
                }
            )
    scaling = results.get("hubs", {}).get("scaling")
    if scaling:
        for run in scaling["runs"]:
            out.append(
                {
                    "dimension": f"scaling {run['workers']} worker(s)",
                    "system": LIVESELL,
                    "value": run["events_per_s"],
                    "unit": f"events/s (capacity {run['capacity_events_per_s']}/s)",
                }
            )
    for name in ("flash_sale", "attribution"):
        section = results.get(name, {})
        for key, value in section.get("figures", {}).items():
            out.append(
                {"dimension": f"{name} {key}", "system": LIVESELL, "value": value, "unit": ""}
            )
    return out


def _ceiling(floor_join: dict[str, Any], viewers: int, node_rate: float | None) -> str:
    """What the uvloop floor, which does next to nothing per join, reached against Node in the
    same run: when its viewers were busy the whole storm, no server could show more here."""
    vs_node = _ratio(floor_join.get("joins_per_s_per_process"), node_rate)
    if floor_join.get("viewers") != viewers or vs_node is None:
        return ""
    seconds = floor_join.get("seconds")
    busy = floor_join.get("viewer_cpu_s", 0) / seconds if seconds else 0.0
    return (
        f"the uvloop floor: {vs_node:.2f}× Node in this run, its viewers busy "
        f"{busy:.2f} of its storm (near 1: the viewers, not the server, set its pace)"
    )


def _clocks(results: dict[str, Any]) -> str:
    """With the viewers on another machine, a latency is one machine's clock against another's."""
    remote = results.get("hubs", {}).get("remote_viewers")
    return f"; viewers on another machine ({remote}): latency across two clocks" if remote else ""


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """livesell's benchmark targets, each with the measured value and whether it is met."""
    systems = results.get("hubs", {}).get("systems", {})
    ours = systems.get(LIVESELL)
    checks: list[dict[str, Any]] = []
    if not ours or "error" in ours:
        reason = (ours or {}).get("error", "livesell's hub was not measured")
        return [{"target": "every hub target", "met": False, "note": reason}]

    def check(target: str, value: Any, bound: float, *, most: bool, note: str = "") -> None:
        met = value is not None and (value <= bound if most else value >= bound)
        checks.append({"target": target, "value": value, "bound": bound, "met": met, "note": note})

    node, floor = systems.get(NODE, {}), systems.get(FLOOR, {})
    for viewers, value in sorted(_fanout(ours).items()):
        check(
            f"fan-out @{viewers} ≤ 1.0× Node ws",
            _ratio(value, _nearest(_fanout(node), viewers)),
            1.0,
            most=True,
        )
        check(
            f"fan-out @{viewers} ≤ 1.6× uvloop floor",
            _ratio(value, _nearest(_fanout(floor), viewers)),
            1.6,
            most=True,
        )
    mix = ours.get("mix", {})
    if mix:
        node_mix = node.get("mix", {}).get("events_per_cpu_s")
        check(
            "event mix ≥ 3× Node ws events/CPU-s",
            _ratio(mix["events_per_cpu_s"], node_mix),
            3.0,
            most=False,
        )
        check(
            "event mix p99 ≤ 250 ms",
            mix["latency"].get("p99_ms"),
            250.0,
            most=True,
            note=f"server CPU {mix['server_cpu_s']} s, viewers' CPU {mix.get('viewer_cpu_s')} s "
            f"in {mix['seconds']} s; {_hot(mix)}{_clocks(results)}",
        )
    join = ours.get("join", {})
    if join:
        per_join = join.get("server_cpu_us_per_join")
        capacity = f"{1e6 / per_join:,.0f}" if per_join else "?"
        storms = ", ".join(f"{r:,.0f}" for r in join.get("repeats_joins_per_s", []))
        node_join = node.get("join", {})
        node_rate = node_join.get("joins_per_s_per_process")
        if node_join.get("viewers") != join["viewers"]:
            node_rate = None  # storms of different sizes do not compare
        vs_node = _ratio(join["joins_per_s_per_process"], node_rate)
        note = (
            f"{join['viewers']} viewers, {join['joins_per_s_per_process']:,.0f} joins/s against "
            f"Node's {node_rate or 0:,.0f}, median of storms at {storms}; server CPU {per_join} "
            f"µs per join (Node {node_join.get('server_cpu_us_per_join')}) = {capacity} joins/s "
            f"per busy core; server CPU {join.get('server_cpu_s')} s, viewers' CPU "
            f"{join.get('viewer_cpu_s')} s in {join['seconds']} s; {_hot(join)}"
        )
        check("join storm ≥ 1.0× Node ws joins/s per process", vs_node, 1.0, most=False, note=note)
        check(
            "join storm ≥ 1.5× Node ws joins/s per process (goal)",
            vs_node,
            1.5,
            most=False,
            note=_ceiling(floor.get("join", {}), join["viewers"], node_rate),
        )
        check("join storm: none failed", join["failed"], 0, most=True)
    memory = ours.get("memory", {}).get("kb_per_viewer")
    node_memory = node.get("memory", {}).get("kb_per_viewer")
    check(
        "RSS per idle viewer ≤ 1.0× Node ws",
        _ratio(memory, node_memory),
        1.0,
        most=True,
        note=f"{memory} KB against Node's {node_memory}",
    )
    check("RSS per idle viewer ≤ 6 KB (goal)", memory, 6.0, most=True)
    scaling = results.get("hubs", {}).get("scaling")
    if scaling:
        one, two = scaling["runs"]
        busy = (
            f"1 worker: {one['server_cpu_s']} s CPU in {one['seconds']} s; 2 workers: "
            f"{two['server_cpu_s']} s, busiest {two['busiest_process_cpu_s']} s; viewers "
            f"{one['viewer_cpu_s']} / {two['viewer_cpu_s']} s"
        )
        check(
            "--workers 2 ≥ 1.6× one worker (wall events/s)",
            scaling["events_per_s_ratio"],
            1.6,
            most=False,
            note=busy,
        )
        check(
            "--workers 2 ≥ 1.6× one worker (capacity)",
            scaling["capacity_ratio"],
            1.6,
            most=False,
            note="capacity = events covered per CPU-second of the busiest worker",
        )
    flash = results.get("flash_sale", {})
    # every round counts for overselling and latency; the median round for the ratio
    every = [o for r in flash.get("rounds") or [flash.get("results", [])] for o in r]
    ours = [o for o in every if o.get("name") == LIVESELL]
    if ours:
        check(
            "flash sale: nothing oversold",
            max(o.get("oversold", 0) for o in ours),
            0,
            most=True,
            note=", ".join(f"{o.get('attempts_per_s')} attempts/s" for o in ours),
        )
        check(
            "flash sale p99 ≤ 200 ms per attempt",
            max(o.get("p99_ms", 0) for o in ours),
            200.0,
            most=True,
            note="the worst round",
        )
    speedup = flash.get("speedup")
    if speedup is not None:
        rounds = flash.get("speedups") or [speedup]
        check(
            "flash sale ≥ 5× the baseline's attempts/s",
            speedup,
            5.0,
            most=False,
            note="median of rounds " + ", ".join(f"{r}x" for r in rounds),
        )
    attribution = results.get("attribution", {})
    for key, met in attribution.get("met", {}).items():
        checks.append(
            {
                "target": f"attribution {key} (its own target)",
                "met": bool(met),
                "note": f"targets {attribution.get('targets')}",
            }
        )
    return checks


def _hot(section: dict[str, Any]) -> str:
    """The three functions the server spent most of its own time in, from py-spy."""
    hot = section.get("profile", {}).get("self", [])[:3]
    return "hot: " + ", ".join(f"{h['function']} {h['share']:.0%}" for h in hot) if hot else ""


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'dimension':<26} {'system':<16} {'value':>12}  {'vs Node ws':>10} {'vs floor':>9}  unit",
        "-" * 100,
    ]
    for row in rows(results):
        lines.append(
            f"{row['dimension']:<26} {row['system']:<16} {_cell(row['value']):>12}  "
            f"{_cell(row.get('vs_node')):>10} {_cell(row.get('vs_floor')):>9}  {row['unit']}"
        )
    lines.append("")
    lines.append("targets (livesell):")
    for t in results.get("targets", []):
        mark = "met " if t["met"] else "MISS"
        detail = f"{_cell(t.get('value'))} (bound {_cell(t.get('bound'))})" if "bound" in t else ""
        lines.append(f"  [{mark}] {t['target']}: {detail} {t.get('note', '')}".rstrip())
    return "\n".join(lines)


def markdown_table(results: dict[str, Any]) -> str:
    lines = [
        "| dimension | system | value | unit | vs Node ws | vs uvloop floor |",
        "|---|---|---:|---|---:|---:|",
    ]
    for row in rows(results):
        lines.append(
            f"| {row['dimension']} | {row['system']} | {_cell(row['value'])} | {row['unit']} | "
            f"{_cell(row.get('vs_node'))} | {_cell(row.get('vs_floor'))} |"
        )
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def markdown_targets(results: dict[str, Any]) -> str:
    lines = ["| target | measured | met | note |", "|---|---:|---|---|"]
    for t in results.get("targets", []):
        lines.append(
            f"| {t['target']} | {_cell(t.get('value'))} | {'yes' if t['met'] else '**no**'} | "
            f"{t.get('note', '')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m load_tests.report",
        description="Print a result file's table, and today's targets checked against it, as "
        "Markdown (for docs/benchmarks.md).",
    )
    parser.add_argument("result", type=Path, help="load_tests/results/<timestamp>.json")
    record = json.loads(parser.parse_args().result.read_text(encoding="utf-8"))
    record["targets"] = targets(record)  # today's targets, whichever the run itself checked
    print(markdown_table(record))
    print()
    print(markdown_targets(record))
