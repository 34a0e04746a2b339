// A room as a page sees it: the snapshot (`GET /api/rooms/{id}`, or the hub's subscribe reply)
// kept current by the `room:{id}` events. Host console and viewer page both render from this.

import { api } from "./api.js";
import { ServerClock } from "./ui.js";

const TICKER_SIZE = 8;
const FINISHED = new Set(["sold_out", "closed", "ended"]);

function str(value) {
  return value === null || value === undefined ? null : String(value);
}

export class RoomState {
  constructor(roomId) {
    this.roomId = String(roomId);
    this.loaded = false;
    this.missing = false;
    this.room = null;
    this.pinned = null;
    this.drop = null;
    this.viewers = 0;
    this.likes = null; // the room's likes, once the hub has told them
    this.leaderboard = null;
    this.ticker = [];
    this.products = new Map(); // id → product card, for titles in the ticker
    this.coupons = new Map(); // id → coupon (with `remaining`), as released in this room
    this.reservations = 0; // viewers who reserved the room (the snapshot's count)
    this.clock = new ServerClock();
    this.listeners = new Set();
  }

  onChange(listener) {
    this.listeners.add(listener);
  }

  _changed(what, detail = null) {
    for (const listener of this.listeners) listener(what, detail);
  }

  // --- snapshot ---

  async reload() {
    const sentAt = Date.now();
    try {
      const snapshot = await api.room(this.roomId);
      this.loadSnapshot(snapshot, sentAt, Date.now());
    } catch (err) {
      if (err.status === 404) {
        this.missing = true;
        this._changed("missing");
        return;
      }
      throw err;
    }
  }

  loadSnapshot(snapshot, sentAt = Date.now(), receivedAt = sentAt) {
    if (!snapshot || typeof snapshot !== "object") return;
    const room = snapshot.room && typeof snapshot.room === "object" ? snapshot.room : snapshot;
    this.room = {
      id: str(room.id) ?? this.roomId,
      title: room.title ?? "",
      status: room.status ?? "scheduled",
      host_id: room.host_id ?? null,
    };
    this.pinned = snapshot.pinned ?? snapshot.pinned_product ?? snapshot.card ?? null;
    this.rememberProduct(this.pinned);
    this.drop = this._normaliseDrop(snapshot.drop ?? snapshot.active_drop ?? null);
    const viewers = snapshot.viewers ?? snapshot.viewer_count;
    if (typeof viewers === "number") this.viewers = viewers;
    if (typeof snapshot.likes === "number") this.likes = snapshot.likes;
    if (snapshot.leaderboard) this.leaderboard = snapshot.leaderboard;
    if (Array.isArray(snapshot.coupons)) {
      this.coupons = new Map(snapshot.coupons.map((coupon) => [String(coupon.id), coupon]));
    }
    if (typeof snapshot.reservations === "number") this.reservations = snapshot.reservations;
    if (snapshot.server_time) this.clock.sync(snapshot.server_time, sentAt, receivedAt);
    this.loaded = true;
    this.missing = false;
    this._changed("snapshot");
  }

  _normaliseDrop(drop) {
    if (!drop) return null;
    return {
      ...drop,
      id: str(drop.id),
      product_id: str(drop.product_id),
      remaining: Number(drop.remaining ?? drop.quantity ?? 0),
      sold: Number(drop.sold ?? 0),
      held: Number(drop.held ?? 0),
    };
  }

  // --- live events ---

