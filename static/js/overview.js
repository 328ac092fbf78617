// Dataset overview: Fig. 1-style body map, review progress, size and type histograms.
import { describeError, get, initShell, showError } from "./api.js";
import { LESION_TYPES, STATUSES, TYPE_COLORS } from "./vocabulary.js";
import { barChart } from "./charts.js";

const $ = (id) => document.getElementById(id);
const canvas = $("scatter");
const ctx = canvas.getContext("2d");
const PAD = 24;
let points = [];

function plotXY(p) {
  const w = canvas.width - 2 * PAD;
  const h = canvas.height - 2 * PAD;
  // z grows from head to feet, so z = 0 sits at the top like the paper's figure.
  return { x: PAD + p.x * w, y: PAD + p.z * h };
}

function drawScatter() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#d0d5dd";
  ctx.strokeRect(PAD, PAD, canvas.width - 2 * PAD, canvas.height - 2 * PAD);
  ctx.fillStyle = "#667085";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.fillText("head ↑", canvas.width / 2, PAD - 8);
  ctx.fillText("feet ↓", canvas.width / 2, canvas.height - 7);
  ctx.textAlign = "left";
  ctx.fillText("x = 0", PAD, canvas.height - 7);
  ctx.textAlign = "right";
  ctx.fillText("x = 1", canvas.width - PAD, canvas.height - 7);
  const r = points.length > 5000 ? 1.5 : 3;
  ctx.globalAlpha = points.length > 5000 ? 0.5 : 0.85;
  for (const p of points) {
    const q = plotXY(p);
    ctx.fillStyle = TYPE_COLORS[p.lesion_type] || "#000";
    ctx.beginPath();
    ctx.arc(q.x, q.y, r, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.globalAlpha = 1;
}

function nearest(event) {
  const rect = canvas.getBoundingClientRect();
  const sx = canvas.width / rect.width;
  const sy = canvas.height / rect.height;
  const m = { x: (event.clientX - rect.left) * sx, y: (event.clientY - rect.top) * sy };
  let best = null;
  for (const p of points) {
    const q = plotXY(p);
    const d = Math.hypot(q.x - m.x, q.y - m.y);
    if (d < 6 && (!best || d < best.d)) best = { p, d, q };
  }
  return best;
}

canvas.addEventListener("mousemove", (e) => {
  const hit = nearest(e);
  const tip = $("scatter-tip");
  if (!hit) { tip.hidden = true; return; }
  const rect = canvas.getBoundingClientRect();
  tip.hidden = false;
  tip.textContent = `${hit.p.file_name} · ${LESION_TYPES[hit.p.lesion_type] ?? hit.p.lesion_type}`;
  tip.style.left = `${(hit.q.x * rect.width) / canvas.width + 8}px`;
  tip.style.top = `${(hit.q.y * rect.height) / canvas.height - 24}px`;
});
// Test hook: where point i sits on screen, so a browser test can click it like a user.
window.__overview = {
  pointToClient(i) {
    const rect = canvas.getBoundingClientRect();
    const q = plotXY(points[i]);
    return { x: rect.left + (q.x * rect.width) / canvas.width, y: rect.top + (q.y * rect.height) / canvas.height, file_name: points[i].file_name };
  },
  count: () => points.length,
};

canvas.addEventListener("click", (e) => {
  const hit = nearest(e);
  if (hit) location.assign(`/viewer/${encodeURIComponent(hit.p.file_name)}`);
});

function legend(typeCounts) {
  const ul = $("type-legend");
  ul.replaceChildren();
  for (const [t, name] of Object.entries(LESION_TYPES)) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = TYPE_COLORS[t];
    li.append(sw, ` ${name} (${typeCounts[t] ?? 0})`);
    ul.appendChild(li);
  }
}

function minibar(fraction) {
  const outer = document.createElement("span");
  outer.className = "minibar";
  const inner = document.createElement("span");
  inner.style.width = `${Math.round(100 * Math.max(0, Math.min(1, fraction)))}%`;
  outer.appendChild(inner);
  return outer;
}

function fillTable(id, rows) {
  const tbody = $(id).querySelector("tbody");
  tbody.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = $(id).querySelectorAll("thead th").length;
    td.className = "muted";
    td.textContent = "No reviews yet.";
    tr.appendChild(td);
    tbody.appendChild(tr);
  }
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c);
      else td.textContent = String(c);
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
}

async function start() {
  initShell();
  let stats;
  try {
    stats = await get("/api/stats");
  } catch (err) {
    showError(`Could not load the statistics: ${describeError(err)}`, start);
    return;
  }
  points = stats.points || [];
  drawScatter();
  legend(stats.type_counts || {});
  const progress = stats.progress || { by_reviewer: [], by_split: [] };
  fillTable("progress-reviewer", progress.by_reviewer.map((r) => {
    const counts = Object.keys(STATUSES).map((s) => r[s]);
    const total = counts.reduce((a, b) => a + b, 0);
    return [r.reviewer, ...counts, minibar(total ? r.done / total : 0)];
  }));
  fillTable("progress-split", progress.by_split.map((s) => [s.split, s.done, s.total, minibar(s.total ? s.done / s.total : 0)]));
  const hist = stats.size_histogram || { edges_mm: [], counts: [] };
  const bars = hist.counts.map((n, i) => ({
    label: `${Math.round(hist.edges_mm[i])}–${Math.round(hist.edges_mm[i + 1])}`,
    value: n,
    title: `${hist.edges_mm[i]}–${hist.edges_mm[i + 1]} mm: ${n}`,
  }));
  const size = $("size-hist");
  size.replaceChildren(barChart(bars, { yLabel: "lesions" }));
  const typeBars = Object.entries(LESION_TYPES)
    .map(([t, name]) => ({ label: name, value: (stats.type_counts || {})[t] ?? 0, color: TYPE_COLORS[t] }));
  $("type-hist").replaceChildren(barChart(typeBars, { yLabel: "lesions", rotate: true }));
  document.body.dataset.ready = "1";
}

start();
