// The distributor's page: become a distributor, make room links (copy + QR code for chats), and
// watch clicks, orders and commission move live on `dashboard#{user_id}`.

import { api } from "./api.js";
import { config, openHub } from "./config.js";
import { errorText, installLangSwitch, onLangChange, t } from "./i18n.js";
import { leaderboardTable } from "./leaderboard.js";
import { drawQR } from "./qr.js";
import { claims, devSignIn, signOut, takeToken } from "./session.js";
import { $, copyText, dateTime, h, hubBadge, money, setText, show, timeOfDay, toast } from "./ui.js";

const SLOT = "distributor";
const FEED_SIZE = 12;
const params = new URLSearchParams(window.location.search);
let token = takeToken(SLOT);
let user = token ? claims(token) : null;
let me = null; // the dashboard view from GET /api/distributors/me or stats.changed
let hub = null;
let rankRoom = null;
let rankSub = null;
let leaderboard = null;
const feed = [];

const linksKey = () => (user ? `livesell.links.${user.sub}` : null);

function storedLinks() {
  const key = linksKey();
  try {
    return key ? JSON.parse(localStorage.getItem(key) || "[]") : [];
  } catch {
    return [];
  }
}

function storeLink(link) {
  const key = linksKey();
  if (!key) return;
  const links = storedLinks().filter((l) => l.code !== link.code);
  links.unshift({ code: link.code, url: link.url, room_id: String(link.room_id) });
  localStorage.setItem(key, JSON.stringify(links.slice(0, 20)));
}

function absolute(url) {
  return new URL(url, window.location.origin).toString();
}

// --- rendering ---

function renderStats(previous) {
  if (!me) return;
  const commission = me.commission_cents || {};
  const values = {
    clicks: String(me.clicks ?? 0),
    visitors: String(me.visitors ?? 0),
    buyers: String(me.buyers ?? 0),
    orders: String(me.orders ?? 0),
    gmv: money(me.gmv_cents),
    pending: money(commission.pending),
    confirmed: money(commission.confirmed),
    paid: money(commission.paid),
    reversed: money(commission.reversed),
    balance: money(me.balance_cents),
  };
  for (const [name, value] of Object.entries(values)) {
    const stat = $(`#stat-${name}`);
    const strong = stat.querySelector("strong");
    if (strong.textContent !== value) {
      strong.textContent = value;
      if (previous) {
        stat.classList.remove("flash");
        void stat.offsetWidth; // restart the animation
        stat.classList.add("flash");
      }
    }
  }
  setText("#team-name", me.team || "");
}

function renderLinks() {
  const list = $("#links");
  list.replaceChildren(
    ...storedLinks().map((link) => {
      const url = absolute(link.url);
      const canvas = h("canvas", { class: "qr", "aria-label": t("dist.scan"), role: "img", dataset: { url } });
      try {
        drawQR(canvas, url, { scale: 4 });
      } catch {
        canvas.hidden = true;
      }
      const copy = h("button", { type: "button", class: "secondary" }, t("common.copy"));
      copy.addEventListener("click", async () => {
        const done = await copyText(url);
        toast(done ? t("common.copied") : t("common.copyFailed"), done ? "success" : "error");
      });
      return h(
        "li",
        { class: "link-item", dataset: { code: link.code } },
        canvas,
        h(
          "div",
          { class: "grow" },
          h("p", { class: "muted" }, `${t("dist.roomId")} ${link.room_id} · ${link.code}`),
          h("p", { class: "link-url" }, url),
          h("p", { class: "muted small" }, t("dist.scan")),
          copy,
        ),
      );
    }),
  );
}

function renderRank() {
  show("#rank-card", Boolean(rankRoom));
  if (!rankRoom) return;
  setText("#rank-title", t("dist.rank", { room: rankRoom }));
  const rows = (leaderboard && leaderboard.distributors) || [];
  const mine = me ? rows.find((row) => String(row.distributor_id) === String(me.id)) : null;
  setText("#rank", mine ? t("dist.rankValue", { rank: mine.rank, of: rows.length }) : t("dist.unranked"));
  $("#rank-table").replaceChildren(leaderboardTable(leaderboard, { me: me && me.id, limit: 5 }));
}

function renderFeed() {
  const items = feed.map((entry) =>
    h("li", {}, h("span", { class: "feed-time" }, timeOfDay(entry.at)), " ", entry.text()),
  );
  if (!items.length) items.push(h("li", { class: "muted" }, t("common.none")));
  $("#feed").replaceChildren(...items);
}

function renderPayouts(payouts) {
  const box = $("#payouts");
  if (payouts === undefined) {
    box.replaceChildren(h("p", { class: "muted" }, t("dist.payoutsMissing")));
    return;
  }
  const rows = Array.isArray(payouts) ? payouts : payouts.payouts || payouts.items || [];
  if (!rows.length) {
    box.replaceChildren(h("p", { class: "muted" }, t("dist.noPayouts")));
    return;
  }
  box.replaceChildren(
    h(
      "table",
      {},
      h("tbody", {}, rows.map((row) =>
        h("tr", {}, h("td", {}, dateTime(row.created_at || row.paid_at || row.at)), h("td", { class: "num" }, money(row.amount_cents ?? row.total_cents))),
      )),
    ),
  );
}

