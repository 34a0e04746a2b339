// The distributor's page: become a distributor, make room links (copy + QR code for chats), and
// watch clicks, orders and commission move live on `dashboard#{user_id}`.

import { api } from "./api.js";
import { config } from "./config.js";
import { HubUnavailable, openHub } from "./live.js";
import { errorText, installLangSwitch, onLangChange, t } from "./i18n.js";
import { leaderboardTable } from "./leaderboard.js";
import { claims, devSignIn, hubTokens, signOut, takeToken } from "./session.js";
import {
  $, copyText, dateTime, h, hubBadge, money, percentFromBps, setText, show, timeOfDay, toast,
} from "./ui.js";

const SLOT = "distributor";
const FEED_SIZE = 12;
// without the hub client (set up without npm), the numbers are fetched again this often
const POLL_MS = 10000;
const params = new URLSearchParams(window.location.search);
let token = takeToken(SLOT);
let user = token ? claims(token) : null;
let me = null; // the dashboard view from GET /api/distributors/me or stats.changed
let hub = null;
let rankRoom = null;
let rankSub = null;
let leaderboard = null;
const feed = [];
// GET /api/distributors/me/links and …/payouts, newest first, a page at a time
let links = [];
let linksNext = null;
let payouts = null; // null: not loaded (or failed: see payoutsError)
let payoutsNext = null;
let payoutsError = null;
let wallet = null; // GET /api/distributors/me/withdrawals: balance, terms and the withdrawals
let referralCode = null; // the distributor's code (GET /api/distributors/me/codes, made once)

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

function linkPlace(link) {
  const room = `${t("dist.roomId")} ${link.room_id}`;
  return link.product_id ? `${room} · ${t("dist.productId")} ${link.product_id}` : room;
}

