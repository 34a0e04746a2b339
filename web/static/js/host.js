// The host console: go live / end, pin products, start and close drops, and watch stock, orders,
// viewers and the distributor leaderboard move. Every action goes through the public API; every
// update arrives through the hub.

import { api } from "./api.js";
import { chatChannel, mountChat } from "./chat.js";
import { config } from "./config.js";
import { HubUnavailable, openHub } from "./live.js";
import { errorText, installLangSwitch, onLangChange, t } from "./i18n.js";
import { leaderboardTable, teamsTable } from "./leaderboard.js";
import { RoomState } from "./roomstate.js";
import { claims, devSignIn, hubTokens, signOut, takeToken } from "./session.js";
import { couponTerms } from "./coupons.js";
import { $, clock, h, hubBadge, money, setText, show, timeOfDay, toast } from "./ui.js";

const SLOT = "host";
// room events after which the sales totals may have moved (a payment, a refund, a new snapshot)
const SALES_EVENTS = new Set(["snapshot", "order.placed", "stock.changed", "drop.closed"]);
const roomId = window.location.pathname.split("/").filter(Boolean)[1];
const state = new RoomState(roomId);
// without the hub client (set up without npm), the room's snapshot is reloaded this often
const POLL_MS = 5000;
let hub = null;
const products = new Map(); // id → product
let productsNext = null; // next_before of the host's own products (GET /api/products?mine=1)
let sales = null; // GET /api/rooms/{id}/sales: paid orders in all and per drop
let salesTimer = null;
let token = takeToken(SLOT);
let user = token ? claims(token) : null;

function addProduct(product) {
  if (!product || product.id === undefined || product.id === null) return;
  products.set(String(product.id), product);
}

// Products added by id on this device (another host's, say): the listing holds only the host's own.
function addedKey() {
  return user ? `livesell.products.${user.sub}` : null;
}

function addedIds() {
  const key = addedKey();
  try {
    return key ? JSON.parse(localStorage.getItem(key) || "[]") : [];
  } catch {
    return [];
  }
}

function rememberAdded(product) {
  addProduct(product);
  const key = addedKey();
  if (!key || !product) return;
  const ids = new Set(addedIds());
  ids.add(String(product.id));
  localStorage.setItem(key, JSON.stringify([...ids].slice(-200)));
}

const mayList = () => Boolean(user && (user.roles.includes("host") || user.roles.includes("admin")));

// The host's own products, newest first: the first page, or (more) the page after the last shown.
async function loadMyProducts(more = false) {
  if (!mayList()) return;
  const found = await api.myProducts({ before: more ? productsNext : undefined });
  for (const product of found.products) addProduct(product);
  productsNext = found.next_before;
}

async function loadProducts() {
  await loadMyProducts().catch((err) => toast(errorText(err), "error"));
  const known = addedIds();
  // `?products=1,2,3` (the demo's link) adds products the console has not seen yet
  const linked = (new URLSearchParams(window.location.search).get("products") || "")
    .split(",")
    .filter((id) => /^[0-9]{1,18}$/.test(id));
  const wanted = new Set([...known, ...linked]);
  if (state.pinned) addProduct(state.pinned);
  if (state.drop && state.drop.product_id) wanted.add(state.drop.product_id);
  await Promise.all(
    [...wanted]
      .filter((id) => !products.has(String(id)))
      .map((id) => api.product(id).then(addProduct, () => null)),
  );
  renderProducts();
}

// --- rendering ---

function isHost() {
  if (!user) return false;
  if (user.roles.includes("admin")) return true;
  const hostId = state.room && state.room.host_id;
  return hostId ? hostId === user.sub : user.roles.includes("host");
}

function renderRoom() {
  const notice = $("#room-notice");
  if (state.missing) {
    notice.textContent = t("room.notFound");
    show(notice, true);
    show("#console", false);
    return;
  }
  const room = state.room;
  show(notice, !room);
  if (!room) return;
  setText("#room-title", `${room.title || "#" + roomId} · ${t("host.title")}`);
  document.title = `${room.title || roomId} · ${t("host.title")}`;
  const pill = $("#room-status");
  pill.dataset.status = room.status;
  setText(pill, t(`room.status.${room.status}`));
  setText("#viewers", t("room.viewers", { n: state.viewers }));
  const allowed = isHost();
  show("#console", allowed);
  show("#signin", !allowed);
  $("#go-live").disabled = room.status !== "scheduled";
  $("#end-room").disabled = room.status === "ended";
  const viewerUrl = `${window.location.origin}/r/${roomId}`;
  const link = $("#viewer-link");
  link.href = viewerUrl;
  setText(link, viewerUrl);
  setText("#reservations", String(state.reservations));
  renderDrop();
  renderCoupons();
  renderProducts();
  renderTicker();
  renderSales();
  renderLeaderboard();
}

