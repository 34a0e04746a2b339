// The viewer's room: pinned card, flash drop with a countdown on the server's clock, live stock,
// a buy button safe against double taps, the hold countdown, payment and the buyers ticker.

import { api } from "./api.js";
import { chatChannel, mountChat } from "./chat.js";
import { config } from "./config.js";
import { HubUnavailable, openHub } from "./live.js";
import { errorText, installLangSwitch, onLangChange, t } from "./i18n.js";
import { RoomState } from "./roomstate.js";
import { claims, devSignIn, hubTokens, signOut, takeToken } from "./session.js";
import { BuyButton, OrderTracker } from "./checkout.js";
import { claimFits, couponTerms, discountCents } from "./coupons.js";
import { $, clock, h, hubBadge, money, newKey, setText, show, timeOfDay, toast } from "./ui.js";

const SLOT = "viewer";
const roomId = window.location.pathname.split("/").filter(Boolean)[1];
const via = new URLSearchParams(window.location.search).get("via");
// without the hub client (set up without npm), the room's snapshot is reloaded this often
const POLL_MS = 5000;
const state = new RoomState(roomId);
let hub = null;
let token = takeToken(SLOT);
let user = token ? claims(token) : null;

let myClaims = []; // GET /api/me/coupons: the viewer's usable claims, in every room
const claiming = new Set(); // coupon ids with a claim in flight
let reserved = false;

const orders = new OrderTracker({
  roomId,
  userId: () => (user ? user.sub : null),
  clock: state.clock,
  onChange: renderOrder,
});

const buyButton = new BuyButton({
  button: $("#buy"),
  errorBox: $("#buy-error"),
  quantity: () => Number($("#qty").value) || 1,
  dropId: () => (state.drop ? state.drop.id : null),
  onOrder: (order) => {
    orders.track(order);
    toast(t("buy.ok"), "success");
    loadClaims(); // a claim applied to the order is no longer usable
  },
  canBuy: () => Boolean(token) && state.dropPhase() === "live",
  onNeedSignIn: () => $("#signin-name").focus(),
  couponClaimId: () => chosenClaim()?.claim_id ?? null,
});

// --- rendering ---

function renderRoom() {
  const room = state.room;
  const notice = $("#room-notice");
  if (state.missing) {
    notice.textContent = t("room.notFound");
    show(notice, true);
    return;
  }
  if (!room) return;
  setText("#room-title", room.title || `#${roomId}`);
  document.title = `${room.title || roomId} · livesell`;
  const pill = $("#room-status");
  pill.dataset.status = room.status;
  setText(pill, t(`room.status.${room.status}`));
  setText("#viewers", t("room.viewers", { n: state.viewers }));
  if (room.status === "ended") notice.textContent = t("room.ended");
  else if (!state.pinned && !state.drop) notice.textContent = t("room.waiting");
  show(notice, room.status === "ended" || (!state.pinned && !state.drop));
  renderPinned();
  renderReserve();
  renderCoupons();
  renderDrop();
  renderTicker();
}

function renderReserve() {
  const scheduled = Boolean(state.room && state.room.status === "scheduled");
  show("#reserve", scheduled);
  if (!scheduled) return;
  setText("#reserve-count", t("room.reservations", { n: state.reservations }));
  $("#reserve-button").disabled = reserved;
  show("#reserve-done", reserved);
}

// --- coupons ---

function claimsOf(couponId) {
  return myClaims.filter((claim) => String(claim.coupon_id) === String(couponId)).length;
}

function renderCoupons() {
  const coupons = state.couponList().filter((coupon) => coupon.phase !== "ended");
  show("#coupons", coupons.length > 0);
  const list = $("#coupon-list");
  const items = coupons.map((coupon) => {
    const mine = claimsOf(coupon.id) >= (coupon.per_user_limit || 1);
    let label = t("coupon.claim");
    if (claiming.has(coupon.id)) label = t("coupon.claiming");
    else if (mine) label = t("coupon.claimed");
    else if (coupon.phase === "gone") label = t("coupon.gone");
    else if (coupon.phase === "upcoming") {
      label = t("coupon.opensIn", { t: clock(Date.parse(coupon.claim_starts_at) - state.clock.now()) });
    }
    return {
      key: `${coupon.id}:${coupon.phase}:${coupon.remaining}:${label}`,
      node: h(
        "li",
        { class: "coupon-item", dataset: { couponId: String(coupon.id), phase: coupon.phase } },
        h(
          "div",
          { class: "grow" },
          h("strong", { class: "coupon-title" }, coupon.title),
          h("p", { class: "coupon-off" }, couponTerms(coupon)),
          h("p", { class: "muted small coupon-left" }, t("coupon.left", { n: Math.max(0, coupon.remaining), q: coupon.quantity })),
        ),
        h(
          "button",
          {
            type: "button",
            class: "primary coupon-claim",
            disabled: coupon.phase !== "active" || mine || claiming.has(coupon.id),
            onclick: () => claimCoupon(coupon.id),
          },
          label,
        ),
      ),
    };
  });
  const keys = items.map((item) => item.key).join("|") + document.documentElement.lang;
  if (list.dataset.keys !== keys) {
    list.dataset.keys = keys;
    list.replaceChildren(...items.map((item) => item.node));
  }
}

