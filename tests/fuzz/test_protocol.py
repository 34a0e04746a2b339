"""The hub's decoder and command handling under arbitrary input: any bytes or JSON either decode
into commands or raise the protocol's bad-request error, and a live hub answers every frame with
a reply, an error reply or a close code, never an unexpected exception, and keeps serving."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from core.resources import Resources
from live.errors import HubBadRequest
from live.protocol import Command, decode_commands
from tests.fuzz.stats import record
from tests.live.conftest import open_raw, start_hub

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
METHODS = ["connect", "subscribe", "unsubscribe", "publish", "rpc", "history", "presence",
           "ping", "send", "refresh", "sub_refresh", "presence_stats", "frobnicate"]  # fmt: skip
command_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(min_value=-(2**70), max_value=2**70) | json_values,
        **{m: st.dictionaries(st.sampled_from(["channel", "token", "recover", "offset", "epoch",
                                               "flag", "data", "name"]), json_values, max_size=4)
           | json_values for m in METHODS},
    },
)  # fmt: skip
frames = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    st.lists(command_like, max_size=4).map(lambda cs: "\n".join(json.dumps(c) for c in cs)),
    st.lists(json_values, max_size=3).map(lambda vs: "\n".join(json.dumps(v) for v in vs)),
)


@settings(max_examples=1500, deadline=None, database=None)
@given(frames)
def test_decoder_yields_commands_or_a_protocol_error(frame: bytes | str) -> None:
    record("hub decoder")
    try:
        commands = decode_commands(frame)
    except HubBadRequest:
        return
    assert all(isinstance(c, Command) for c in commands)
    for c in commands:
        assert isinstance(c.id, int)


@pytest.mark.timeout(180)
async def test_a_live_hub_answers_arbitrary_frames_and_keeps_serving(resources: Resources) -> None:
    """Frames drawn by hypothesis, sent over real connections; after each, the connection
    either answered or closed with a protocol code, and a bystander is still served."""
    running, stop = await start_hub(resources)
    samples: list[Any] = []

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(frames, min_size=1, max_size=3))
    def collect(batch: list[Any]) -> None:
        samples.append(batch)

    collect()
    try:
        bystander = await open_raw(running.url)
        assert "connect" in await bystander.connect()
        outcomes: dict[str, int] = {}
        for batch in samples:
            viewer = await open_raw(running.url)
            if len(outcomes) % 2:
                await viewer.connect()  # half the frames arrive after a connect
            closed = None
            for frame in batch:
                try:
                    await viewer.ws.send(frame)
                except ConnectionClosed:
                    break
            try:
                while True:
                    await viewer.receive(timeout=0.1)
            except ConnectionClosed:
                closed = viewer.ws.close_code
            except TimeoutError:
                pass
            key = f"closed {closed}" if closed is not None else "open"
            outcomes[key] = outcomes.get(key, 0) + 1
            record("hub frames over WebSocket")
            assert closed is None or closed in (1009, 3501, 3502, 3013, 1000, 3500, 1007), closed
            await viewer.ws.close()
        # the hub is still whole: the bystander still gets its pings and can subscribe
        reply = await bystander.subscribe("room:1")
        assert "subscribe" in reply or reply["error"]["code"] in (100, 102), reply
        assert running.hub.sessions, "the bystander is still attached"
        await bystander.ws.close()
    finally:
        await stop()
    await asyncio.sleep(0)
