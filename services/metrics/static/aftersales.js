// After-sales panel of the dashboard: returns, refunds and complaints from
// /v1/kpis/after-sales. Uses the helpers of dashboard.js (loaded first).
"use strict";

const TIER_NAMES = { normal: "Normal · 24 h", urgent: "Urgent · 4 h", major: "Major · 1 h" };
const RETURN_REASONS = {
  damaged_in_transit: "Damaged in transit",
  not_as_described: "Not as described",
  wrong_item: "Wrong item",
  not_received: "Not received",
  changed_mind: "Changed their mind",
};

function renderAfterSales(report) {
  const t = report.total;
  const c = t.complaints;
  const bearer = t.refund_cost_by_bearer;
  $("after-sales-cards").replaceChildren(
    card("Return rate", pct(t.return_rate), `${num(t.returned_orders)} of ${num(t.shipped_orders)} shipped orders`,
      t.return_rate === null ? "" : t.return_rate <= 0.05 ? "good" : t.return_rate <= 0.1 ? "warn" : "bad"),
    card("Refunded", moneyText(t.refund_amount), `${num(t.refunds)} refunds, ${pct(t.refund_rate)} of orders`),
    card("Charged back to suppliers", moneyText(bearer.supplier), `merchant bore ${moneyText(bearer.merchant)}`),
    card("Complaints", num(c.complaints), `${num(c.open)} still open`, c.open ? "warn" : ""),
    card("First response", duration(c.first_response_s.p50),
      c.first_response_s.count ? `typical; 95% within ${duration(c.first_response_s.p95)}` : "no responses yet"),
    card("Answered in time", pct(c.response_within_target_rate), `${num(c.response_target_missed)} missed the target`,
      tone(c.response_within_target_rate, 0.95, 0.85)),
    card("Resolved in time", pct(c.resolution_within_target_rate), `${num(c.resolution_target_missed)} missed 48 h`,
      tone(c.resolution_within_target_rate, 0.95, 0.85)),
  );
  const reasons = Object.entries(t.returns_by_reason)
    .map(([r, s]) => [RETURN_REASONS[r] || r, s.returns]).sort((a, b) => b[1] - a[1]);
  hbarChart($("returns-chart").querySelector(".chart"), reasons, "No returns in this period.");
  renderTiers(report.total.complaints_by_tier);
}

function renderTiers(byTier) {
  const body = $("tiers-body");
  if (!Object.values(byTier).some((s) => s.complaints)) return empty(body, "No complaints in this period.");
  const table = el("table");
  const head = el("tr");
  for (const h of ["Tier", "Complaints", "Open", "First response (typical / 95%)", "Resolved in (typical / 95%)",
    "Answered in time", "Resolved in time"]) {
    head.append(el("th", { class: h === "Tier" ? "" : "num" }, h));
  }
  const thead = el("thead");
  thead.append(head);
  const tbody = el("tbody");
  for (const [tier, s] of Object.entries(byTier)) {
    const tr = el("tr", { "data-tier": tier });
    const cells = [
      [TIER_NAMES[tier] || tier, ""], [num(s.complaints), "num"], [num(s.open), "num"],
      [`${duration(s.first_response_s.p50)} / ${duration(s.first_response_s.p95)}`, "num"],
      [`${duration(s.resolution_s.p50)} / ${duration(s.resolution_s.p95)}`, "num"],
      [el("span", { class: `pill ${tone(s.response_within_target_rate, 0.95, 0.85)}` }, pct(s.response_within_target_rate)), "num"],
      [el("span", { class: `pill ${tone(s.resolution_within_target_rate, 0.95, 0.85)}` }, pct(s.resolution_within_target_rate)), "num"],
    ];
    for (const [content, cls] of cells) {
      const td = el("td", { class: cls });
      td.append(content);
      tr.append(td);
    }
    tbody.append(tr);
  }
  table.append(thead, tbody);
  body.replaceChildren(table);
}
