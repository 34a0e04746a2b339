// A viewer written against the npm `centrifuge` SDK, unmodified: it connects to the hub,
// subscribes to one channel and reports what the SDK emits as JSON lines on stdout.
// stdin lines steer it: "disconnect", "connect", "exit", and "token <jwt>" to answer the
// SDK's getToken calls, which (with the "refresh" option) report "token_wanted" and wait.
// usage: node sdk_viewer.mjs <hub url> <channel> [token] [refresh]
import { createInterface } from "node:readline";
import { Centrifuge } from "centrifuge";
import WebSocket from "ws";

const [url, channel, token, refresh] = process.argv.slice(2);
const say = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");

const tokenWaiters = [];
const getToken = () =>
  new Promise((resolve) => {
    tokenWaiters.push(resolve);
    say("token_wanted");
  });

const client = new Centrifuge(url, {
  websocket: WebSocket,
  token: token || undefined,
  getToken: refresh === "refresh" ? getToken : undefined,
  minReconnectDelay: 100,
  maxReconnectDelay: 1000,
});
client.on("connecting", (ctx) => say("connecting", { code: ctx.code }));
client.on("connected", (ctx) => say("connected", { client: ctx.client }));
client.on("disconnected", (ctx) => say("disconnected", { code: ctx.code }));
client.on("error", (ctx) => say("client_error", { message: String(ctx.error && ctx.error.message) }));

const sub = client.newSubscription(channel);
sub.on("subscribed", (ctx) =>
  say("subscribed", {
    recoverable: ctx.recoverable,
    wasRecovering: ctx.wasRecovering,
    recovered: ctx.recovered,
    offset: ctx.streamPosition ? ctx.streamPosition.offset : null,
    data: ctx.data ?? null,
  }),
);
sub.on("publication", (ctx) => say("publication", { data: ctx.data, offset: ctx.offset }));
sub.on("unsubscribed", (ctx) => say("unsubscribed", { code: ctx.code, reason: ctx.reason }));
sub.on("error", (ctx) => say("subscription_error", { code: ctx.error.code, message: ctx.error.message }));
sub.subscribe();
client.connect();

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = line.trim();
  if (command === "disconnect") client.disconnect();
  else if (command === "connect") client.connect();
  else if (command.startsWith("token ")) {
    // every pending call gets it (one for a connection that is gone may still be waiting)
    for (const waiter of tokenWaiters.splice(0)) waiter(command.slice("token ".length));
  } else if (command === "exit") {
    client.disconnect();
    process.exit(0);
  }
});
