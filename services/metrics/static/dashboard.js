// Dashboard of the metrics service: reads /v1/kpis, /v1/suppliers/ranking and
// /v1/kpis/after-sales (drawn by aftersales.js), draws SVG.
// No libraries and nothing fetched from elsewhere: the page works offline.
"use strict";

const REFRESH_MS = Math.max(1, Number(new URLSearchParams(location.search).get("refresh")) || 15) * 1000;
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fdf", "#2e9d62", "#d9822b", "#8e44ad", "#d64545", "#16a2b8"];
const REASONS = {
  no_tracking_by_deadline: "No tracking by the ship-by date",
  carrier_exception: "Carrier problem",
  supplier_backorder: "Supplier out of stock (backorder)",
  at_risk: "At risk of missing the ship-by date",
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text) {
  const node = tag === "svg" || ["g", "rect", "line", "path", "text", "circle", "title", "polyline"].includes(tag)
    ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function isoDay(date) { return date.toISOString().slice(0, 10); }

function window_() {
  const q = new URLSearchParams(location.search);
  if (q.get("from") && q.get("to")) {
    $("period").value = "custom";
    return { from: q.get("from"), to: q.get("to") };
  }
  const days = Number($("period").value);
  const to = new Date();
  const from = new Date(to.getTime() - (days - 1) * 86400000);
  return { from: isoDay(from), to: isoDay(to) };
}

const pct = (r) => (r === null || r === undefined ? "–" : `${(r * 100).toFixed(1).replace(/\.0$/, "")}%`);
const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} days`;
}

function moneyText(byCurrency) {
  const entries = Object.entries(byCurrency || {});
  if (!entries.length) return "–";
  return entries.map(([c, v]) => {
    try {
      return new Intl.NumberFormat("en-US", { style: "currency", currency: c, maximumFractionDigits: 2 }).format(Number(v));
    } catch (e) { return `${v} ${c}`; }
  }).join(" · ");
}

function tone(rate, good, warn) {
  if (rate === null || rate === undefined) return "none";
  return rate >= good ? "good" : rate >= warn ? "warn" : "bad";
}

function card(label, value, hint, cls = "") {
  const c = el("div", { class: `card ${cls}`, "data-kpi": label });
  c.append(el("div", { class: "label" }, label), el("div", { class: "value" }, value));
  if (hint) c.append(el("div", { class: "hint" }, hint));
  return c;
}

function renderCards(total) {
  const lat = total.confirmation_latency_s, cyc = total.cycle_time_s;
  $("cards").replaceChildren(
    card("Orders", num(total.orders)),
    card("Sales (GMV)", moneyText(total.gmv)),
    card("Average order", moneyText(total.aov)),
    card("Gross margin", moneyText(total.gross_margin), "sale price minus supplier cost, confirmed lines"),
    card("Shipped on time", pct(total.on_time_rate), `${num(total.shipped_late)} late of ${num(total.shipped_on_time + total.shipped_late)} due`,
      tone(total.on_time_rate, 0.95, 0.85)),
    card("Confirmed by suppliers", pct(total.confirmation_rate), lat.count ? `typically in ${duration(lat.p50)}, 95% within ${duration(lat.p95)}` : "no confirmations yet",
      tone(total.confirmation_rate, 0.95, 0.85)),
    card("Placed to delivered", duration(cyc.p50), cyc.count ? `typical; 95% within ${duration(cyc.p95)}` : "no deliveries yet"),
    card("Cancelled", num(total.cancellations), null, total.cancellations ? "warn" : ""),
    card("Could not be routed", num(total.routing_failures), "no supplier could take the order", total.routing_failures ? "bad" : ""),
    card("Customer & ops notices", num(total.notices_sent), "sent"),
  );
}

function empty(container, message) {
  container.replaceChildren(el("div", { class: "empty" }, message));
}

function frame(width, height) {
  return el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
}

function axisLabels(svg, labels, x, y0) {
  const every = Math.max(1, Math.ceil(labels.length / 8));
  labels.forEach((label, i) => {
    if (i % every === 0 || i === labels.length - 1) {
      svg.append(el("text", { x: x(i), y: y0 + 16, "text-anchor": "middle" }, label.slice(5)));
    }
  });
}

function barChart(container, labels, values, format, emptyText) {
  if (!values.some((v) => v > 0)) return empty(container, emptyText);
  const W = 560, H = 220, L = 36, B = 24, T = 18;
  const max = Math.max(...values);
  const svg = frame(W, H);
  const slot = (W - L) / labels.length;
  const x = (i) => L + slot * i + slot / 2;
  const y = (v) => H - B - ((H - B - T) * v) / max;
  svg.append(el("line", { x1: L, x2: W, y1: H - B, y2: H - B, stroke: "#cbd2d9" }));
  svg.append(el("text", { x: L - 6, y: T + 4, "text-anchor": "end" }, format(max)));
  values.forEach((v, i) => {
    const bar = el("rect", { class: "bar", x: x(i) - slot * 0.35, width: slot * 0.7, y: y(v), height: H - B - y(v), fill: COLORS[0], rx: 2 });
    bar.append(el("title", {}, `${labels[i]}: ${format(v)}`));
    svg.append(bar);
    if (labels.length <= 14 && v > 0) svg.append(el("text", { class: "value-label", x: x(i), y: y(v) - 4, "text-anchor": "middle" }, format(v)));
  });
  axisLabels(svg, labels, x, H - B);
  container.replaceChildren(svg);
}

function lineChart(container, labels, series, { max, format, emptyText }) {
  const present = series.filter((s) => s.values.some((v) => v !== null));
  if (!present.length) return empty(container, emptyText);
  const W = 560, H = 220, L = 48, B = 24, T = 18;
  const top = max ?? Math.max(...present.flatMap((s) => s.values.filter((v) => v !== null)), 1e-9);
  const svg = frame(W, H);
  const step = labels.length > 1 ? (W - L - 12) / (labels.length - 1) : 0;
  const x = (i) => (labels.length > 1 ? L + step * i : (W + L) / 2);
  const y = (v) => H - B - ((H - B - T) * v) / top;
  for (const frac of [0, 0.5, 1]) {
    svg.append(el("line", { x1: L, x2: W, y1: y(top * frac), y2: y(top * frac), stroke: "#e4e7eb" }));
    svg.append(el("text", { x: L - 6, y: y(top * frac) + 4, "text-anchor": "end" }, format(top * frac)));
  }
  present.forEach((s, n) => {
    const color = COLORS[n % COLORS.length];
    let d = "";
    s.values.forEach((v, i) => {
      if (v === null) return;
      d += `${d ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
    });
    svg.append(el("path", { d, fill: "none", stroke: color, "stroke-width": 2.5 }));
    s.values.forEach((v, i) => {
      if (v === null) return;
      const dot = el("circle", { class: "point", cx: x(i), cy: y(v), r: 3.5, fill: color });
      dot.append(el("title", {}, `${labels[i]}: ${format(v)}${present.length > 1 ? " " + s.name : ""}`));
      svg.append(dot);
    });
    if (present.length > 1) svg.append(el("text", { x: L + 8 + n * 70, y: 12, fill: color, style: `fill:${color}` }, s.name));
  });
  axisLabels(svg, labels, x, H - B);
  container.replaceChildren(svg);
}