async function claimCoupon(couponId) {
  if (!token) {
    $("#signin-name").focus();
    return;
  }
  if (claiming.has(couponId)) return;
  claiming.add(couponId);
  show("#coupon-error", false);
  renderCoupons();
  const key = newKey(); // one tap, one key: a retry after a network failure is the same claim
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await api.claimCoupon(couponId, key);
        break;
      } catch (err) {
        if (err.retryable && attempt < 2) continue;
        throw err;
      }
    }
    toast(t("coupon.claimOk"), "success");
    await loadClaims();
  } catch (err) {
    const box = $("#coupon-error");
    box.textContent = err.code === "limit_reached" ? t("coupon.limit") : errorText(err);
    box.dataset.code = err.code || "";
    show(box, true);
  } finally {
    claiming.delete(couponId);
    renderCoupons();
  }
}

async function loadClaims() {
  if (!token) {
    myClaims = [];
    return;
  }
  try {
    myClaims = (await api.myCoupons()).claims || [];
  } catch {
    return;
  }
  renderCoupons();
  renderDrop();
}

// the claims the current drop may use, and the one chosen (null: none)
function fittingClaims() {
  const drop = state.drop;
  if (!drop) return [];
  const now = state.clock.now();
  return myClaims.filter((claim) => claimFits(claim, roomId, drop.product_id) && Date.parse(claim.expires_at) > now);
}

function grossCents() {
  return state.drop ? state.drop.price_cents * (Number($("#qty").value) || 1) : 0;
}

function chosenClaim() {
  const id = $("#coupon-pick").value;
  const claim = id ? fittingClaims().find((item) => String(item.claim_id) === id) : null;
  return claim && discountCents(claim, grossCents()) > 0 ? claim : null;
}

function renderCheckout() {
  const claims = fittingClaims();
  const gross = grossCents();
  show("#coupon-pick-row", claims.length > 0);
  const select = $("#coupon-pick");
  const usable = claims.filter((claim) => discountCents(claim, gross) > 0);
  const keys = usable.map((claim) => claim.claim_id).join(",") + document.documentElement.lang;
  if (select.dataset.keys !== keys) {
    const previous = select.dataset.keys === undefined ? null : select.value;
    select.dataset.keys = keys;
    select.replaceChildren(
      h("option", { value: "" }, t("coupon.none")),
      ...usable.map((claim) => h("option", { value: String(claim.claim_id) }, `${claim.title} · ${couponTerms(claim)}`)),
    );
    // the best coupon is chosen for the buyer, unless they chose otherwise
    const best = usable.reduce((top, claim) => (!top || discountCents(claim, gross) > discountCents(top, gross) ? claim : top), null);
    const keep = previous !== null && [...select.options].some((option) => option.value === previous);
    select.value = keep && select.dataset.touched ? previous : best ? String(best.claim_id) : "";
  }
  const below = claims.filter((claim) => discountCents(claim, gross) === 0);
  setText("#coupon-below-min", below.map((claim) => t("coupon.belowMin", { title: claim.title, amount: money(claim.min_spend_cents) })).join(" · "));
  const discount = discountCents(chosenClaim(), gross);
  setText("#buy-total-text", t("buy.total", { amount: money(gross - discount) }));
  setText("#buy-total-before", discount ? money(gross) : "");
  setText("#buy-saving", discount ? t("buy.saving", { amount: money(discount) }) : "");
}

function productImage(node, product) {
  node.replaceChildren();
  if (product && product.image_url) {
    node.append(h("img", { src: product.image_url, alt: "" }));
  } else {
    node.textContent = product && product.title ? Array.from(product.title)[0] : "🛍";
  }
}

