// A small client for livesell's hub: the JSON form of Centrifugo's client protocol v2, the same
// subset the official SDKs speak (connect, subscribe with recovery, publication pushes,
// ping/pong `{}`, server unsubscribe/disconnect). Reconnects with backoff and recovers each
// subscription from its last offset and epoch.

const FINAL_ERROR_CODES = new Set([101, 102, 103, 107, 109]); // no point in retrying these

// Close codes 3500–3999 and 4500–4999 tell the client not to reconnect (bad token, bad request).
export function shouldReconnect(code) {
  return !((code >= 3500 && code < 4000) || (code >= 4500 && code < 5000));
}

// Exponential backoff with full jitter: 0.5 s, 1 s, 2 s … capped at 20 s.
export function backoffDelay(attempt, minMs = 500, maxMs = 20000) {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 10));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

export class HubError extends Error {
  constructor(code, message) {
    super(message || `hub error ${code}`);
    this.code = code;
  }
}

class Subscription {
  constructor(hub, channel, handlers) {
    this.hub = hub;
    this.channel = channel;
    this.handlers = handlers;
    this.offset = null; // last publication offset seen
    this.epoch = null;
    this.recoverable = false;
    this.subscribed = false;
    this.closed = false;
  }

  _command() {
    const cmd = { channel: this.channel };
    if (this.recoverable && this.offset !== null && this.epoch) {
      cmd.recover = true;
      cmd.offset = this.offset;
      cmd.epoch = this.epoch;
    }
    return cmd;
  }

  _onReply(result) {
    const wasRecovering = Boolean(result.was_recovering);
    const recovered = Boolean(result.recovered);
    this.subscribed = true;
    this.recoverable = Boolean(result.recoverable);
    if (result.epoch) this.epoch = result.epoch;
    let missed = [];
    if (wasRecovering && recovered) missed = result.publications || [];
    // the reply says where the channel stands; publications recovered arrive before that point
    const top = typeof result.offset === "number" ? result.offset : null;
    this.handlers.onSubscribed?.({
      data: result.data === undefined ? null : result.data,
      wasRecovering,
      recovered,
      first: !wasRecovering,
    });
    for (const pub of missed) this._onPublication(pub);
    if (top !== null && (this.offset === null || top > this.offset || !recovered)) {
      this.offset = top;
    }
  }

  _onPublication(pub) {
    if (typeof pub.offset === "number") {
      // exactly once per connection: a publication at or below our position was already seen
      if (this.offset !== null && pub.offset <= this.offset) return;
      this.offset = pub.offset;
    }
    this.handlers.onPublication?.(pub.data, pub.offset);
  }

  unsubscribe() {
    this.closed = true;
    this.hub._forget(this);
  }
}

export class Hub {
  constructor({ url, token = null, name = "livesell-web", onState = null, minDelayMs = 500 }) {
    this.url = url;
    this.token = token;
    this.name = name;
    this.onState = onState;
    this.minDelayMs = minDelayMs;
    this.subs = new Map();
    this.pending = new Map();
    this.nextId = 1;
    this.ws = null;
    this.state = "disconnected";
    this.attempt = 0;
    this.pong = false;
    this.pingMs = 0;
    this.watchdog = null;
    this.reconnectTimer = null;
    this.stopped = false;
    this._online = () => this._reconnectNow();
    window.addEventListener("online", this._online);
  }

