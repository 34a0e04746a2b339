"""The Python hub people pick: python-socketio's ASGI server under uvicorn, with its Redis
manager, so a publish from another process pays the same Redis hop as livesell's.

    python -m load_tests.peers.socketio_hub --port 9000 --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import msgspec
import socketio
import uvicorn

from load_tests.peers.common import SNAPSHOT, arguments

SNAPSHOT_DATA = msgspec.json.decode(SNAPSHOT)


def create_app(redis_url: str) -> socketio.ASGIApp:
    server = socketio.AsyncServer(
        async_mode="asgi", client_manager=socketio.AsyncRedisManager(redis_url)
    )

    @server.on("join")  # type: ignore[misc]
    async def join(sid: str, channel: str) -> dict[str, object]:
        await server.enter_room(sid, channel)
        return SNAPSHOT_DATA  # type: ignore[no-any-return]

    return socketio.ASGIApp(server)


if __name__ == "__main__":
    args = arguments(__doc__ or "")
    uvicorn.run(
        create_app(args.redis), host=args.host, port=args.port, log_level="warning", backlog=4096
    )