function renderPinned() {
  const product = state.pinned;
  show("#pinned", Boolean(product));
  if (!product) return;
  const image = $("#pinned-image");
  if (image.dataset.product !== String(product.id)) {
    image.dataset.product = String(product.id);
    productImage(image, product);
  }
  setText("#pinned-title", product.title);
  setText("#pinned-price", money(product.price_cents));
}

function renderDrop() {
  const drop = state.drop;
  const phase = state.dropPhase();
  show("#drop", Boolean(drop));
  if (!drop) return;
  const product = state.product(drop.product_id);
  setText("#drop-price", money(drop.price_cents));
  setText("#drop-list-price", product && product.price_cents > drop.price_cents ? money(product.price_cents) : "");
  const pinnedSame = state.pinned && String(state.pinned.id) === drop.product_id;
  setText("#drop-product", product && !pinnedSame ? product.title : "");
  const countdown = $("#drop-countdown");
  countdown.dataset.phase = phase;
  if (phase === "upcoming") setText(countdown, t("drop.startsIn", { t: clock(state.msUntilStart()) }));
  else if (phase === "live") setText(countdown, t("drop.endsIn", { t: clock(state.msUntilEnd()) }));
  else if (phase === "sold_out") setText(countdown, t("drop.soldOut"));
  else if (phase === "closed") setText(countdown, t("drop.closed"));
  else setText(countdown, t("drop.ended"));

  const remaining = Math.max(0, drop.remaining);
  const percent = drop.quantity ? (remaining * 100) / drop.quantity : 0;
  $("#stock-fill").style.width = `${percent.toFixed(2)}%`;
  const bar = $("#stock");
  bar.setAttribute("aria-valuemax", String(drop.quantity));
  bar.setAttribute("aria-valuenow", String(remaining));
  bar.dataset.low = percent <= 20 ? "1" : "0";
  setText("#stock-text", t("drop.left", { n: remaining, q: drop.quantity }));
  setText("#drop-limit", t("drop.limit", { n: drop.per_buyer_limit }));

  const qty = $("#qty");
  const most = Math.max(1, Math.min(drop.per_buyer_limit || 1, remaining || 1));
  qty.max = String(most);
  if (Number(qty.value) > most) qty.value = String(most);
  renderCheckout();
  buyButton.render(phase);
}

function renderTicker() {
  const list = $("#ticker");
  const items = state.ticker.map((entry) => {
    const who = entry.buyer || entry.buyer_masked || entry.buyer_name || t("ticker.someone");
    const product = state.product(entry.product_id);
    const what = product ? product.title : "";
    return h(
      "li",
      { dataset: { key: `${entry.order_id || ""}-${entry.seen_at}` } },
      h("span", { class: "ticker-time" }, timeOfDay(entry.at || entry.placed_at || new Date(entry.seen_at).toISOString())),
      " ",
      t("ticker.bought", { who, n: entry.quantity || 1, what }),
    );
  });
  if (!items.length) items.push(h("li", { class: "muted" }, t("common.none")));
  const keys = items.map((li) => li.dataset.key || "").join("|");
  if (list.dataset.keys !== keys || list.dataset.lang !== document.documentElement.lang) {
    list.dataset.keys = keys;
    list.dataset.lang = document.documentElement.lang;
    list.replaceChildren(...items);
  }
}

function renderOrder() {
  const order = orders.current;
  show("#order", Boolean(order));
  if (!order) return;
  const status = orders.paying && order.status === "held" ? "paying" : order.status;
  const statusNode = $("#order-status");
  statusNode.dataset.status = status;
  setText(statusNode, t(`order.status.${status}`));
  setText("#order-amount", money(order.amount_cents));
  setText("#order-id", `#${order.order_id}`);
  const holdLeft = order.status === "held" ? orders.msUntilHoldExpires() : 0;
  setText("#order-hold", order.status === "held" ? t("buy.held", { t: clock(holdLeft) }) : "");
  const pay = $("#pay");
  show(pay, order.status === "held");
  pay.disabled = orders.paying;
  setText(pay, orders.paying ? t("order.payPending") : t("order.pay", { amount: money(order.amount_cents) }));
}

function renderSession() {
  show("#signin", !token);
  setText("#whoami", user ? t("common.signedInAs", { name: user.sub }) : "");
  show("#signout", Boolean(token));
}

function renderAll() {
  renderRoom();
  renderOrder();
  renderSession();
}

// --- actions ---

