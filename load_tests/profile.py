"""Where a server's time goes: py-spy sampling a running process, summarised by function.

py-spy runs in non-blocking mode (it reads the target's memory without pausing it), on the
clients' core, so the measured server pays close to nothing for being watched.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def recorded(pid: int, output: Path) -> Iterator[None]:
    """Record `pid`'s collapsed stacks (py-spy's raw format) into `output` while the block
    runs; `python -m load_tests.profile_summary` reads the file."""
    spy = subprocess.Popen(
        [py_spy_path() or "py-spy", "record", "--pid", str(pid), "--format", "raw",
         "--rate", "250", "--nonblocking", "-o", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)  # let it attach before the load starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def py_spy_path() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def sampled(pid: int, output: Path, rate: int = 250) -> Iterator[dict[str, Any]]:
    """Sample `pid` (and its children) while the block runs; fill the yielded dict with the
    summary afterwards (empty when py-spy is unavailable)."""
    summary: dict[str, Any] = {}
    binary = py_spy_path()
    if binary is None:
        yield summary
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield summary
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        summary.update(summarise(output))


def summarise(path: Path, top: int = 12) -> dict[str, Any]:
    """Top functions by self time and by inclusive time, as shares of all samples."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return {}
    return {
        "samples": total,
        "file": str(path),
        "self": [{"function": f, "share": round(n / total, 3)} for f, n in own.most_common(top)],
        "inclusive": [
            {"function": f, "share": round(n / total, 3)} for f, n in inclusive.most_common(top)
        ],
    }


def _short(frame: str) -> str:
    """`send (websockets/asyncio/connection.py:123)` → `send (websockets/asyncio/connection.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    parts = Path(path).parts
    return f"{name} ({'/'.join(parts[-2:])})" if parts else name
