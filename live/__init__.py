"""Live rooms, host controls and the WebSocket hub that fans room events out to viewers."""

from __future__ import annotations

import asyncio

from starlette.routing import BaseRoute

from core.resources import Resources

__all__ = ["routes", "run_hub"]


def routes() -> list[BaseRoute]:
    return []


async def run_hub(res: Resources, *, host: str, port: int, stop: asyncio.Event) -> None:
    await stop.wait()