function renderLinks() {
  const list = $("#links");
  show("#links-more", Boolean(linksNext));
  list.replaceChildren(
    ...links.map((link) => {
      const url = absolute(link.url);
      // the server draws the code (segno, SVG) for the URL the links API reports
      const qr = h("img", {
        class: "qr",
        src: `/l/${encodeURIComponent(link.code)}/qr.svg`,
        alt: t("dist.scan"),
        dataset: { url },
      });
      const copy = h("button", { type: "button", class: "secondary" }, t("common.copy"));
      copy.addEventListener("click", async () => {
        const done = await copyText(url);
        toast(done ? t("common.copied") : t("common.copyFailed"), done ? "success" : "error");
      });
      return h(
        "li",
        { class: "link-item", dataset: { code: link.code } },
        qr,
        h(
          "div",
          { class: "grow" },
          h("p", { class: "muted" }, `${linkPlace(link)} · ${dateTime(link.created_at)}`),
          h("p", { class: "link-clicks" }, t("dist.linkClicks", { n: link.clicks ?? 0 })),
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

function renderPayouts() {
  const box = $("#payouts");
  show("#payouts-more", Boolean(payoutsNext));
  if (payoutsError) {
    box.replaceChildren(h("p", { class: "form-error" }, errorText(payoutsError)));
    return;
  }
  if (!payouts) {
    box.replaceChildren();
    return;
  }
  if (!payouts.length) {
    box.replaceChildren(h("p", { class: "muted" }, t("dist.noPayouts")));
    return;
  }
  box.replaceChildren(
    h(
      "table",
      {},
      h("tbody", {}, payouts.map((row) =>
        h(
          "tr",
          { dataset: { batch: row.batch_id } },
          h("td", {}, dateTime(row.created_at)),
          h("td", { class: "muted" }, `#${row.batch_id} · ${t(`dist.payoutState.${row.state}`)}`),
          h("td", { class: "num" }, money(row.amount_cents)),
        ),
      )),
    ),
  );
}

function withdrawalTerms(view) {
  const parts = [];
  if (view.fee_cents) parts.push(money(view.fee_cents));
  if (view.fee_bps) parts.push(percentFromBps(view.fee_bps));
  const min = money(view.minimum_cents);
  return parts.length ? t("wd.terms", { min, fee: parts.join(" + ") }) : t("wd.termsFree", { min });
}

function renderWithdrawals() {
  if (!wallet) return;
  setText("#wd-available", money(wallet.available_cents));
  setText(
    "#wd-balance",
    wallet.balance_cents < 0
      ? t("wd.owing", { balance: money(wallet.balance_cents) })
      : t("wd.balanceLine", { balance: money(wallet.balance_cents), reserved: money(wallet.reserved_cents) }),
  );
  setText("#wd-terms", withdrawalTerms(wallet));
  const rows = wallet.withdrawals || [];
  $("#withdrawals").replaceChildren(
    rows.length
      ? h("table", {}, h("tbody", {}, rows.map((w) =>
          h(
            "tr",
            { dataset: { withdrawal: w.id, status: w.status } },
            h("td", {}, dateTime(w.requested_at)),
            h("td", { class: "muted" }, `${t(`wd.status.${w.status}`)}${w.note ? ` · ${w.note}` : ""}`),
            h("td", { class: "num", title: `${t("wd.fee")} ${money(w.fee_cents)} · ${t("wd.net")} ${money(w.net_cents)}` },
              money(w.amount_cents)),
          ),
        )))
      : h("p", { class: "muted" }, t("wd.none")),
  );
}

// "12", "12.5", "12.50" yuan as cents; null when it is not an amount of money
function cents(text) {
  const found = /^(\d{1,10})(?:[.,](\d{1,2}))?$/.exec(text.trim());
  return found ? Number(found[1]) * 100 + Number((found[2] || "0").padEnd(2, "0")) : null;
}

function withdrawalError(err) {
  const details = err.details || {};
  if (err.code === "withdrawal_below_minimum" && details.minimum_cents !== undefined) {
    return t("wd.belowMinimum", { min: money(details.minimum_cents) });
  }
  if (err.code === "insufficient_balance" && details.available_cents !== undefined) {
    return t("wd.insufficient", { available: money(details.available_cents) });
  }
  return errorText(err);
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
  renderPayouts();
  renderWithdrawals();
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

// Both lists: the first page again, or (more) the page after the last one shown.
async function loadLinks(more = false) {
  const found = await api.myLinks({ before: more ? linksNext : undefined });
  const shown = new Set(more ? links.map((link) => link.code) : []);
  links = [...(more ? links : []), ...found.links.filter((link) => !shown.has(link.code))];
  linksNext = found.next_before;
  renderLinks();
}

async function loadPayouts(more = false) {
  try {
    const found = await api.payouts({ before: more ? payoutsNext : undefined });
    payouts = [...(more && payouts ? payouts : []), ...found.payouts];
    payoutsNext = found.next_before;
    payoutsError = null;
  } catch (err) {
    payoutsError = err;
  }
  renderPayouts();
}

// the distributor's referral code: the one they have, or one made for them the first time
async function loadCode() {
  const box = $("#code-error");
  show(box, false);
  try {
    const found = await api.myCodes();
    const code = found.codes && found.codes[0] ? found.codes[0] : await api.createCode();
    referralCode = code.code;
  } catch (err) {
    box.textContent = errorText(err);
    show(box, true);
  }
  setText("#referral-code", referralCode || "");
  $("#code-copy").disabled = !referralCode;
  $("#code-share").disabled = !referralCode;
}

async function shareCode() {
  if (!referralCode) return;
  const text = t("dist.shareText", { code: referralCode });
  if (navigator.share) {
    try {
      await navigator.share({ text });
      return;
    } catch (err) {
      if (err && err.name === "AbortError") return; // the person closed the share sheet
    }
  }
  const done = await copyText(text);
  toast(done ? t("common.copied") : t("common.copyFailed"), done ? "success" : "error");
}

async function loadWithdrawals() {
  try {
    wallet = await api.myWithdrawals();
    renderWithdrawals();
  } catch (err) {
    $("#withdrawals").replaceChildren(h("p", { class: "form-error" }, errorText(err)));
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
      const paid = (stats) => stats && stats.commission_cents && stats.commission_cents.paid;
      if (previous && paid(previous) !== paid(me)) loadPayouts().catch(() => {});
      loadWithdrawals(); // a decision on a withdrawal moves no total, only its status
      return;
    }
    case "click.recorded": {
      pushFeed(() => t("dist.ev.click", { code: event.link_code }));
      const link = links.find((item) => item.code === event.link_code);
      if (link) {
        link.clicks = (link.clicks || 0) + (event.count || 1);
        renderLinks();
      }
      break;
    }
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
  if (rankSub) hub.unsubscribe(rankSub);
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

function pollWithoutHub() {
  setInterval(() => {
    loadMe().catch(() => {});
    if (rankRoom) {
      api.leaderboard(rankRoom).then((view) => {
        leaderboard = view;
        renderRank();
      }, () => {});
    }
  }, POLL_MS);
}

async function startLive() {
  if (hub || !token || !user) return;
  try {
    hub = await openHub({ tokens: hubTokens(SLOT), onState: hubBadge });
  } catch (err) {
    if (!(err instanceof HubUnavailable)) throw err;
    watchRank(params.get("room") || (links[0] && links[0].room_id));
    pollWithoutHub();
    return;
  }
  hub.subscribe(`dashboard#${user.sub}`, {
    onSubscribed: ({ first, recovered }) => {
      if (!first && !recovered) refreshSoon();
    },
    onPublication: onDashboardEvent,
    onError: (err) => toast(errorText(err), "error"),
  });
  watchRank(params.get("room") || (links[0] && links[0].room_id));
}

async function afterSignIn() {
  renderAll();
  if (!(await loadMe())) {
    hubBadge("disconnected"); // live numbers start once this person is a distributor
    return;
  }
  await Promise.all([loadLinks(), loadPayouts(), loadWithdrawals(), loadCode()]);
  await startLive();
}

// --- wiring ---

function wireControls() {
  const room = params.get("room");
  if (room) $("#link-room").value = room;
  $("#code-copy").addEventListener("click", async () => {
    const done = referralCode ? await copyText(referralCode) : false;
    toast(done ? t("common.copied") : t("common.copyFailed"), done ? "success" : "error");
  });
  $("#code-share").addEventListener("click", () => shareCode());
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
      await api.createLink(roomId);
      await loadLinks();
      watchRank(roomId);
    } catch (err) {
      box.textContent = errorText(err);
      show(box, true);
    }
  });
  $("#withdraw-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = $("#wd-error");
    show(box, false);
    const amount = cents($("#wd-amount").value);
    if (!amount) {
      box.textContent = t("error.unprocessable", { message: t("wd.amount") });
      show(box, true);
      return;
    }
    try {
      await api.requestWithdrawal(amount);
      $("#wd-amount").value = "";
      toast(t("wd.requested", { amount: money(amount) }), "success");
      await loadWithdrawals();
    } catch (err) {
      box.textContent = withdrawalError(err);
      show(box, true);
    }
  });
  $("#links-more").addEventListener("click", () =>
    loadLinks(true).catch((err) => toast(errorText(err), "error")),
  );
  $("#payouts-more").addEventListener("click", () => loadPayouts(true));
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