// the room's coupons with what is left of each, live from coupon.released / coupon.remaining
function renderCoupons() {
  const coupons = state.couponList();
  show("#host-coupons-empty", coupons.length === 0);
  const statusKey = { gone: "coupon.gone", ended: "coupon.ended" };
  const items = coupons.map((coupon) => {
    const status =
      coupon.phase === "upcoming"
        ? t("coupon.opensIn", { t: clock(Date.parse(coupon.claim_starts_at) - state.clock.now()) })
        : coupon.phase === "active"
          ? clock(Date.parse(coupon.claim_ends_at) - state.clock.now())
          : t(statusKey[coupon.phase]);
    return h(
      "li",
      { class: "coupon-item", dataset: { couponId: String(coupon.id), phase: coupon.phase } },
      h(
        "div",
        { class: "grow" },
        h("strong", { class: "coupon-title" }, coupon.title),
        h("p", { class: "coupon-off" }, couponTerms(coupon)),
        h("p", { class: "muted small coupon-left" }, t("coupon.left", { n: Math.max(0, coupon.remaining), q: coupon.quantity })),
      ),
      h("span", { class: "muted small coupon-status" }, status),
    );
  });
  $("#host-coupons").replaceChildren(...items);
}

async function loadReservations() {
  if (!isHost() || !state.room || state.room.status !== "scheduled") return;
  try {
    const found = await api.reservations(roomId);
    state.reservations = found.count;
    setText("#reservations", String(found.count));
  } catch {
    // offline, or not this room's host after all: the snapshot's count stays
  }
}

function renderDrop() {
  const drop = state.drop;
  const phase = state.dropPhase();
  show("#drop-empty", !drop);
  show("#drop-live", Boolean(drop));
  if (!drop) return;
  const product = products.get(drop.product_id);
  setText("#drop-price", money(drop.price_cents));
  setText("#drop-product", product ? product.title : `#${drop.product_id}`);
  const countdown = $("#drop-countdown");
  countdown.dataset.phase = phase;
  if (phase === "upcoming") setText(countdown, t("drop.startsIn", { t: clock(state.msUntilStart()) }));
  else if (phase === "live") setText(countdown, t("drop.endsIn", { t: clock(state.msUntilEnd()) }));
  else if (phase === "sold_out") setText(countdown, t("drop.soldOut"));
  else if (phase === "closed") setText(countdown, t("drop.closed"));
  else setText(countdown, t("drop.ended"));
  const remaining = Math.max(0, drop.remaining);
  $("#stock-fill").style.width = `${drop.quantity ? ((remaining * 100) / drop.quantity).toFixed(2) : 0}%`;
  $("#stock").setAttribute("aria-valuemax", String(drop.quantity));
  $("#stock").setAttribute("aria-valuenow", String(remaining));
  setText("#count-sold", drop.sold);
  setText("#count-held", drop.held);
  setText("#count-remaining", remaining);
  const dropSales = sales && sales.drops.find((row) => String(row.drop_id) === drop.id);
  setText("#drop-revenue", money(dropSales ? dropSales.revenue_cents : 0));
  $("#close-drop").disabled = !["upcoming", "live", "sold_out"].includes(phase);
}

function renderProducts() {
  const list = $("#products");
  const pinnedId = state.pinned ? String(state.pinned.id) : null;
  if (state.pinned) products.set(pinnedId, state.pinned);
  const items = [...products.values()].sort((a, b) => Number(b.id) - Number(a.id));
  show("#products-empty", items.length === 0);
  show("#products-more", Boolean(productsNext));
  list.replaceChildren(
    ...items.map((product) => {
      const pinned = String(product.id) === pinnedId;
      const image = h("div", { class: "product-image", "aria-hidden": "true" });
      if (product.image_url) image.append(h("img", { src: product.image_url, alt: "" }));
      else image.textContent = Array.from(product.title || "?")[0];
      return h(
        "li",
        { class: pinned ? "pinned" : null, dataset: { productId: String(product.id) } },
        image,
        h(
          "div",
          { class: "grow" },
          h("strong", {}, product.title),
          h("span", { class: "muted" }, `${money(product.price_cents)} · ${product.sku} · #${product.id}`),
        ),
        pinned
          ? h("button", { type: "button", class: "secondary", onclick: () => act(() => api.unpin(roomId)) }, t("host.unpin"))
          : h("button", { type: "button", class: "primary", onclick: () => act(() => api.pin(roomId, product.id)) }, t("host.pin")),
      );
    }),
  );
  const select = $("#drop-product-id");
  const chosen = select.value || pinnedId || "";
  select.replaceChildren(
    ...items.map((product) => h("option", { value: String(product.id) }, `${product.title} (${money(product.price_cents)})`)),
  );
  if (chosen && products.has(chosen)) select.value = chosen;
  const price = $("#drop-price-input");
  const selected = products.get(select.value);
  if (!price.value && selected) price.value = (selected.price_cents / 100).toFixed(2);
}

