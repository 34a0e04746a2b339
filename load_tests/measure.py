"""Server-side accounting: CPU seconds (user + system) and RSS of a process tree, percentiles."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import psutil


class ProcessMeter:
    """CPU and memory of a server: its process and every child it forked (hub workers)."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_by_process(self) -> dict[int, float]:
        """Seconds of CPU (user + system) each live process of the tree has used so far."""
        seconds: dict[int, float] = {}
        for proc in self.processes():
            precise = _schedstat_seconds(proc.pid)
            if precise is not None:
                seconds[proc.pid] = precise
                continue
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            seconds[proc.pid] = times.user + times.system
        return seconds

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_process().values())

    def user_system_seconds(self) -> tuple[float, float]:
        """CPU seconds in user space and in the kernel, over the tree (10 ms ticks)."""
        user = system = 0.0
        for proc in self.processes():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            user += times.user
            system += times.system
        return user, system

    def rss_bytes(self) -> int:
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total


def _schedstat_seconds(pid: int) -> float | None:
    """Nanosecond CPU time of every thread of `pid` from the scheduler (user + system), where
    /proc/<pid>/stat would only give 10 ms ticks."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as handle:
                total += int(handle.read().split(maxsplit=1)[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    return {pid: after[pid] - before.get(pid, 0.0) for pid in after}


def percentile(values: Iterable[float], q: float, digits: int | None = None) -> float | None:
    """The q-th percentile (0–100) by nearest rank, rounded to `digits` if given; None for no
    values. The one percentile of every load test."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    value = float(ordered[min(rank, len(ordered)) - 1])
    return value if digits is None or math.isinf(value) else round(value, digits)


def latency_summary(latencies_us: list[int], undelivered: int = 0) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds. Events never delivered count as infinitely late, so a
    server that falls behind cannot report a good p99 by simply not delivering."""
    ordered = sorted(latencies_us)
    ordered_ms = [v / 1000 for v in ordered] + [math.inf] * undelivered
    summary: dict[str, float | None] = {
        f"p{q:g}_ms": _finite(percentile(ordered_ms, q)) for q in (50, 90, 99, 99.9)
    }
    summary["max_ms"] = _finite(ordered_ms[-1]) if ordered_ms else None
    summary["samples"] = float(len(ordered))
    summary["undelivered"] = float(undelivered)
    return summary


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: a percentile that lands on an undelivered event is None."""
    return None if value is None or math.isinf(value) else round(value, 3)


def cdf_points(latencies_us: list[int], points: int = 200) -> list[tuple[float, float]]:
    """(latency ms, fraction ≤ it), thinned to about `points` for the JSON and the chart."""
    ordered = sorted(latencies_us)
    if not ordered:
        return []
    step = max(1, len(ordered) // points)
    picked = [(ordered[i] / 1000, (i + 1) / len(ordered)) for i in range(0, len(ordered), step)]
    picked.append((ordered[-1] / 1000, 1.0))
    return picked
