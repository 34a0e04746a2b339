"""PNG charts of a result record (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {
    "livesell": "#d62728",
    "node-ws": "#1f77b4",
    "python-socketio": "#9467bd",
    "starlette": "#8c564b",
    "uvloop-floor": "#2ca02c",
}


def _systems(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: record
        for name, record in results.get("hubs", {}).get("systems", {}).items()
        if "error" not in record
    }


def latency_cdf(results: dict[str, Any], path: Path) -> Path | None:
    systems = _systems(results)
    if not systems:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for name, record in systems.items():
        fanouts = record.get("fanout", [])
        if fanouts:
            biggest = max(fanouts, key=lambda f: f["viewers"])
            _cdf(axes[0], biggest.get("cdf", []), name, f"@{biggest['viewers']}")
        mix = record.get("mix", {})
        share = mix.get("covered", 0) / mix["expected"] if mix.get("expected") else 0
        _cdf(axes[1], mix.get("cdf", []), name, f"({share:.0%} delivered)")
    axes[0].set_title("fan-out ticks, biggest viewer count")
    axes[1].set_title("flash-sale event mix (delivered events only)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency, ms (log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("fraction of events")
    fig.suptitle("Event latency CDF per system (publish → viewer)")
    return _save(fig, path)


def _cdf(ax: Any, points: list[list[float]], name: str, note: str) -> None:
    if not points:
        return
    xs = [max(p[0], 0.01) for p in points]
    ys = [p[1] for p in points]
    ax.plot(xs, ys, label=f"{name} {note}", color=COLOURS.get(name), linewidth=1.6)


def fanout_cost(results: dict[str, Any], path: Path) -> Path | None:
    systems = _systems(results)
    if not systems:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, record in systems.items():
        points = sorted(
            (f["viewers"], f["cpu_us_per_delivered"])
            for f in record.get("fanout", [])
            if f.get("cpu_us_per_delivered")
        )
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name, color=COLOURS.get(name))
    ax.set_xlabel("subscribed viewers")
    ax.set_ylabel("server CPU µs (user+sys) per delivered event (log)")
    ax.set_yscale("log")
    ax.set_title("Fan-out cost per delivered event vs viewers (lower is better)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path)


def event_mix(results: dict[str, Any], path: Path) -> Path | None:
    systems = {n: r for n, r in _systems(results).items() if r.get("mix")}
    if not systems:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = list(systems)
    values = [systems[n]["mix"]["events_per_cpu_s"] or 0 for n in names]
    bars = ax.bar(names, values, color=[COLOURS.get(n, "grey") for n in names])
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
    ax.set_ylabel("viewer-events covered per server CPU-second (log)")
    ax.set_yscale("log")
    ax.set_title("Flash-sale event mix to 5,000 viewers (higher is better)")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def flash_sale(results: dict[str, Any], path: Path) -> Path | None:
    """Attempts/s and latency of the buy path (livesell vs the PostgreSQL-only baseline)."""
    outcomes = results.get("flash_sale", {}).get("results")
    if not outcomes:
        return None
    names = [o["name"] for o in outcomes]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = [COLOURS.get(n, "#7f7f7f") for n in names]
    bars = left.bar(names, [o["attempts_per_s"] for o in outcomes], color=colours)
    left.bar_label(bars, labels=[f"{o['attempts_per_s']:,.0f}" for o in outcomes])
    left.set_ylabel("buy attempts per second")
    left.set_title("throughput (higher is better)")
    width = 0.35
    positions = range(len(names))
    for shift, key in ((-width / 2, "p50_ms"), (width / 2, "p99_ms")):
        values = [o[key] for o in outcomes]
        bars = right.bar([p + shift for p in positions], values, width, label=key[:3])
        right.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8)
    right.set_xticks(list(positions), names)
    right.set_ylabel("latency per attempt, ms")
    right.set_title("latency (lower is better)")
    right.legend()
    for ax in (left, right):
        ax.grid(True, axis="y", alpha=0.3)
    first = outcomes[0]
    flash = results["flash_sale"]
    rounds = len(flash.get("rounds") or [outcomes])
    which = (
        f" (round {flash.get('median_round')} of {rounds}: the median ratio)" if rounds > 1 else ""
    )
    fig.suptitle(
        f"Flash sale: {first['attempts']:,} buy attempts on one drop, "
        f"{flash.get('concurrency', '?')} connections{which}"
    )
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(results: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    drawn = [
        latency_cdf(results, directory / f"{stem}-latency-cdf.png"),
        fanout_cost(results, directory / f"{stem}-fanout-cost.png"),
        event_mix(results, directory / f"{stem}-event-mix.png"),
        flash_sale(results, directory / f"{stem}-flash-sale.png"),
    ]
    return [p for p in drawn if p is not None]
