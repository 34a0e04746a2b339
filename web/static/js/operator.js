// The operator console (运营后台): community analytics with team and date filters, a room's
// funnel, the review queue and the withdrawals awaiting a decision. Every number shows in a
// table; chart.js (served at /vendor/chart.umd.js once `make` installed it with npm) draws the
// same numbers as charts. Without it the page shows the tables alone.

import { api } from "./api.js";
import { config } from "./config.js";
import { errorText, installLangSwitch, onLangChange, t } from "./i18n.js";
import { claims, devSignIn, signOut, takeToken } from "./session.js";
import { $, dateTime, h, money, percentFromBps, setText, show, toast } from "./ui.js";

const SLOT = "operator";
const SECONDS_PER_DAY = 86_400;
const FUNNEL_STAGES = ["viewers", "link_clicks", "chat_posters", "coupon_claims", "buyers", "paid", "refunded"];
const ACCENT = "#e8453c";
const GOLD = "#f5a623";

let token = takeToken(SLOT);
let user = token ? claims(token) : null;
let community = null;
let funnel = null;
let reviews = null;
let reviewsError = null;
let withdrawals = null;
let withdrawalsError = null;
const charts = {}; // chart.js instances by the id of their box

// --- charts (optional) ---

function chartLibrary() {
  return typeof window.Chart === "function" ? window.Chart : null;
}

// Draw `spec` (a chart.js config) in the box `#boxId`, replacing what was there; with no library
// or nothing to draw the box stays hidden and the table beside it carries the numbers.
function drawChart(boxId, spec) {
  const box = $(`#${boxId}`);
  if (charts[boxId]) {
    charts[boxId].destroy();
    delete charts[boxId];
  }
  const Chart = chartLibrary();
  show(box, Boolean(Chart && spec));
  if (!Chart || !spec) return;
  charts[boxId] = new Chart(box.querySelector("canvas"), {
    ...spec,
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      plugins: { legend: { display: spec.data.datasets.length > 1 } },
      ...spec.options,
    },
  });
}

const yuan = (cents) => Number(cents || 0) / 100;

// --- tables ---

// columns: [{ label, num, cell(row) }]; text is always set as text
function table(columns, rows, empty = "common.none") {
  if (!rows.length) return h("p", { class: "muted" }, t(empty));
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.label)))),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null }, c.cell(row)))),
      ),
    ),
  );
}

// --- community ---

function days(seconds) {
  return seconds === null || seconds === undefined
    ? "—"
    : t("ops.days", { n: (seconds / SECONDS_PER_DAY).toFixed(1) });
}

function renderCommunity() {
  if (!community) return;
  const c = community;
  const stats = [
    ["members", String(c.members)],
    ["buyers", String(c.buyers)],
    ["orders", String(c.orders)],
    ["gmv", money(c.gmv_cents)],
    ["refunded", money(c.refunded_cents)],
    ["repeatRate", percentFromBps(c.repeat_purchase_rate_bps)],
    ["frequency", String(c.purchase_frequency)],
    ["aov", money(c.average_order_value_cents)],
    ["gap", days(c.avg_repurchase_gap_s)],
    ["perBuyer", money(c.gmv_per_buyer_cents)],
  ];
  $("#community-stats").replaceChildren(
    ...stats.map(([name, value]) =>
      h("div", { class: "stat", id: `ops-${name}` }, h("strong", {}, value), h("span", {}, t(`ops.stat.${name}`))),
    ),
  );
  $("#cohort-table").replaceChildren(
    table(
      [
        { label: t("ops.month"), cell: (r) => r.month },
        { label: t("ops.stat.buyers"), num: true, cell: (r) => String(r.buyers) },
        { label: t("ops.stat.gmv"), num: true, cell: (r) => money(r.gmv_cents) },
        { label: t("ops.ltv"), num: true, cell: (r) => money(r.ltv_cents) },
      ],
      c.cohorts,
    ),
  );
  const contribution = (rows, nameOf) =>
    table(
      [
        { label: nameOf.label, cell: nameOf.cell },
        { label: t("ops.stat.orders"), num: true, cell: (r) => String(r.orders) },
        { label: t("ops.stat.gmv"), num: true, cell: (r) => money(r.gmv_cents) },
        { label: t("ops.share"), num: true, cell: (r) => percentFromBps(r.share_bps) },
      ],
      rows,
    );
  $("#distributor-table").replaceChildren(
    contribution(c.distributors, { label: t("lb.distributor"), cell: (r) => r.name || r.id }),
  );
  $("#team-table").replaceChildren(
    contribution(c.teams, { label: t("lb.team"), cell: (r) => r.name || t("ops.noTeam") }),
  );
  drawChart(
    "cohort-chart",
    c.cohorts.length && {
      type: "bar",
      data: {
        labels: c.cohorts.map((r) => r.month),
        datasets: [{ label: t("ops.ltv"), data: c.cohorts.map((r) => yuan(r.ltv_cents)), backgroundColor: ACCENT, maxBarThickness: 36 }],
      },
    },
  );
  const top = c.distributors.slice(0, 10);
  drawChart(
    "contribution-chart",
    top.length && {
      type: "bar",
      data: {
        labels: top.map((r) => r.name || r.id),
        datasets: [{ label: t("ops.stat.gmv"), data: top.map((r) => yuan(r.gmv_cents)), backgroundColor: GOLD, maxBarThickness: 36 }],
      },
      options: { indexAxis: "y" },
    },
  );
}

