"""Counts of generated inputs per fuzz target, reported at the end of the session (the figures
docs/reliability.md quotes)."""

from __future__ import annotations

from collections import Counter

COUNTS: Counter[str] = Counter()


def record(target: str, n: int = 1) -> None:
    COUNTS[target] += n