  subscribe(channel, handlers) {
    if (this.subs.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const sub = new Subscription(this, channel, handlers);
    this.subs.set(channel, sub);
    if (this.state === "connected") this._sendSubscribe(sub);
    return sub;
  }

  connect() {
    this.stopped = false;
    if (this.ws) return;
    this._open();
  }

  close() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.watchdog);
    window.removeEventListener("online", this._online);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this._setState("disconnected");
  }

  _setState(state, detail = null) {
    if (this.state === state && !detail) return;
    this.state = state;
    this.onState?.(state, detail);
  }

  _open() {
    this._setState("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      const connect = { name: this.name };
      if (this.token) connect.token = this.token;
      this._call(
        { connect },
        (reply) => this._onConnected(reply.connect || {}),
        (err) => this._onConnectFailed(err),
      );
    };
    ws.onmessage = (event) => this._onFrame(event.data);
    ws.onclose = (event) => this._onClose(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close event always follows
  }

  // Replies are handled synchronously, in frame order: a subscribe reply and the publications
  // batched after it in the same frame must be applied in that order (a promise would defer the
  // reply behind them).
  _call(command, onReply, onError = () => {}) {
    const id = this.nextId++;
    this.pending.set(id, { onReply, onError });
    this._send({ id, ...command });
  }

  _send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  _onConnected(result) {
    this.attempt = 0;
    this.pong = Boolean(result.pong);
    this.pingMs = (result.ping || 0) * 1000;
    this._armWatchdog();
    this._setState("connected");
    for (const sub of this.subs.values()) this._sendSubscribe(sub);
  }

  _onConnectFailed(err) {
    if (err instanceof HubError && FINAL_ERROR_CODES.has(err.code)) {
      this.stopped = true;
      this._setState("failed", err);
    }
    if (this.ws) this.ws.close(3000, "connect failed");
  }

  _sendSubscribe(sub) {
    const channel = sub.channel;
    this._call(
      { subscribe: sub._command() },
      (reply) => {
        if (this.subs.get(channel) === sub) sub._onReply(reply.subscribe || {});
      },
      (err) => {
        // 0: the connection closed first (the reconnect resubscribes); 105: already subscribed
        if (err.code === 0 || err.code === 105) return;
        if (!FINAL_ERROR_CODES.has(err.code)) {
          setTimeout(() => {
            if (this.state === "connected" && !sub.subscribed && this.subs.get(channel) === sub) {
              this._sendSubscribe(sub);
            }
          }, 1000);
        } else {
          this.subs.delete(channel);
          sub.handlers.onError?.(err);
        }
      },
    );
  }

  _forget(sub) {
    if (this.subs.get(sub.channel) !== sub) return;
    this.subs.delete(sub.channel);
    if (this.state === "connected") this._call({ unsubscribe: { channel: sub.channel } }, () => {});
  }

  _onFrame(text) {
    for (const line of String(text).split("\n")) {
      if (!line.trim()) continue;
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        continue;
      }
      this._onMessage(message);
    }
  }

  _onMessage(message) {
    if (message.id) {
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.error) waiter.onError(new HubError(message.error.code, message.error.message));
      else waiter.onReply(message);
      return;
    }
    if (message.push) {
      this._onPush(message.push);
      return;
    }
    // `{}` is the server's ping
    this._armWatchdog();
    if (this.pong) this._send({});
  }

  _onPush(push) {
    if (push.disconnect) {
      const { code, reason } = push.disconnect;
      if (!shouldReconnect(code)) this.stopped = true;
      if (this.ws) this.ws.close(3000, reason || "disconnect");
      return;
    }
    const sub = this.subs.get(push.channel);
    if (!sub) return;
    if (push.pub) sub._onPublication(push.pub);
    else if (push.unsubscribe) {
      sub.subscribed = false;
      if ((push.unsubscribe.code || 0) >= 2500) this._sendSubscribe(sub);
      else {
        this.subs.delete(sub.channel);
        sub.handlers.onError?.(new HubError(push.unsubscribe.code, push.unsubscribe.reason));
      }
    }
  }

  _armWatchdog() {
    clearTimeout(this.watchdog);
    if (!this.pingMs) return;
    // no ping within ping + 10 s: the connection is dead even if TCP has not noticed
    this.watchdog = setTimeout(() => this.ws && this.ws.close(3012, "no ping"), this.pingMs + 10000);
  }

  _onClose(ws, code) {
    if (ws !== this.ws) return;
    this.ws = null;
    clearTimeout(this.watchdog);
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const waiter of waiting) waiter.onError(new HubError(0, "connection closed"));
    for (const sub of this.subs.values()) sub.subscribed = false;
    if (!shouldReconnect(code)) this.stopped = true;
    if (this.stopped) {
      if (this.state !== "failed") this._setState("disconnected");
      return;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    this.ws = null;
    this._setState("connecting");
    clearTimeout(this.reconnectTimer);
    const delay = backoffDelay(this.attempt++, this.minDelayMs);
    this.reconnectTimer = setTimeout(() => this._open(), delay);
  }

  _reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.reconnectTimer);
    this._open();
  }
}
