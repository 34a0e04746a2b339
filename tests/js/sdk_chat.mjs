// A chat viewer written against the npm `centrifuge` SDK, unmodified: it subscribes to a chat
// channel, reports what the SDK emits as JSON lines on stdout, and posts with `sub.publish`.
// stdin lines: "publish <json data>" (reports publish_ok or publish_error with the code), "exit".
// usage: node sdk_chat.mjs <hub url> <channel> [token]
import { createInterface } from "node:readline";
import { Centrifuge } from "centrifuge";
import WebSocket from "ws";

const [url, channel, token] = process.argv.slice(2);
const say = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");

const client = new Centrifuge(url, {
  websocket: WebSocket,
  token: token || undefined,
  minReconnectDelay: 100,
  maxReconnectDelay: 1000,
});
client.on("connected", (ctx) => say("connected", { client: ctx.client }));
client.on("disconnected", (ctx) => say("disconnected", { code: ctx.code }));

const sub = client.newSubscription(channel);
sub.on("subscribed", (ctx) => say("subscribed", { data: ctx.data ?? null }));
sub.on("publication", (ctx) => say("publication", { data: ctx.data, offset: ctx.offset }));
sub.on("unsubscribed", (ctx) => say("unsubscribed", { code: ctx.code, reason: ctx.reason }));
sub.on("error", (ctx) => say("subscription_error", { code: ctx.error.code, message: ctx.error.message }));
sub.subscribe();
client.connect();

createInterface({ input: process.stdin }).on("line", async (line) => {
  const command = line.trim();
  if (command.startsWith("publish ")) {
    try {
      await sub.publish(JSON.parse(command.slice("publish ".length)));
      say("publish_ok");
    } catch (error) {
      say("publish_error", { code: error.code, message: error.message });
    }
  } else if (command === "exit") {
    client.disconnect();
    process.exit(0);
  }
});