function productTitle(productId) {
  const product = products.get(String(productId)) || state.product(productId);
  return product ? product.title : `#${productId}`;
}

function renderSales() {
  const totals = sales || { revenue_cents: 0, orders: 0, units: 0, refunded_cents: 0, drops: [] };
  setText("#sales-revenue", money(totals.revenue_cents));
  setText("#sales-orders", totals.orders);
  setText("#sales-units", totals.units);
  const refunded = $("#sales-refunded");
  show(refunded, totals.refunded_cents > 0);
  setText(refunded, t("host.refundedNote", { amount: money(totals.refunded_cents) }));
  const rows = totals.drops.filter((row) => row.orders > 0);
  const box = $("#sales-drops");
  if (!rows.length) {
    box.replaceChildren(h("p", { class: "muted" }, t("host.salesEmpty")));
    return;
  }
  box.replaceChildren(
    h(
      "table",
      { class: "sales-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", {}, t("host.dropCol")),
          h("th", { class: "num" }, t("host.paidOrders")),
          h("th", { class: "num" }, t("host.unitsSold")),
          h("th", { class: "num" }, t("host.revenue")),
        ),
      ),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h(
            "tr",
            { dataset: { dropId: String(row.drop_id) } },
            h("td", { class: "wrap" }, productTitle(row.product_id)),
            h("td", { class: "num" }, String(row.orders)),
            h("td", { class: "num" }, String(row.units)),
            h("td", { class: "num" }, money(row.revenue_cents)),
          ),
        ),
      ),
    ),
  );
}

async function loadSales() {
  if (!isHost()) return;
  try {
    sales = await api.sales(roomId);
  } catch {
    return; // not this room's host after all, or offline: the totals stay as they were
  }
  renderSales();
  renderDrop();
}

// paid orders and refunds move the totals; a burst of them is one fetch (at most ~3 a second)
function salesChanged() {
  if (salesTimer !== null) return;
  salesTimer = setTimeout(() => {
    salesTimer = null;
    loadSales();
  }, 300);
}

function renderTicker() {
  const list = $("#ticker");
  const items = state.ticker.map((entry) =>
    h(
      "li",
      {},
      h("span", { class: "ticker-time" }, timeOfDay(entry.at || entry.placed_at || new Date(entry.seen_at).toISOString())),
      " ",
      t("ticker.bought", {
        who: entry.buyer || entry.buyer_masked || t("ticker.someone"),
        n: entry.quantity || 1,
        what: (products.get(String(entry.product_id)) || state.product(entry.product_id) || {}).title || "",
      }),
      tickerAmount(entry) ? ` · ${money(tickerAmount(entry))}` : "",
    ),
  );
  if (!items.length) items.push(h("li", { class: "muted" }, t("host.ordersWaiting")));
  list.replaceChildren(...items);
}

// order.placed names quantity and drop; the amount follows from the drop's flash price
function tickerAmount(entry) {
  if (entry.amount_cents) return entry.amount_cents;
  const drop = state.drop;
  if (drop && String(entry.drop_id) === drop.id) return drop.price_cents * (entry.quantity || 1);
  return 0;
}

function renderLeaderboard() {
  const box = $("#leaderboard");
  box.replaceChildren(leaderboardTable(state.leaderboard), teamsTable(state.leaderboard) || "");
}

function renderSession() {
  setText("#whoami", user ? t("common.signedInAs", { name: user.sub }) : "");
  show("#signout", Boolean(token));
}

// --- actions ---

async function act(action, errorBox = "#controls-error") {
  const box = $(errorBox);
  show(box, false);
  try {
    return await action();
  } catch (err) {
    box.textContent = errorText(err);
    show(box, true);
    return null;
  }
}

const cents = (value) => Math.round(Number(value) * 100);