function renderSession() {
  show("#signin", !token);
  setText("#whoami", user ? t("common.signedInAs", { name: user.sub }) : "");
  show("#signout", Boolean(token));
}

function renderAll() {
  renderSession();
  renderStats(false);
  renderLinks();
  renderRank();
  renderFeed();
}

// --- data ---

let refreshTimer = null;

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => loadMe().catch(() => {}), 400);
}

async function loadMe() {
  try {
    const previous = me;
    me = await api.me();
    show("#become", false);
    show("#dashboard", true);
    show("#notice", false);
    renderStats(Boolean(previous));
    return true;
  } catch (err) {
    if (err.status === 404 || err.status === 403) {
      me = null;
      show("#notice", false);
      show("#dashboard", false);
      show("#become", true);
      return false;
    }
    throw err;
  }
}

async function loadPayouts() {
  try {
    renderPayouts(await api.payouts());
  } catch (err) {
    if (err.status === 404 || err.status === 405) renderPayouts(undefined);
    else renderPayouts([]);
  }
}

function pushFeed(text) {
  feed.unshift({ at: new Date().toISOString(), text });
  feed.length = Math.min(feed.length, FEED_SIZE);
  renderFeed();
}

function onDashboardEvent(event) {
  switch (event.type) {
    case "stats.changed": {
      const previous = me;
      me = { ...(me || {}), ...(event.stats || {}) };
      renderStats(Boolean(previous));
      renderRank();
      return;
    }
    case "click.recorded":
      pushFeed(() => t("dist.ev.click", { code: event.link_code }));
      break;
    case "commission.pending":
      pushFeed(() =>
        event.self_referral
          ? t("dist.ev.selfReferral", { amount: money(event.amount_cents) })
          : t("dist.ev.pending", { amount: money(event.amount_cents), commission: money(event.commission_cents) }),
      );
      break;
    case "commission.confirmed":
      pushFeed(() => t("dist.ev.confirmed", { commission: money(event.commission_cents) }));
      break;
    case "commission.reversed":
      pushFeed(() => t("dist.ev.reversed", { commission: money(event.reversed_cents) }));
      break;
    default:
      return;
  }
  refreshSoon(); // the authoritative numbers follow from the API
}

function watchRank(roomId) {
  if (!roomId || String(roomId) === rankRoom) return;
  rankRoom = String(roomId);
  leaderboard = null;
  renderRank();
  api.leaderboard(rankRoom).then((view) => {
    leaderboard = view;
    renderRank();
  }, () => {});
  if (!hub) return;
  if (rankSub) rankSub.unsubscribe();
  const room = rankRoom;
  rankSub = hub.subscribe(`room:${room}`, {
    onPublication: (event) => {
      if (event.type === "leaderboard.changed" && room === rankRoom) {
        leaderboard = event.leaderboard || event;
        renderRank();
      }
    },
  });
}

async function startLive() {
  if (hub || !token || !user) return;
  hub = await openHub({ token, onState: hubBadge });
  hub.subscribe(`dashboard#${user.sub}`, {
    onSubscribed: ({ first, recovered }) => {
      if (!first && !recovered) refreshSoon();
    },
    onPublication: onDashboardEvent,
    onError: (err) => toast(errorText(err), "error"),
  });
  const links = storedLinks();
  watchRank(params.get("room") || (links[0] && links[0].room_id));
}

async function afterSignIn() {
  renderAll();
  if (!(await loadMe())) {
    hubBadge("disconnected"); // live numbers start once this person is a distributor
    return;
  }
  await loadPayouts();
  await startLive();
}

// --- wiring ---

function wireControls() {
  const room = params.get("room");
  if (room) $("#link-room").value = room;
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("#signin-name").value.trim() || "distributor";
    try {
      token = await devSignIn(SLOT, name, ["viewer", "distributor"]);
      user = claims(token);
      await afterSignIn();
    } catch (err) {
      toast(errorText(err), "error");
    }
  });
  $("#become-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = $("#become-error");
    show(box, false);
    try {
      await api.becomeDistributor($("#team").value.trim() || null);
      toast(t("dist.welcome"), "success");
      await afterSignIn();
    } catch (err) {
      box.textContent = errorText(err);
      show(box, true);
    }
  });
  $("#link-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = $("#link-error");
    show(box, false);
    const roomId = $("#link-room").value.trim();
    try {
      const link = await api.createLink(roomId);
      storeLink({ ...link, room_id: link.room_id ?? roomId });
      renderLinks();
      watchRank(roomId);
    } catch (err) {
      box.textContent = errorText(err);
      show(box, true);
    }
  });
  $("#signout").addEventListener("click", () => {
    signOut(SLOT);
    window.location.reload();
  });
}

async function main() {
  installLangSwitch();
  onLangChange(renderAll);
  wireControls();
  renderAll();
  const found = await config().catch(() => ({ dev: false }));
  show("#signin-form", Boolean(found.dev));
  if (!token) {
    show("#notice", false);
    hubBadge("disconnected");
    return;
  }
  try {
    await afterSignIn();
  } catch (err) {
    $("#notice").textContent = errorText(err);
  }
}

main();