async function enterThroughLink() {
  if (!via || !token || !user) return;
  const key = `livesell.entered.${roomId}.${via}.${user.sub}`;
  if (localStorage.getItem(key)) return;
  try {
    await api.enter(roomId, via);
    localStorage.setItem(key, String(Date.now()));
  } catch (err) {
    // a stale or foreign link must not stop anyone from watching and buying
    if (err.status && err.status < 500) localStorage.setItem(key, "refused");
  }
}

function reservedKey() {
  return user ? `livesell.reserved.${roomId}.${user.sub}` : null;
}

async function reserve() {
  if (!token) {
    $("#signin-name").focus();
    return;
  }
  const button = $("#reserve-button");
  button.disabled = true;
  show("#reserve-error", false);
  try {
    const result = await api.reserve(roomId, via);
    reserved = true;
    localStorage.setItem(reservedKey(), "1");
    if (typeof result.reservations === "number") state.reservations = result.reservations;
  } catch (err) {
    const box = $("#reserve-error");
    box.textContent = errorText(err);
    show(box, true);
  }
  renderReserve();
}

async function onSignedIn(newToken) {
  token = newToken;
  user = claims(token);
  reserved = Boolean(localStorage.getItem(reservedKey()));
  if (hub) hub.useToken(token);
  renderAll();
  await enterThroughLink();
  await Promise.all([orders.restore(), loadClaims()]);
}

function wireControls() {
  $("#qty-minus").addEventListener("click", () => {
    const qty = $("#qty");
    qty.value = String(Math.max(1, Number(qty.value) - 1));
  });
  $("#qty-plus").addEventListener("click", () => {
    const qty = $("#qty");
    qty.value = String(Math.min(Number(qty.max) || 1, Number(qty.value) + 1));
  });
  $("#pay").addEventListener("click", () =>
  orders.pay($("#pay")).catch((err) => showError("#pay-error", err)),
);
  $("#order-dismiss").addEventListener("click", () => orders.dismiss());
  $("#reserve-button").addEventListener("click", () => reserve());
  $("#coupon-pick").addEventListener("change", () => {
    $("#coupon-pick").dataset.touched = "1";
    renderDrop();
  });
  $("#qty").addEventListener("input", () => renderDrop());
  $("#signout").addEventListener("click", () => {
    signOut(SLOT);
    token = null;
    user = null;
    myClaims = [];
    reserved = false;
    if (hub) hub.useToken(null);
    orders.forget();
    renderAll();
  });
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("#signin-name").value.trim() || `viewer-${newKey().slice(0, 6)}`;
    try {
      await onSignedIn(await devSignIn(SLOT, name, ["viewer"]));
    } catch (err) {
      toast(errorText(err), "error");
    }
  });
}

function showError(selector, err) {
  const box = $(selector);
  box.textContent = errorText(err);
  show(box, true);
  setTimeout(() => show(box, false), 6000);
}

async function main() {
  installLangSwitch();
  onLangChange(renderAll);
  wireControls();
  reserved = Boolean(reservedKey() && localStorage.getItem(reservedKey()));
  state.onChange((what) => {
    if (what === "room.live" && reserved) toast(t("room.liveNow"), "success");
    renderRoom();
  });
  renderAll();

  const found = await config().catch(() => ({ dev: false }));
  if (found.dev) {
    show("#signin-form", true);
    $("#signin-text").dataset.i18n = "common.signIn";
    setText("#signin-text", t("common.signIn"));
  }
  hubBadge("connecting");
  const loading = state.reload().catch((err) => toast(errorText(err), "error"));
  openHub({ tokens: hubTokens(SLOT), onState: hubBadge })
    .then((opened) => {
      hub = opened;
      const chat = mountChat({ root: $("#chat"), roomId, signedIn: Boolean(token), moderate: false, ...chatChannel(hub) });
      // the like count comes with the room's events (likes.changed on room:{id})
      state.onChange((what, event) => {
        if (what === "likes.changed" || what === "snapshot") {
          chat.roomEvent({ type: "likes.changed", total: state.likes });
        }
      });
      state.attach(hub, (err) => toast(errorText(err), "error"));
    })
    .catch((err) => {
      if (err instanceof HubUnavailable) {
        setInterval(() => state.reload().catch(() => {}), POLL_MS);
        return;
      }
      hubBadge("failed");
      toast(errorText(err), "error");
    });
  await loading;
  await enterThroughLink();
  await Promise.all([orders.restore(), loadClaims()]);
  // countdowns tick on the server's clock
  setInterval(() => {
    renderCoupons();
    renderDrop();
    renderOrder();
  }, 250);
}

main();
