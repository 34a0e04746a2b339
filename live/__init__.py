"""Live rooms, host controls and the WebSocket hub that fans room events out to viewers.

Public surface: `routes()` for the API app, `run_hub(...)` for the runner, `run_hub_workers(...)`
for `livesell hub --workers N`, and the room events and snapshot other code may reuse.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from live.events import CardPinned, CardUnpinned, RoomEnded, RoomLive, ViewersChanged
from live.moderation import moderation_routes
from live.rooms import room_routes
from live.server import run_hub, run_hub_workers
from live.snapshot import RoomSnapshot, RoomView, room_snapshot

__all__ = [
    "CardPinned",
    "CardUnpinned",
    "RoomEnded",
    "RoomLive",
    "RoomSnapshot",
    "RoomView",
    "ViewersChanged",
    "room_snapshot",
    "routes",
    "run_hub",
    "run_hub_workers",
]


def routes() -> list[BaseRoute]:
    return [*room_routes(), *moderation_routes()]
