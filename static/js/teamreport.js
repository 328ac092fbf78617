// Agreement report: reader pairs and readers as tables, a Bland-Altman plot, time per key slice, CSV links.
import { describeError, get, initShell, showError } from "./api.js";
import { barChart, svg } from "./charts.js";
import { $, fixed, row } from "./teamshared.js";
import { vocabulary } from "./vocabulary.js";

function query(form) {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (v) params.set(k, String(v));
  return params;
}

// Mean of the pair (x) against A − B (y), with the mean difference and the limits of agreement as lines.
function blandAltman(pair, { width = 520, height = 260 } = {}) {
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Bland-Altman plot" });
  const pts = pair.bland_altman_points;
  if (!pts.length) return root;
  const m = { l: 48, r: 10, t: 10, b: 30 };
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const lines = [pair.long_axis_mean_diff_mm, pair.long_axis_lower_mm, pair.long_axis_upper_mm].filter((v) => v !== null);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1];
  const span = Math.max(1, ...ys.map(Math.abs), ...lines.map(Math.abs));
  const sx = (x) => m.l + ((x - x0) / Math.max(1e-9, x1 - x0)) * (width - m.l - m.r);
  const sy = (y) => m.t + (1 - (y + span) / (2 * span)) * (height - m.t - m.b);
  root.append(svg("line", { x1: m.l, x2: width - m.r, y1: sy(0), y2: sy(0), stroke: "#e4e7ec" }));
  lines.forEach((v, i) => {
    root.append(svg("line", { x1: m.l, x2: width - m.r, y1: sy(v), y2: sy(v), stroke: i ? "#d92d20" : "#1f6feb", "stroke-dasharray": i ? "4 3" : "" }));
    root.append(svg("text", { x: width - m.r, y: sy(v) - 3, "text-anchor": "end", "font-size": 11, fill: "#344054" }, `${v.toFixed(2)} mm`));
  });
  for (const [x, y] of pts) root.append(svg("circle", { cx: sx(x), cy: sy(y), r: 2.5, fill: "#1f6feb", "fill-opacity": 0.6 }));
  root.append(svg("text", { x: width / 2, y: height - 6, "text-anchor": "middle", "font-size": 11, fill: "#667085" }, "mean of the two long axes (mm)"));
  root.append(svg("text", { x: 12, y: height / 2, "font-size": 11, fill: "#667085", transform: `rotate(-90 12 ${height / 2})`, "text-anchor": "middle" }, "A − B (mm)"));
  return root;
}

async function show(form) {
  const params = query(form);
  const report = await get(`/api/team/report?${params}`);
  for (const table of ["pairs", "readers"]) {
    const p = new URLSearchParams(params);
    p.set("table", table);
    $(`csv-${table}`).href = `/api/team/report.csv?${p}`;
  }
  const pairs = $("pairs").tBodies[0];
  pairs.replaceChildren(...report.pairs.map((p) => row(
    p.reader_a, p.reader_b, String(p.key_slices), String(p.lesions_compared), fixed(p.kappa_noisy, 3),
    fixed(p.f1_added, 3), fixed(p.type_agreement, 3), fixed(p.long_axis_mean_diff_mm),
    p.long_axis_lower_mm === null ? "–" : `${fixed(p.long_axis_lower_mm)} … ${fixed(p.long_axis_upper_mm)}`,
  )));
  const readers = $("readers").tBodies[0];
  readers.replaceChildren(...report.readers.map((r) => row(
    r.reader, String(r.key_slices), String(r.confirmed), String(r.flagged), String(r.edited), String(r.added),
    String(r.deleted), fixed(r.mean_seconds, 1), fixed(r.median_seconds, 1),
  )));
  $("ba-plot").replaceChildren(report.pairs.length ? blandAltman(report.pairs[0]) : document.createTextNode("No pair has read the same key slices yet."));
  const truth = $("truth");
  if (truth) {
    // One option per reader of the report: their reads laid over the corrected state.
    for (const r of report.readers) {
      const value = `${vocabulary.team.reader_truth_prefix}${r.reader}`;
      if ([...truth.options].some((o) => o.value === value)) continue;
      const o = document.createElement("option");
      o.value = value;
      o.textContent = value;
      truth.append(o);
    }
  }
  $("time-plot").replaceChildren(barChart(report.readers.map((r) => ({ label: r.reader, value: r.median_seconds ?? 0 })), { yLabel: "seconds" }));
  document.body.dataset.ready = "1";
}

async function main() {
  await initShell();
  const form = $("report-filter");
  try {
    const { assignments } = await get("/api/team/assignments");
    for (const a of assignments) {
      const o = document.createElement("option");
      o.value = String(a.id);
      o.textContent = `#${a.id} ${a.name}`;
      $("report-assignment").append(o);
    }
    await show(form);
  } catch (err) {
    showError(`Could not load the report: ${describeError(err)}`);
  }
  const truth = $("truth");
  if (truth) {
    const links = () => {
      const q = `truth=${encodeURIComponent(truth.value)}`;
      $("export-csv").href = `/api/exports/dl_info.csv?${q}`;
      $("export-coco").href = `/api/exports/coco.json?${q}`;
    };
    truth.addEventListener("change", links);
    links();  // the links follow the menu from the start
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); show(form).catch((err) => showError(describeError(err))); });
}

main();
