// The room leaderboard table, shared by the host console and the distributor page.

import { t } from "./i18n.js";
import { h, money } from "./ui.js";

export function leaderboardTable(view, { me = null, limit = 10 } = {}) {
  const rows = (view && view.distributors) || [];
  if (!rows.length) return h("p", { class: "muted" }, t("lb.empty"));
  return h(
    "table",
    { class: "leaderboard" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, t("lb.rank")),
        h("th", {}, t("lb.distributor")),
        h("th", {}, t("lb.team")),
        h("th", { class: "num" }, t("lb.orders")),
        h("th", { class: "num" }, t("lb.gmv")),
      ),
    ),
    h(
      "tbody",
      {},
      rows.slice(0, limit).map((row) =>
        h(
          "tr",
          { class: me && String(row.distributor_id) === String(me) ? "me" : null },
          h("td", {}, String(row.rank)),
          h("td", {}, row.user_id || row.distributor_id),
          h("td", {}, row.team || "—"),
          h("td", { class: "num" }, String(row.orders ?? 0)),
          h("td", { class: "num" }, money(row.gmv_cents)),
        ),
      ),
    ),
  );
}

export function teamsTable(view, limit = 5) {
  const rows = (view && view.teams) || [];
  if (!rows.length) return null;
  return h(
    "table",
    { class: "teams" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, t("lb.rank")),
        h("th", {}, t("lb.teams")),
        h("th", { class: "num" }, t("lb.orders")),
        h("th", { class: "num" }, t("lb.gmv")),
      ),
    ),
    h(
      "tbody",
      {},
      rows.slice(0, limit).map((row) =>
        h(
          "tr",
          {},
          h("td", {}, String(row.rank)),
          h("td", {}, row.team),
          h("td", { class: "num" }, String(row.orders ?? 0)),
          h("td", { class: "num" }, money(row.gmv_cents)),
        ),
      ),
    ),
  );
}
