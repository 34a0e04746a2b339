"""What a new team writes first: a Starlette WebSocket endpoint under uvicorn, and a Redis
listener that awaits `send_text` for each viewer in turn.

    python -m load_tests.peers.starlette_ws --port 9000 --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from load_tests.peers.common import arguments, pubsub_name, push, replies


def create_app(redis_url: str, channel: str) -> Starlette:
    viewers: set[WebSocket] = set()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                answers, subscribed = replies(text.encode(), channel)
                if answers:
                    await websocket.send_text(b"\n".join(answers).decode())
                if subscribed:
                    viewers.add(websocket)
        except WebSocketDisconnect:
            pass
        finally:
            viewers.discard(websocket)

    async def relay() -> None:
        client = aioredis.Redis.from_url(redis_url)
        async with client.pubsub() as pubsub:
            await pubsub.ssubscribe(pubsub_name(channel))
            async for message in pubsub.listen():
                if message["type"] != "smessage":
                    continue
                text = push(message["data"], channel).decode()
                for websocket in list(viewers):
                    try:
                        await websocket.send_text(text)
                    except Exception:  # noqa: BLE001 - a gone viewer must not stop the relay
                        viewers.discard(websocket)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(relay())
        yield
        task.cancel()

    return Starlette(routes=[WebSocketRoute("/connection/websocket", endpoint)], lifespan=lifespan)


if __name__ == "__main__":
    args = arguments(__doc__ or "")
    uvicorn.run(
        create_app(args.redis, args.channel),
        host=args.host,
        port=args.port,
        log_level="warning",
        backlog=4096,
    )
