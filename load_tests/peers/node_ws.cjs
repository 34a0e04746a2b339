// The fast baseline: Node's `ws` relaying each Redis message to every subscribed viewer on its
// own (no batching), the broadcast loop from the `ws` README.
//   node load_tests/peers/node_ws.cjs --port 9000 --redis redis://127.0.0.1:6379/0 --snapshot '{...}'
"use strict";
const path = require("path");
const modules = path.join(__dirname, "..", "node_modules");
const { WebSocketServer } = require(path.join(modules, "ws"));
const Redis = require(path.join(modules, "ioredis"));

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const host = option("host", "127.0.0.1");
const port = Number(option("port"));
const channel = option("channel", "room:1");
const redisUrl = option("redis");

// livesell's room snapshot type, encoded by load_tests/peers/common.py
const SNAPSHOT = JSON.parse(option("snapshot"));

const viewers = new Set();
const wss = new WebSocketServer({ host, port, path: "/connection/websocket", backlog: 4096 });
wss.on("connection", (socket) => {
  socket.on("message", (raw) => {
    const answers = [];
    for (const line of raw.toString().split("\n")) {
      if (!line.trim()) continue;
      const command = JSON.parse(line);
      if (command.id === undefined) continue; // a pong
      if (command.connect) {
        answers.push(JSON.stringify({ id: command.id, connect: { client: "peer", ping: 25 } }));
      } else if (command.subscribe) {
        answers.push(JSON.stringify({ id: command.id, subscribe: { recoverable: false, data: SNAPSHOT } }));
        viewers.add(socket);
      } else {
        answers.push(JSON.stringify({ id: command.id, error: { code: 104, message: "not found" } }));
      }
    }
    if (answers.length) socket.send(answers.join("\n"));
  });
  socket.on("close", () => viewers.delete(socket));
  socket.on("error", () => viewers.delete(socket));
});

const subscriber = new Redis(redisUrl);
const pubsub = `{${channel}}:events`;
subscriber.ssubscribe(pubsub); // livesell publishes with SPUBLISH (sharded pub/sub)
subscriber.on("smessageBuffer", (_name, message) => {
  // "<offset>\n<epoch>\n<coalesce key>\n<data>"
  let cut = 0;
  const fields = [];
  for (let i = 0; i < 3; i++) {
    const next = message.indexOf(10, cut);
    fields.push(message.subarray(cut, next));
    cut = next + 1;
  }
  const frame = Buffer.concat([
    Buffer.from(`{"push":{"channel":"${channel}","pub":{"data":`),
    message.subarray(cut),
    Buffer.from(`,"offset":${fields[0].toString()}}}}`),
  ]);
  for (const socket of viewers) socket.send(frame, { binary: false });
});
wss.on("listening", () => console.log(`node ws peer on ${host}:${port}`));