function hbarChart(container, entries, emptyText) {
  if (!entries.length) return empty(container, emptyText);
  const W = 560, row = 34, L = 230, H = entries.length * row + 8;
  const max = Math.max(...entries.map(([, v]) => v));
  const svg = frame(W, H);
  entries.forEach(([label, v], i) => {
    const y = 4 + i * row;
    const w = ((W - L - 40) * v) / max;
    svg.append(el("text", { x: L - 8, y: y + 19, "text-anchor": "end", style: "font-size:13px" }, label));
    const bar = el("rect", { class: "bar", x: L, y: y + 5, width: Math.max(w, 2), height: row - 12, fill: COLORS[2], rx: 2 });
    bar.append(el("title", {}, `${label}: ${v}`));
    svg.append(bar, el("text", { class: "value-label", x: L + w + 6, y: y + 19 }, String(v)));
  });
  container.replaceChildren(svg);
}

function renderCharts(report) {
  const days = report.items.map((i) => i.key);
  const quiet = "Nothing in this period yet. Numbers appear here seconds after the first order is placed.";
  barChart($("orders-chart").querySelector(".chart"), days, report.items.map((i) => i.orders), num, quiet);
  const currencies = [...new Set(report.items.flatMap((i) => Object.keys(i.gmv)))];
  lineChart($("gmv-chart").querySelector(".chart"), days,
    currencies.map((c) => ({ name: c, values: report.items.map((i) => (i.gmv[c] === undefined ? 0 : Number(i.gmv[c]))) })),
    { format: (v) => Number(v).toLocaleString("en-US", { maximumFractionDigits: 0 }), emptyText: quiet });
  lineChart($("ontime-chart").querySelector(".chart"), days,
    [{ name: "on time", values: report.items.map((i) => i.on_time_rate) }],
    { max: 1, format: (v) => `${Math.round(v * 100)}%`, emptyText: "No shipments were due in this period yet." });
  const reasons = Object.entries(report.total.delays_by_reason)
    .map(([r, n]) => [REASONS[r] || r, n]).sort((a, b) => b[1] - a[1]);
  hbarChart($("delays-chart").querySelector(".chart"), reasons, "No delays in this period: every shipment is on track.");
}

