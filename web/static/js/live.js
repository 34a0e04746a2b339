// The page's hub connection, made by the npm `centrifuge` SDK. web/package.json pins the SDK;
// `make serve` / `make test` install it with npm into web/node_modules, and the server serves its
// browser build (dist/centrifuge.js) at /vendor/centrifuge.js. Connecting, subscribing with
// recovery (offset and epoch), reconnecting with backoff, ping/pong and token refresh are the
// SDK's work; this module only wires it to the page.
//
// One connection per page, shared by every module of the page. Another module (a chat panel,
// say) joins it instead of opening its own:
//
//   import { pageHub } from "./live.js";
//   const hub = await pageHub();   // null while the page has not connected, or without the SDK
//   if (hub) hub.subscribe(`chat:${roomId}`, { onPublication: (data) => show(data) });
//   // or the SDK's own client: hub.client.newSubscription(`chat:${roomId}`) …
//
// Without the SDK (set up where npm was missing) `openHub` rejects with HubUnavailable and the
// page says "No live updates"; the pages then reload their data every few seconds instead.

import { config, resolveHubUrl } from "./config.js";

export const SDK_URL = "/vendor/centrifuge.js";

// the page's hub, once openHub has made it; pageHub() waits for it
let current = null;
let announce = null;
const opened = new Promise((resolve) => {
  announce = resolve;
});

export class HubUnavailable extends Error {
  constructor(message) {
    super(message || "the hub client is not installed");
    this.code = "hub_unavailable";
  }
}

// A final refusal of a subscription (a channel the user may not read, say), for errorText.
export class HubError extends Error {
  constructor(code, message) {
    super(message || `hub error ${code}`);
    this.code = code;
  }
}

let sdk = null;

// The SDK's exports: its browser bundle is a script that sets `globalThis.Centrifuge` (it runs as
// a module too); loaded on demand so that a page without it still works, only not live.
export function loadSdk() {
  if (!sdk) {
    sdk = import(SDK_URL).then(
      () => {
        if (typeof globalThis.Centrifuge !== "function") throw new HubUnavailable();
        return globalThis.Centrifuge;
      },
      (err) => {
        sdk = null;
        throw new HubUnavailable(String(err && err.message ? err.message : err));
      },
    );
  }
  return sdk;
}

// The SDK's disconnect code for a token it could not get (getToken refused), and the hub's close
// code for an invalid token: both end the connection until the person signs in again.
const SIGNED_OUT_CODES = new Set([1, 3500]);

export class Hub {
  constructor(client, Centrifuge) {
    this.client = client; // the SDK's Centrifuge client: on, newSubscription, getSubscription…
    this.Centrifuge = Centrifuge;
  }

  // Subscribe to `channel` with recovery: after a reconnect the SDK asks for what came after
  // the last offset it saw. handlers.onSubscribed({data, wasRecovering, recovered, first}),
  // handlers.onPublication(data, offset), handlers.onError(err) for a final refusal.
  // Returns the SDK's Subscription; `hub.unsubscribe(sub)` ends it.
  subscribe(channel, handlers = {}) {
    if (this.client.getSubscription(channel)) throw new Error(`already subscribed to ${channel}`);
    const sub = this.client.newSubscription(channel, { recoverable: true });
    sub.on("subscribed", (ctx) =>
      handlers.onSubscribed?.({
        data: ctx.data === undefined ? null : ctx.data,
        wasRecovering: Boolean(ctx.wasRecovering),
        recovered: Boolean(ctx.recovered),
        first: !ctx.wasRecovering,
      }),
    );
    sub.on("publication", (ctx) => handlers.onPublication?.(ctx.data, ctx.offset));
    // the SDK resubscribes by itself after temporary errors; `unsubscribed` with a code other
    // than "unsubscribe called" (0) is the hub refusing for good
    sub.on("unsubscribed", (ctx) => {
      if (ctx.code !== 0) handlers.onError?.(new HubError(ctx.code, ctx.reason));
    });
    sub.subscribe();
    return sub;
  }

  unsubscribe(sub) {
    if (sub && this.client.getSubscription(sub.channel) === sub) this.client.removeSubscription(sub);
  }

  // A new identity (signed in or out on the page): reconnect with its token; subscriptions stay
  // and recover.
  useToken(token) {
    this.client.setToken(token || "");
    this.client.disconnect();
    this.client.connect();
  }
}

// Connect the page to the hub. `tokens` is session.hubTokens(slot): the token to start with and
// the SDK's getToken (asked when the hub's `ttl` runs out, or to reconnect after expiry).
// onState(state): "connecting", "connected", "disconnected", "expired" (the token ran out and
// none came), "unavailable" (no SDK).
export async function openHub({ tokens, onState = () => {}, name = "livesell-web" }) {
  if (current) return current;
  let Centrifuge;
  try {
    Centrifuge = await loadSdk();
  } catch (err) {
    onState("unavailable");
    throw err;
  }
  const found = await config();
  const client = new Centrifuge(resolveHubUrl(found.hub_url, found.hub_port, window.location), {
    token: tokens.initial(),
    getToken: () =>
      tokens.getToken().catch((err) => {
        // the SDK stops asking (and stops reconnecting) on its UnauthorizedError only
        if (err && err.code === "session_expired") throw new Centrifuge.UnauthorizedError(err.message);
        throw err;
      }),
    name,
  });
  client.on("connecting", () => onState("connecting"));
  client.on("connected", () => onState("connected"));
  client.on("disconnected", (ctx) =>
    onState(SIGNED_OUT_CODES.has(ctx.code) ? "expired" : "disconnected"),
  );
  current = new Hub(client, Centrifuge);
  announce(current);
  client.connect();
  return current;
}

// The page's hub once it exists (null at once when the SDK is missing or the page never
// connects, e.g. the distributor page before sign-in): for other modules of the page.
export function pageHub({ waitMs = 10000 } = {}) {
  if (current) return Promise.resolve(current);
  return Promise.race([
    opened,
    loadSdk().then(
      () => new Promise((resolve) => setTimeout(() => resolve(current), waitMs)),
      () => null,
    ),
  ]);
}
