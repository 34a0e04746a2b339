"""Catalog, flash drops, the buy path, holds, payments, delivery and refunds."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from starlette.routing import BaseRoute

from core.resources import Resources

__all__ = ["routes", "worker_tasks"]


def routes() -> list[BaseRoute]:
    return []


def worker_tasks(res: Resources) -> list[Coroutine[Any, Any, None]]:
    return []