function wireControls() {
  $("#go-live").addEventListener("click", () => act(() => api.goLive(roomId)));
  $("#end-room").addEventListener("click", () => {
    if (window.confirm(t("host.endConfirm"))) act(() => api.endRoom(roomId));
  });
  $("#close-drop").addEventListener("click", () => state.drop && act(() => api.closeDrop(state.drop.id)));
  $("#drop-product-id").addEventListener("change", () => {
    const product = products.get($("#drop-product-id").value);
    if (product) $("#drop-price-input").value = (product.price_cents / 100).toFixed(2);
  });
  $("#drop-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("#start-drop");
    button.disabled = true;
    const drop = await act(
      () =>
        api.startDrop(roomId, {
          product_id: $("#drop-product-id").value,
          price_cents: cents($("#drop-price-input").value),
          quantity: Number($("#drop-quantity").value),
          per_buyer_limit: Number($("#drop-limit").value),
          starts_in_s: Number($("#drop-delay").value),
          duration_s: Number($("#drop-duration").value),
        }),
      "#drop-error",
    );
    button.disabled = false;
    if (!drop) return;
    // starts_in_s > 0 schedules the drop: it starts by itself when its countdown runs out
    const delay = Number($("#drop-delay").value);
    if (drop.status === "scheduled" || (drop.status === undefined && delay > 0)) {
      toast(t("host.dropScheduled", { t: clock(delay * 1000) }), "success");
    } else {
      toast(t("host.dropStarted"), "success");
    }
  });
  $("#coupon-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("#release-coupon");
    button.disabled = true;
    const value = Number($("#coupon-value").value);
    const terms = $("#coupon-kind").value === "percent"
      ? { percent_off_bps: Math.round(value * 100) }
      : { amount_off_cents: cents(value) };
    const coupon = await act(
      () =>
        api.createCoupon(roomId, {
          title: $("#coupon-title").value.trim(),
          ...terms,
          min_spend_cents: cents($("#coupon-min").value),
          quantity: Number($("#coupon-quantity").value),
          per_user_limit: Number($("#coupon-per-user").value),
          claim_starts_in_s: Number($("#coupon-delay").value),
          claim_duration_s: Number($("#coupon-window").value),
          valid_s: Number($("#coupon-valid").value),
        }),
      "#coupon-error",
    );
    button.disabled = false;
    if (!coupon) return;
    // the hub's coupon.released follows; shown now so the host sees it without waiting
    if (!state.coupons.has(String(coupon.id))) state.coupons.set(String(coupon.id), coupon);
    $("#coupon-title").value = "";
    toast(t("host.released"), "success");
    renderCoupons();
  });
  $("#coupon-kind").addEventListener("change", () => {
    $("#coupon-value").max = $("#coupon-kind").value === "percent" ? "100" : "";
  });
  $("#product-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const product = await act(
      () =>
        api.createProduct({
          sku: $("#product-sku").value.trim(),
          title: $("#product-title").value.trim(),
          price_cents: cents($("#product-price").value),
          commission_bps: Math.round(Number($("#product-commission").value) * 100),
        }),
      "#product-error",
    );
    if (product) {
      addProduct(product); // the host's own: listed from the API from now on
      event.target.reset();
      toast(t("host.productCreated"), "success");
      renderProducts();
    }
  });
  $("#existing-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const product = await act(() => api.product($("#existing-id").value.trim()));
    if (product) {
      rememberAdded(product);
      event.target.reset();
      renderProducts();
    }
  });
  $("#products-more").addEventListener("click", async () => {
    await act(() => loadMyProducts(true));
    renderProducts();
  });
  $("#signout").addEventListener("click", () => {
    signOut(SLOT);
    token = null;
    user = null;
    if (hub) hub.useToken(null);
    renderSession();
    renderRoom();
  });
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("#signin-name").value.trim() || (state.room && state.room.host_id) || "host";
    try {
      token = await devSignIn(SLOT, name, ["host"]);
      user = claims(token);
      if (hub) hub.useToken(token);
      renderSession();
      renderRoom();
      loadSales();
      await loadProducts();
      await loadReservations();
    } catch (err) {
      toast(errorText(err), "error");
    }
  });
}

async function main() {
  installLangSwitch();
  onLangChange(() => {
    renderRoom();
    renderSession();
  });
  wireControls();
  renderSession();
  state.onChange((what) => {
    if (what === "card.pinned" && state.pinned) addProduct(state.pinned);
    if (SALES_EVENTS.has(what)) salesChanged();
    renderRoom();
  });
  hubBadge("connecting");
  const found = await config().catch(() => ({ dev: false }));
  show("#signin-form", Boolean(found.dev));
  openHub({ tokens: hubTokens(SLOT), onState: hubBadge })
    .then((opened) => {
      hub = opened;
      const chat = mountChat({ root: $("#chat"), roomId, signedIn: Boolean(token), moderate: true, ...chatChannel(hub) });
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
  await state.reload().catch((err) => toast(errorText(err), "error"));
  api.leaderboard(roomId).then(
    (view) => {
      if (!state.leaderboard) state.leaderboard = view;
      renderLeaderboard();
    },
    () => {},
  );
  await loadProducts();
  await loadReservations();
  // reservations arrive without an event: the count is asked for again while the room waits
  setInterval(loadReservations, 15000);
  setInterval(() => {
    renderDrop();
    renderCoupons();
  }, 250);
}

main();
