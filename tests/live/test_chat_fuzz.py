"""The publish command under arbitrary input: whatever a signed-in, subscribed client sends as
`publish`, the hub answers with an accepted publish or a refusal code, never an unexpected
exception, and a bystander in the same chat keeps being served."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from core.resources import Resources
from tests.fuzz.test_protocol import json_values
from tests.live.conftest import RawClient, Room, open_raw, start_hub
from tests.live.test_chat import token

texts = st.text(max_size=300) | st.binary(max_size=50).map(lambda b: b.decode("latin-1"))
publish_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "channel": st.sampled_from(["chat:{room}", "chat:0", "chat:01", "room:{room}", ""])
            | st.text(max_size=12),
            "data": json_values
            | st.fixed_dictionaries({"text": texts}, optional={"user": json_values}),
        },
    ),
)


@pytest.mark.timeout(180)
async def test_publish_answers_arbitrary_bodies_and_keeps_serving(
    resources: Resources, room: Room
) -> None:
    running, stop = await start_hub(resources)
    samples: list[Any] = []

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(publish_bodies)
    def collect(body: Any) -> None:
        samples.append(body)

    collect()
    try:

        async def fuzzing_client() -> RawClient:
            client = await open_raw(running.url)
            await client.connect(token(resources, "fuzz"))
            await client.subscribe(f"chat:{room.id}")
            return client

        fuzzer = await fuzzing_client()
        bystander = await open_raw(running.url)
        await bystander.connect(token(resources, "by"))
        await bystander.subscribe(f"chat:{room.id}")
        answered = 0
        for body in samples:
            if isinstance(body, dict) and isinstance(body.get("channel"), str):
                body = {**body, "channel": body["channel"].replace("{room}", room.id)}
            command_id = await fuzzer.send(publish=body)
            try:
                reply = await fuzzer.reply(command_id)
            except ConnectionClosed:
                # a command that does not decode (an integer past 64 bits) closes 3501, as
                # for every other method; the client connects again
                assert fuzzer.ws.close_code == 3501, body
                fuzzer = await fuzzing_client()
                answered += 1
                continue
            refusals = (103, 106, 107) if body is not None else (104,)  # null: no publish at all
            assert "publish" in reply or reply["error"]["code"] in refusals, (body, reply)
            answered += 1
            fuzzer.inbox.clear()
            await asyncio.sleep(0.05)  # under the connection's command rate: not a flood
        assert answered == len(samples)
        said = await bystander.reply(
            await bystander.send(
                publish={"channel": f"chat:{room.id}", "data": {"text": "still here"}}
            )
        )
        assert said == {"id": said["id"], "publish": {}}, json.dumps(said)
        await fuzzer.ws.close()
        await bystander.ws.close()
    finally:
        await stop()