// A date input's day as the start of that day in UTC (the analytics count paid_at in UTC).
function dayStart(value) {
  return value ? `${value}T00:00:00Z` : undefined;
}

async function loadCommunity() {
  const box = $("#community-error");
  show(box, false);
  try {
    community = await api.community({
      team: $("#filter-team").value.trim() || undefined,
      from: dayStart($("#filter-from").value),
      to: dayStart($("#filter-to").value),
    });
    renderCommunity();
  } catch (err) {
    box.textContent = errorText(err);
    show(box, true);
  }
}

// --- funnel ---

function renderFunnel() {
  if (!funnel) {
    $("#funnel-table").replaceChildren();
    drawChart("funnel-chart", null);
    return;
  }
  const top = funnel.viewers || 0;
  $("#funnel-table").replaceChildren(
    table(
      [
        { label: t("ops.stage"), cell: (stage) => t(`ops.stage.${stage}`) },
        { label: t("ops.count"), num: true, cell: (stage) => String(funnel[stage] ?? 0) },
        {
          label: t("ops.ofViewers"),
          num: true,
          cell: (stage) => (top ? percentFromBps(Math.floor(((funnel[stage] ?? 0) * 10_000) / top)) : "—"),
        },
      ],
      FUNNEL_STAGES,
    ),
  );
  drawChart("funnel-chart", {
    type: "bar",
    data: {
      labels: FUNNEL_STAGES.map((stage) => t(`ops.stage.${stage}`)),
      datasets: [{ label: t("ops.count"), data: FUNNEL_STAGES.map((stage) => funnel[stage] ?? 0), backgroundColor: ACCENT, maxBarThickness: 36 }],
    },
    options: { indexAxis: "y" },
  });
}

async function loadFunnel(roomId) {
  const box = $("#funnel-error");
  show(box, false);
  try {
    funnel = await api.funnel(roomId);
  } catch (err) {
    funnel = null;
    box.textContent = errorText(err);
    show(box, true);
  }
  renderFunnel();
}

// --- decisions: reviews and withdrawals ---

// The note field and the approve / reject buttons of one queue item.
function decisionControls(decide) {
  const note = h("input", { maxlength: "1000", placeholder: t("ops.note"), class: "note" });
  const button = (decision, label, kind) =>
    h("button", {
      type: "button",
      class: kind,
      dataset: { decision },
      onclick: async (event) => {
        const row = event.target.closest("li");
        for (const b of row.querySelectorAll("button")) b.disabled = true;
        try {
          await decide(decision, note.value.trim());
        } catch (err) {
          toast(errorText(err), "error");
          for (const b of row.querySelectorAll("button")) b.disabled = false;
        }
      },
    }, label);
  return h("div", { class: "decide" }, note, button("approve", t("ops.approve"), "primary"),
    button("reject", t("ops.reject"), "danger"));
}

function queue(selector, items, error, empty, item) {
  const list = $(selector);
  if (error) {
    list.replaceChildren(h("li", { class: "form-error" }, errorText(error)));
  } else if (items && !items.length) {
    list.replaceChildren(h("li", { class: "muted" }, t(empty)));
  } else {
    list.replaceChildren(...(items || []).map(item));
  }
}

