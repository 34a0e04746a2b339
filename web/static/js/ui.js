// Small DOM and formatting helpers shared by the pages.

import { lang, t } from "./i18n.js";

export const $ = (selector, root = document) => root.querySelector(selector);

// h("div", {class: "card", onclick: fn}, "text", child) — text is always set as text, never HTML
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function setText(selector, text, root = document) {
  const node = typeof selector === "string" ? $(selector, root) : selector;
  if (node && node.textContent !== String(text)) node.textContent = String(text);
}

export function show(node, visible) {
  const target = typeof node === "string" ? $(node) : node;
  if (target) target.hidden = !visible;
}

export function money(cents) {
  const value = Number(cents || 0) / 100;
  return "¥" + value.toLocaleString(lang() === "zh" ? "zh-CN" : "en-US", {
    minimumFractionDigits: 2,
    maximumFractionDigits: 2,
  });
}

export function percentFromBps(bps) {
  return `${(Number(bps || 0) / 100).toFixed(bps % 100 === 0 ? 0 : 2)}%`;
}

// "1:05:09", "05:09", or "0:09"
export function clock(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const mm = String(minutes).padStart(hours ? 2 : 1, "0");
  const ss = String(seconds).padStart(2, "0");
  return hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function timeOfDay(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleTimeString(lang() === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}

export function dateTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleString(lang() === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}

// The server's clock as seen from this device: countdowns follow `server_time`, not the device.
export class ServerClock {
  constructor() {
    this.offsetMs = 0;
    this.synced = false;
  }

  // `sentAt`/`receivedAt` bracket the request that returned `serverTime`; the midpoint is the
  // best local estimate of when the server read its clock
  sync(serverTime, sentAt = Date.now(), receivedAt = sentAt) {
    const server = Date.parse(serverTime);
    if (Number.isNaN(server)) return;
    this.offsetMs = server - (sentAt + receivedAt) / 2;
    this.synced = true;
  }

  now() {
    return Date.now() + this.offsetMs;
  }
}

// A fresh idempotency key. crypto.randomUUID exists only in secure contexts (https, localhost).
export function newKey() {
  if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // clipboard API needs a secure context; fall back to a selected textarea
    const area = h("textarea", { class: "offscreen", readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    let done = false;
    try {
      done = document.execCommand("copy");
    } catch {
      done = false;
    }
    area.remove();
    return done;
  }
}

let toastTimer = null;

export function toast(text, kind = "info") {
  let box = $("#toast");
  if (!box) {
    box = h("div", { id: "toast", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  box.className = `toast toast-${kind} visible`;
  box.textContent = text;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("visible"), kind === "error" ? 6000 : 3500);
}

// The little "live / reconnecting" badge every page shows for its hub connection (states: see
// live.js openHub).
export function hubBadge(state) {
  const badge = $("#hub-state");
  if (!badge) return;
  const key = {
    connected: "hub.live",
    connecting: "hub.reconnecting",
    failed: "hub.failed",
    expired: "hub.expired",
    unavailable: "hub.unavailable",
  }[state];
  badge.dataset.state = state;
  badge.textContent = t(key || "hub.offline");
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