  apply(event) {
    if (!event || typeof event !== "object") return;
    const now = Date.now();
    switch (event.type) {
      case "room.live":
        this._room({ status: "live" });
        break;
      case "room.ended":
        this._room({ status: "ended" });
        this.pinned = null;
        break;
      case "card.pinned":
        this.pinned = event.product ?? event.card ?? this.pinned;
        this.rememberProduct(this.pinned);
        break;
      case "card.unpinned":
        if (!this.pinned || !event.product_id || str(this.pinned.id) === str(event.product_id)) {
          this.pinned = null;
        }
        break;
      case "drop.scheduled":
      case "drop.started":
        if (event.server_time) this.clock.sync(event.server_time, now, now);
        if (event.drop) this.drop = this._normaliseDrop(event.drop);
        if (event.type === "drop.started" && this.drop && this.drop.status === "scheduled") {
          this.drop.status = "live";
        }
        break;
      case "stock.changed":
        this._stock(event);
        break;
      case "drop.sold_out":
        if (this._sameDrop(event)) {
          this.drop.status = "sold_out";
          this.drop.remaining = 0;
        }
        break;
      case "drop.closed":
        if (this._sameDrop(event)) {
          this.drop.status = event.reason === "ended" ? "ended" : "closed";
          this._stock(event);
        }
        break;
      case "order.placed":
        this.ticker.unshift({ ...event, seen_at: now });
        this.ticker.length = Math.min(this.ticker.length, TICKER_SIZE);
        this._stock(event);
        break;
      case "viewers.changed":
        if (typeof event.viewers === "number") this.viewers = event.viewers;
        break;
      case "likes.changed":
        if (typeof event.total === "number") this.likes = event.total;
        break;
      case "coupon.released":
        if (event.coupon) {
          const coupon = { ...event.coupon, remaining: event.remaining ?? event.coupon.remaining };
          this.coupons.set(String(coupon.id), coupon);
        }
        break;
      case "coupon.remaining": {
        const coupon = this.coupons.get(String(event.coupon_id));
        if (!coupon) return;
        coupon.remaining = Number(event.remaining);
        if (coupon.remaining <= 0 && coupon.status === "active") coupon.status = "gone";
        break;
      }
      case "leaderboard.changed":
        this.leaderboard = event.leaderboard ?? event;
        break;
      default:
        return;
    }
    this._changed(event.type, event);
  }

  _room(fields) {
    this.room = { ...(this.room || { id: this.roomId, title: "" }), ...fields };
  }

  _sameDrop(event) {
    const id = str(event.drop_id ?? (event.drop && event.drop.id));
    return Boolean(this.drop && (!id || id === this.drop.id));
  }

  _stock(event) {
    if (!this._sameDrop(event)) return;
    for (const field of ["remaining", "sold", "held"]) {
      if (typeof event[field] === "number") this.drop[field] = event[field];
    }
  }

  rememberProduct(product) {
    if (product && product.id !== undefined && product.id !== null) {
      this.products.set(String(product.id), product);
    }
  }

  // the product's card if known; otherwise fetched once, announced as a "product" change
  product(productId) {
    const id = str(productId);
    if (!id) return null;
    const known = this.products.get(id);
    if (known !== undefined) return known;
    this.products.set(id, null);
    api.product(id).then(
      (product) => {
        this.rememberProduct(product);
        this._changed("product", product);
      },
      () => {},
    );
    return null;
  }

  // --- derived ---

  // "none", "upcoming", "live", "sold_out", "closed" or "ended", by the server's clock
  dropPhase() {
    const drop = this.drop;
    if (!drop) return "none";
    if (FINISHED.has(drop.status)) return drop.status;
    const now = this.clock.now();
    if (now < Date.parse(drop.starts_at)) return "upcoming";
    if (now >= Date.parse(drop.ends_at)) return "ended";
    if (drop.remaining <= 0) return "sold_out";
    return "live";
  }

  // the room's coupons, newest first, with the phase of each by the server's clock:
  // "upcoming" (claims open later), "active", "gone" (all claimed) or "ended"
  couponList() {
    const now = this.clock.now();
    return [...this.coupons.values()]
      .map((coupon) => {
        let phase = "active";
        if (coupon.status === "ended" || now >= Date.parse(coupon.claim_ends_at)) phase = "ended";
        else if (coupon.remaining <= 0 || coupon.status === "gone") phase = "gone";
        else if (now < Date.parse(coupon.claim_starts_at)) phase = "upcoming";
        return { ...coupon, phase };
      })
      .sort((a, b) => Number(b.id) - Number(a.id));
  }

  msUntilStart() {
    return this.drop ? Date.parse(this.drop.starts_at) - this.clock.now() : 0;
  }

  msUntilEnd() {
    return this.drop ? Date.parse(this.drop.ends_at) - this.clock.now() : 0;
  }

  // subscribe to the room's channel; on a gap the hub cannot fill, reload the snapshot
  attach(hub, onError = () => {}) {
    return hub.subscribe(`room:${this.roomId}`, {
      onSubscribed: ({ data, recovered, first }) => {
        if (data && typeof data === "object" && Object.keys(data).length) {
          this.loadSnapshot(data, Date.now());
        } else if (first || !recovered) {
          this.reload().catch(onError);
        }
      },
      onPublication: (event) => this.apply(event),
      onError,
    });
  }
}
