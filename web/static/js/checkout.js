// Buying and paying from the viewer page.
//
// One tap is one intent: it gets a fresh Idempotency-Key, reused only when that same tap is
// retried after a network failure or a 503, so a retry can never create a second order. The
// button is disabled while a tap is in flight, so a double tap is one request.

import { api } from "./api.js";
import { errorText, t } from "./i18n.js";
import { followPayFlow, payBody } from "./payflow.js";
import { newKey, setText, show, sleep } from "./ui.js";

const RETRY_DELAYS_MS = [300, 900, 2000];
const PAY_POLL_MS = 500;
const PAY_WAIT_MS = 30000;

export class BuyButton {
  // `couponClaimId()`: the claim the buyer chose to discount this order, or null
  constructor({ button, errorBox, quantity, dropId, onOrder, canBuy, onNeedSignIn, couponClaimId = () => null }) {
    Object.assign(this, { button, errorBox, quantity, dropId, onOrder, canBuy, onNeedSignIn, couponClaimId });
    this.inFlight = false;
    this.phase = "none";
    button.addEventListener("click", () => this.tap());
  }

  render(phase) {
    this.phase = phase;
    const button = this.button;
    let key = "buy.button";
    if (this.inFlight) key = "buy.buying";
    else if (phase === "upcoming") key = "buy.soon";
    else if (phase === "sold_out") key = "drop.soldOut";
    else if (phase === "closed") key = "drop.closed";
    else if (phase === "ended") key = "drop.ended";
    button.dataset.i18n = key;
    setText(button, t(key));
    button.disabled = this.inFlight || phase !== "live";
    button.dataset.phase = phase;
  }

  async tap() {
    if (this.inFlight || this.phase !== "live") return;
    if (!this.canBuy()) {
      this.onNeedSignIn();
      return;
    }
    const dropId = this.dropId();
    const quantity = this.quantity();
    const claim = this.couponClaimId();
    const key = newKey();
    this.inFlight = true;
    show(this.errorBox, false);
    this.render(this.phase);
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          const order = await api.buy(dropId, quantity, key, claim);
          this.onOrder(order);
          return;
        } catch (err) {
          // the same key again: the first try may have reached the server (or still be running)
          const again = err.retryable || err.code === "idempotency_in_progress";
          if (again && attempt < RETRY_DELAYS_MS.length) {
            await sleep(RETRY_DELAYS_MS[attempt]);
            continue;
          }
          this.errorBox.textContent = errorText(err);
          this.errorBox.dataset.code = err.code || "";
          show(this.errorBox, true);
          return;
        }
      }
    } finally {
      this.inFlight = false;
      this.render(this.phase);
    }
  }
}

function normaliseOrder(order) {
  return {
    ...order,
    order_id: String(order.order_id ?? order.id),
    status: order.status,
    amount_cents: order.amount_cents,
    hold_expires_at: order.hold_expires_at,
  };
}

// The viewer's latest order in this room, remembered across reloads.
export class OrderTracker {
  constructor({ roomId, userId, clock, onChange }) {
    Object.assign(this, { roomId, userId, clock, onChange });
    this.current = null;
    this.paying = false;
    this.refreshing = false;
  }

  _key() {
    const user = this.userId();
    return user ? `livesell.order.${this.roomId}.${user}` : null;
  }

  track(order) {
    this.current = normaliseOrder(order);
    const key = this._key();
    if (key) localStorage.setItem(key, this.current.order_id);
    this.onChange();
  }

  async restore() {
    const key = this._key();
    const orderId = key && localStorage.getItem(key);
    if (!orderId) return;
    try {
      this.current = normaliseOrder(await api.order(orderId));
    } catch (err) {
      if (err.status === 404 || err.status === 403) localStorage.removeItem(key);
    }
    this.onChange();
  }

  async refresh() {
    if (!this.current || this.refreshing) return;
    this.refreshing = true;
    try {
      this.current = normaliseOrder(await api.order(this.current.order_id));
    } finally {
      this.refreshing = false;
      this.onChange();
    }
  }

  msUntilHoldExpires() {
    if (!this.current || !this.current.hold_expires_at) return 0;
    const left = Date.parse(this.current.hold_expires_at) - this.clock.now();
    if (left <= 0 && this.current.status === "held" && !this.refreshing) {
      // the sweeper expires it server-side; ask once the hold has run out
      this.refresh().catch(() => {});
    }
    return left;
  }

  // `anchor`: the pay button (the provider's own form, when it has one, goes after it)
  async pay(anchor) {
    if (!this.current || this.paying) return;
    this.paying = true;
    this.onChange();
    try {
      const started = await api.pay(this.current.order_id, payBody());
      if (!(await followPayFlow(started, anchor))) return;
      const status = started && (started.order_status || started.status);
      if (status && status !== this.current.status) {
        this.current = normaliseOrder({ ...this.current, status });
      }
      const deadline = Date.now() + PAY_WAIT_MS;
      while (this.current.status === "held" && Date.now() < deadline) {
        await sleep(PAY_POLL_MS);
        this.current = normaliseOrder(await api.order(this.current.order_id));
      }
    } finally {
      this.paying = false;
      this.onChange();
    }
  }

  dismiss() {
    const key = this._key();
    if (key) localStorage.removeItem(key);
    this.current = null;
    this.onChange();
  }

  forget() {
    this.current = null;
    this.onChange();
  }
}