function renderRanking(ranking) {
  const body = $("ranking-body");
  if (!ranking.items.length) return empty(body, "No supplier has confirmed an order in this period yet.");
  const table = el("table");
  const head = el("tr");
  for (const [h, cls] of [["#", "num"], ["Supplier", ""], ["On time", "num"], ["Delayed", "num"], ["Due", "num"],
    ["Late", "num"], ["Confirms in (typical)", "num"], ["Orders", "num"], ["Sales", "num"], ["Margin", "num"]]) {
    head.append(el("th", { class: cls }, h));
  }
  const thead = el("thead");
  thead.append(head);
  table.append(thead);
  const tbody = el("tbody");
  for (const s of ranking.items) {
    const tr = el("tr", { "data-supplier": s.supplier_id });
    const onTime = el("span", { class: `pill ${tone(s.on_time_rate, 0.95, 0.85)}` }, pct(s.on_time_rate));
    const delayed = el("span", { class: `pill ${s.delay_rate === null ? "none" : s.delay_rate <= 0.05 ? "good" : s.delay_rate <= 0.15 ? "warn" : "bad"}` }, pct(s.delay_rate));
    const cells = [
      [String(s.rank), "num"], [s.supplier_id, ""], [onTime, "num"], [delayed, "num"],
      [num(s.supplier_orders_due), "num"], [num(s.shipped_late), "num"],
      [duration(s.confirmation_latency_s.p50), "num"], [num(s.orders), "num"],
      [moneyText(s.gmv), "num"], [moneyText(s.gross_margin), "num"],
    ];
    for (const [content, cls] of cells) {
      const td = el("td", { class: cls });
      td.append(content);
      tr.append(td);
    }
    tbody.append(tr);
  }
  table.append(tbody);
  body.replaceChildren(table);
}

async function getJson(path, params) {
  const response = await fetch(`${path}?${new URLSearchParams(params)}`, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return response.json();
}

let lastGood = null;

async function refresh() {
  const w = window_();
  try {
    const [report, ranking, afterSales] = await Promise.all([
      getJson("/v1/kpis", { ...w, group_by: "day" }),
      getJson("/v1/suppliers/ranking", w),
      getJson("/v1/kpis/after-sales", { ...w, group_by: "day" }),
    ]);
    $("window-label").textContent = `${report.from} to ${report.to} (UTC), counted on the day things happened`;
    renderCards(report.total);
    renderCharts(report);
    renderRanking(ranking);
    renderAfterSales(afterSales);
    lastGood = new Date();
    $("error").hidden = true;
    $("live").classList.remove("stale");
    $("updated").textContent = `updated ${lastGood.toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
  } catch (err) {
    $("live").classList.add("stale");
    $("error").hidden = false;
    $("error").textContent = lastGood
      ? `Cannot reach the metrics service right now; showing the numbers from ${lastGood.toLocaleTimeString()}. Retrying…`
      : "Cannot reach the metrics service right now. Retrying every 15 seconds…";
  }
}

$("period").addEventListener("change", () => {
  if ($("period").value === "custom") return;
  history.replaceState(null, "", location.pathname);
  refresh();
});
refresh();
setInterval(refresh, REFRESH_MS);