function reasonText(reason) {
  const key = `ops.reason.${reason}`;
  const text = t(key);
  return text === key ? reason : text;
}

function renderReviews() {
  queue("#reviews", reviews, reviewsError, "ops.noReviews", (r) =>
    h(
      "li",
      { dataset: { order: r.order_id } },
      h("strong", {}, t("ops.orderLine", { order: r.order_id, room: r.room_id })),
      h("span", { class: "reasons" }, r.reasons.map(reasonText).join(" · ")),
      h(
        "div",
        { class: "facts" },
        h("span", {}, `${t("lb.distributor")}: ${r.distributor_user_id}`),
        h("span", {}, `${t("ops.buyer")}: ${r.buyer_id}`),
        h("span", {}, `${t("ops.amount")}: ${money(r.amount_cents)}`),
        h("span", {}, `${t("dist.commission")}: ${money(r.commission_cents)}`),
        h("span", { class: "muted" }, dateTime(r.flagged_at)),
      ),
      decisionControls(async (decision, note) => {
        await api.decideReview(r.order_id, decision, note);
        toast(t(decision === "approve" ? "ops.approved" : "ops.rejected"), "success");
        await loadReviews();
      }),
    ),
  );
}

function renderWithdrawals() {
  queue("#withdrawals", withdrawals, withdrawalsError, "ops.noWithdrawals", (w) =>
    h(
      "li",
      { dataset: { withdrawal: w.id } },
      h("strong", {}, t("ops.withdrawalLine", { id: w.id, distributor: w.distributor_id })),
      h(
        "div",
        { class: "facts" },
        h("span", {}, `${t("ops.amount")}: ${money(w.amount_cents)}`),
        h("span", {}, `${t("wd.fee")}: ${money(w.fee_cents)}`),
        h("span", {}, `${t("wd.net")}: ${money(w.net_cents)}`),
        h("span", { class: "muted" }, dateTime(w.requested_at)),
      ),
      decisionControls(async (decision, note) => {
        await api.decideWithdrawal(w.id, decision, note);
        toast(t(decision === "approve" ? "ops.approved" : "ops.rejected"), "success");
        await loadWithdrawals();
      }),
    ),
  );
}

async function loadReviews() {
  try {
    reviews = (await api.reviews("open")).reviews;
    reviewsError = null;
  } catch (err) {
    reviewsError = err;
  }
  renderReviews();
}

async function loadWithdrawals() {
  try {
    withdrawals = (await api.withdrawalQueue("requested")).withdrawals;
    withdrawalsError = null;
  } catch (err) {
    withdrawalsError = err;
  }
  renderWithdrawals();
}

// --- session and wiring ---

function isAdmin() {
  return Boolean(user && user.roles.includes("admin"));
}

function renderAll() {
  show("#signin", !isAdmin());
  show("#console", isAdmin());
  setText("#whoami", user ? t("common.signedInAs", { name: user.sub }) : "");
  show("#signout", Boolean(token));
  renderCommunity();
  renderFunnel();
  if (reviews || reviewsError) renderReviews();
  if (withdrawals || withdrawalsError) renderWithdrawals();
}

async function afterSignIn() {
  renderAll();
  if (!isAdmin()) return;
  const room = new URLSearchParams(window.location.search).get("room");
  if (room) $("#funnel-room").value = room;
  await Promise.all([loadCommunity(), loadReviews(), loadWithdrawals(), room ? loadFunnel(room) : null]);
}

function wireControls() {
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("#signin-name").value.trim() || "operator";
    try {
      token = await devSignIn(SLOT, name, ["admin"]);
      user = claims(token);
      await afterSignIn();
    } catch (err) {
      toast(errorText(err), "error");
    }
  });
  $("#community-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadCommunity();
  });
  $("#funnel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadFunnel($("#funnel-room").value.trim());
  });
  $("#reviews-reload").addEventListener("click", () => loadReviews());
  $("#withdrawals-reload").addEventListener("click", () => loadWithdrawals());
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
  if (user && !isAdmin()) {
    $("#notice").textContent = t("ops.notAdmin");
    show("#notice", true);
  }
  await afterSignIn();
  document.body.dataset.ready = chartLibrary() ? "charts" : "tables";
}

main();
