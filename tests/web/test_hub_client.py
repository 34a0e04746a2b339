"""The pages' hub client (web/static/js/hub.js) in Node against a scripted socket: the protocol
details a real hub rarely shows on demand (frames carrying several replies, ping/pong, duplicate
offsets, close codes that forbid reconnecting). The browser tests run it against the real hub."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

HUB_MODULE = Path(__file__).resolve().parents[2] / "web" / "static" / "js" / "hub.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: hub client not run")

# A fake WebSocket the scenario drives: `sent` collects what the client wrote, `serve(text)`
# delivers a frame, `drop(code)` closes the connection from the server side.
HARNESS = """
const sockets = [];
class FakeSocket {
  constructor(url) { this.url = url; this.sent = []; this.readyState = 0; sockets.push(this);
                     setTimeout(() => { this.readyState = 1; this.onopen && this.onopen(); }, 0); }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code = 1000) { if (this.readyState === 3) return; this.readyState = 3;
                       setTimeout(() => this.onclose && this.onclose({ code, reason: "" }), 0); }
  serve(text) { this.onmessage && this.onmessage({ data: text }); }
  drop(code) { this.close(code); }
}
FakeSocket.OPEN = 1;
globalThis.WebSocket = FakeSocket;
globalThis.window = { addEventListener() {}, removeEventListener() {} };
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
const { Hub } = await import("data:text/javascript;base64,%s");
"""

SCENARIO = """
const events = [];
const states = [];
const hub = new Hub({ url: "ws://hub.test/connection/websocket", token: "T", minDelayMs: 10,
                      onState: (s) => states.push(s) });
hub.subscribe("room:42", {
  onSubscribed: (ctx) => events.push({ subscribed: ctx }),
  onPublication: (data, offset) => events.push({ data, offset }),
});
hub.connect();
await tick();
const first = sockets[0];
const connect = first.sent[0];
first.serve(JSON.stringify({ id: connect.id, connect: { client: "c1", ping: 25, pong: true } }));
await tick();
const subscribe = first.sent[1];
// the reply and two publications in one frame, joined by newlines
first.serve([
  JSON.stringify({ id: subscribe.id, subscribe: { recoverable: true, epoch: "e1", offset: 7,
                                                  data: { room: { id: "42" } } } }),
  JSON.stringify({ push: { channel: "room:42", pub: { data: { type: "a" }, offset: 8 } } }),
  JSON.stringify({ push: { channel: "room:42", pub: { data: { type: "b" }, offset: 9 } } }),
].join("\\n"));
// a duplicate of offset 9 is not delivered twice
const again = { push: { channel: "room:42", pub: { data: { type: "b" }, offset: 9 } } };
first.serve(JSON.stringify(again));
first.serve("{}");
const afterPing = first.sent.slice(2);
first.drop(1006);
await tick(60);
const second = sockets[1];
const reconnect = second.sent[0];
second.serve(JSON.stringify({ id: reconnect.id, connect: { client: "c2", ping: 25, pong: true } }));
await tick();
const resubscribe = second.sent[1];
second.serve(JSON.stringify({ id: resubscribe.id, subscribe: { recoverable: true, epoch: "e1",
  offset: 10, was_recovering: true, recovered: true,
  publications: [{ data: { type: "c" }, offset: 10 }] } }));
await tick();
second.drop(3501);  // bad request: the SDK rule is not to reconnect
await tick(80);
console.log(JSON.stringify({ connect, subscribe, afterPing, resubscribe, events, states,
                             sockets: sockets.length }));
"""


def _run() -> dict[str, Any]:
    source = base64.b64encode(HUB_MODULE.read_bytes()).decode()
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", HARNESS % source + SCENARIO],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_connect_subscribe_batched_frames_ping_and_recovery() -> None:
    run = _run()
    assert run["connect"]["connect"] == {"name": "livesell-web", "token": "T"}
    assert run["subscribe"]["subscribe"] == {"channel": "room:42"}
    assert run["afterPing"] == [{}], "a ping is answered with a pong when the server asks for it"
    delivered = [e for e in run["events"] if "data" in e]
    assert [(e["data"]["type"], e["offset"]) for e in delivered] == [
        ("a", 8),
        ("b", 9),
        ("c", 10),
    ], "batched publications arrive in order, duplicates once, the gap recovered after reconnect"
    subscribed = [e["subscribed"] for e in run["events"] if "subscribed" in e]
    assert subscribed[0]["data"] == {"room": {"id": "42"}} and subscribed[0]["first"]
    assert subscribed[1]["wasRecovering"] and subscribed[1]["recovered"]
    # the reconnect asks for what came after the last publication it saw
    assert run["resubscribe"]["subscribe"] == {
        "channel": "room:42",
        "recover": True,
        "offset": 9,
        "epoch": "e1",
    }
    assert run["sockets"] == 2, "a close with code 3501 is final: no third connection"
    assert run["states"][-1] == "disconnected"
    assert "connecting" in run["states"] and run["states"].count("connected") == 2
