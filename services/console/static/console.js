// Response targets counting down, and the KPI chart (uPlot, vendored).
(function () {
  function tick() {
    document.querySelectorAll("time.countdown").forEach(function (el) {
      var left = Math.round((Date.parse(el.dataset.due) - Date.now()) / 1000);
      var abs = Math.abs(left), h = Math.floor(abs / 3600), m = Math.floor((abs % 3600) / 60), s = abs % 60;
      var text = (h ? h + "h " : "") + m + "m " + s + "s";
      el.textContent = left < 0 ? "-" + text + " (" + el.dataset.overdue + ")" : text;
      el.classList.toggle("overdue", left < 0);
    });
  }
  function chart() {
    var holder = document.getElementById("kpi-chart"), data = document.getElementById("kpi-data");
    if (!holder || !data || !window.uPlot || holder.dataset.drawn) return;
    var report = JSON.parse(data.textContent);
    if (!report || !report.items.length) return;
    holder.dataset.drawn = "1";
    var xs = report.items.map(function (_, i) { return i; });
    var labels = report.items.map(function (i) { return i.key; });
    var pct = function (v) { return v == null ? null : Math.round(v * 1000) / 10; };
    new uPlot({
      width: Math.min(1100, holder.clientWidth || 900), height: 300,
      scales: { x: { time: false } },
      axes: [{ values: function (u, ticks) { return ticks.map(function (t) { return labels[t] || ""; }); } },
             { label: "orders" }, { side: 1, scale: "%", label: "%", grid: { show: false } }],
      series: [{ label: "day", value: function (u, v) { return v == null ? "--" : labels[v]; } }, { label: "orders", stroke: "#0b5cad", width: 2 },
               { label: "on time %", scale: "%", stroke: "#1b6e20" },
               { label: "delay %", scale: "%", stroke: "#a4161a" }],
    }, [xs, report.items.map(function (i) { return i.orders; }),
        report.items.map(function (i) { return pct(i.on_time_rate); }),
        report.items.map(function (i) { return pct(i.delay_rate); })], holder);
  }
  function start() { tick(); chart(); }
  document.addEventListener("DOMContentLoaded", start);
  document.addEventListener("htmx:afterSettle", start);
  setInterval(tick, 1000);
})();
