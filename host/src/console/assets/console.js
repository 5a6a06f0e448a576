// The console's own script: clickable request rows, and the charts (uPlot),
// refreshed from /charts/data. Loaded from this origin only (no inline script).
"use strict";

document.addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-href]");
  if (!row || event.target.closest("a, button, input, select, textarea")) return;
  window.location.assign(row.dataset.href);
});

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];
const colour = (i) => PALETTE[i % PALETTE.length];

function chartOptions(target, title, series, yLabel, bars) {
  const width = Math.max(320, target.clientWidth || 800);
  return {
    title: "",
    width,
    height: 220,
    series: [{}].concat(series.map((s) => Object.assign({
      spanGaps: false,
      width: 1.5,
      points: { show: false },
    }, bars ? { paths: uPlot.paths.bars({ size: [0.8, 40] }), fill: s.stroke + "99" } : {}, s))),
    axes: [{}, { label: yLabel, size: 60 }],
    scales: { x: { time: true } },
    legend: { live: true },
  };
}

const charts = {};

function draw(id, series, data, yLabel, bars) {
  const target = document.getElementById(id);
  if (!target) return;
  const signature = series.map((s) => s.label).join("|");
  const existing = charts[id];
  if (existing && existing.signature === signature) {
    existing.plot.setData(data);
    return;
  }
  if (existing) existing.plot.destroy();
  target.textContent = "";
  const plot = new uPlot(chartOptions(target, id, series, yLabel, bars), data, target);
  charts[id] = { plot, signature };
}

async function refreshCharts() {
  const status = document.getElementById("chart-status");
  let data;
  try {
    const response = await fetch("/charts/data", { headers: { accept: "application/json" } });
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    data = await response.json();
  } catch (error) {
    if (status) status.textContent = "Could not read the chart data: " + error.message;
    return;
  }
  const t = data.t;
  draw("chart-rps",
    data.keys.map((k, i) => ({ label: k.key, stroke: colour(i) })),
    [t].concat(data.keys.map((k) => k.rps)), "req/s", false);
  const latency = [];
  const latencyData = [t];
  data.keys.forEach((k, i) => {
    latency.push({ label: k.key + " p50", stroke: colour(i) });
    latencyData.push(k.p50);
    latency.push({ label: k.key + " p99", stroke: colour(i), dash: [6, 4] });
    latencyData.push(k.p99);
  });
  draw("chart-latency", latency, latencyData, "ms", false);
  draw("chart-errors",
    data.errors.map((e, i) => ({ label: e.code, stroke: colour(i + 1) })),
    [t].concat(data.errors.map((e) => e.counts)), "errors", true);
  if (status) {
    status.textContent = data.keys.length === 0
      ? "No requests in the last 15 minutes."
      : (data.errors.length === 0 ? "No errors in the last 15 minutes." : "");
  }
}

function startCharts() {
  if (!document.getElementById("chart-rps")) return;
  refreshCharts();
  setInterval(refreshCharts, 5000);
  window.addEventListener("resize", () => {
    for (const id of Object.keys(charts)) {
      const target = document.getElementById(id);
      if (target) charts[id].plot.setSize({ width: Math.max(320, target.clientWidth), height: 220 });
    }
  });
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", startCharts);
} else {
  startCharts();
}
