"""`python -m load_tests`: every benchmark in one bounded run, a table, JSON and charts.

On loopback unless `--fleet` names a viewer agent on another machine (`load_tests.viewer_agent`):
then the hub section's viewers run there. Servers, viewers and the embedded Valkey / PostgreSQL
all stop by themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from load_tests import charts, hubs, report, systems
from load_tests.fleet import AgentUnreachable, remote_viewers
from load_tests.viewers import raise_open_files_limit

RESULTS = Path(__file__).resolve().parent / "results"
# the benchmarks other packages own, run through their own command lines
SECTIONS = {"flash_sale": "load_tests.flash_sale", "attribution": "load_tests.attribution"}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _node_version(),
        "pinning": "server on core 0; viewers, driver and Valkey on core 1 (scaling: unpinned)",
        # the machine is shared: other work running during the bench shows here
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def _node_version() -> str | None:
    import shutil
    import subprocess

    if shutil.which("node") is None:
        return None
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests" + (f".{only}" if only else ""),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hubs.add_arguments(parser)
    if only is None:
        parser.add_argument(
            "--only",
            default="hubs,flash_sale,attribution",
            help="comma-separated benchmarks to run: hubs, flash_sale, attribution",
        )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where JSON and PNGs go")
    parser.add_argument(
        "--time-limit", type=float, help="stop after this many seconds (default 420 quick, 1200)"
    )
    return parser


async def run(args: argparse.Namespace, only: set[str]) -> dict[str, Any]:
    plan = hubs.QUICK if args.quick else hubs.FULL
    if args.join_viewers:
        plan = dataclasses.replace(plan, join_viewers=args.join_viewers)
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
    }
    chosen: list[systems.System] = list(args.systems)
    skipped: dict[str, str] = {}
    if systems.LIVESELL in chosen and not systems.livesell_hub_available():
        chosen.remove(systems.LIVESELL)
        skipped["livesell"] = "the live package serves no hub yet (live.run_hub_workers missing)"
    if systems.NODE_WS in chosen and not systems.install_node_peers():
        chosen.remove(systems.NODE_WS)
        skipped["node-ws"] = "node or npm is not available"
    async with systems.infrastructure() as infra:
        if "hubs" in only:
            scaling = not args.no_scaling and systems.LIVESELL in chosen
            profile = tuple(n.strip() for n in args.profile.split(",") if n.strip())
            results["hubs"] = await hubs.run(
                chosen,
                infra,
                plan,
                progress,
                scaling=scaling,
                profile=profile,
                profile_dir=args.out / f"profiles-{args.stamp}",
                remote=args.remote,
            )
            results["hubs"]["skipped"] = skipped
        for section, module_name in SECTIONS.items():
            if section not in only:
                continue
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError:
                results[section] = {"status": "not available", "reason": f"{module_name} missing"}
                continue
            progress(f"{section}: running {module_name}")
            results[section] = await run_section(section, module, args.quick)
    return results


async def run_section(section: str, module: Any, quick: bool) -> dict[str, Any]:
    """Run another package's benchmark through its own command line (`--quick` passed through),
    on its own servers, and keep the JSON report it writes whole."""
    output = Path(tempfile.mkdtemp(prefix=f"bench-{section}-")) / f"{section}.json"
    argv = [sys.executable, "-m", module.__name__, *(["--quick"] if quick else [])]
    if section == "attribution":
        argv += ["--json", str(output)]
    else:  # flash_sale writes its report beside the suite's results
        output = Path(module.RESULTS) / "flash_sale.json"
        output.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        proc.terminate()
        await proc.wait()
        raise
    try:
        section_report: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        progress(f"{section} wrote no report (exit {code}): {exc!r}")
        return {"status": "failed", "exit_code": code, "error": repr(exc)}
    section_report["exit_code"] = code
    section_report["figures"] = figures(section, section_report)
    return section_report


def figures(section: str, section_report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a section for the table."""
    if section == "attribution":
        clicks = section_report.get("clicks", {})
        purchases = section_report.get("purchase_to_dashboard", {})
        latency = purchases.get("latency_ms", {})
        return {
            "clicks/s": clicks.get("clicks_per_s"),
            "click p99 ms": clicks.get("latency_ms", {}).get("p99"),
            "purchase→dashboard p50 ms": latency.get("p50"),
            "purchase→dashboard p99 ms": latency.get("p99"),
            "first purchases p99 ms": (section_report.get("first_purchases") or {})
            .get("latency_ms", {})
            .get("p99"),
        }
    out: dict[str, Any] = {}
    for result in section_report.get("results", []):
        name = result["name"]
        out[f"{name} attempts/s"] = result["attempts_per_s"]
        out[f"{name} p50 ms"] = result["p50_ms"]
        out[f"{name} p99 ms"] = result["p99_ms"]
        out[f"{name} oversold"] = result["oversold"]
    if "speedup" in section_report:
        out["livesell / baseline attempts/s"] = section_report["speedup"]
    if "server_cpu_ratio" in section_report:
        out["baseline / livesell server CPU per attempt"] = section_report["server_cpu_ratio"]
    return out


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None, only: str | None = None) -> int:
    parser = build_parser(only)
    args = parser.parse_args(argv)
    args.remote = remote_viewers(parser, args)
    chosen = {only} if only else {s.strip() for s in args.only.split(",") if s.strip()}
    args.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    raise_open_files_limit()
    # `timeout`, CI or a terminal closing: unwind so servers and viewers are stopped
    signal.signal(signal.SIGTERM, _exit_on_signal)
    limit = args.time_limit or (420.0 if args.quick else 1200.0)
    started = time.monotonic()
    try:
        results = asyncio.run(asyncio.wait_for(run(args, chosen), timeout=limit))
    except TimeoutError:
        print(f"load_tests: stopped at the {limit:.0f}s time limit", file=sys.stderr)
        return 1
    except AgentUnreachable as exc:
        print(f"load_tests: {exc}", file=sys.stderr)
        return 2
    results["seconds"] = round(time.monotonic() - started, 1)
    results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["targets"] = report.targets(results)
    path = report.write_json(results, args.out / f"{args.stamp}.json")
    pictures = charts.draw_all(results, args.out, args.stamp)
    print()
    print(report.table(results))
    print()
    print(f"results: {path}")
    for picture in pictures:
        print(f"chart:   {picture}")
    return 0
