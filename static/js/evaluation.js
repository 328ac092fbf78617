// Evaluation page: starts a background FROC job, shows its progress, then draws the curve (log x) it stored.
import { ApiError, ConflictError, describeError, get, hideError, initShell, post, showError, user } from "./api.js";
import { svg } from "./charts.js";
import { ACTIVE, pollJob, showProgress, waitForOtherJob } from "./jobs.js";
import { vocabulary } from "./vocabulary.js";

const $ = (id) => document.getElementById(id);
const FP_POINTS = vocabulary.froc_fp_rates;

// Accepts the documented shape and a few near variants, so a renamed field shows as "no points", not a crash.
export function frocPoints(result) {
  const r = result && (result.froc || result.result || result);
  if (!r) return { points: [], curve: [] };
  let points = [];
  const fps = r.fp_per_image || r.fps || r.fp_rates;
  const sens = r.sensitivity || r.sensitivities;
  if (Array.isArray(fps) && Array.isArray(sens)) {
    points = fps.map((fp, i) => ({ fp: Number(fp), sensitivity: Number(sens[i]) }));
  } else if (Array.isArray(r.points)) {
    points = r.points.map((p) => ({ fp: Number(p.fp ?? p.fp_per_image), sensitivity: Number(p.sensitivity) }));
  } else if (sens && typeof sens === "object") {
    points = Object.entries(sens).map(([fp, s]) => ({ fp: Number(fp), sensitivity: Number(s) }));
  }
  let curve = [];
  if (Array.isArray(r.curve)) {
    curve = r.curve.map((p) => ({ fp: Number(p.fp ?? p.fp_per_image), sensitivity: Number(p.sensitivity) }));
  } else if (r.curve && Array.isArray(r.curve.fp_per_image)) {
    curve = r.curve.fp_per_image.map((fp, i) => ({ fp: Number(fp), sensitivity: Number(r.curve.sensitivity[i]) }));
  }
  points = points.filter((p) => Number.isFinite(p.fp) && Number.isFinite(p.sensitivity) && p.fp > 0).sort((a, b) => a.fp - b.fp);
  return { points, curve: curve.filter((p) => p.fp > 0) };
}

function plot({ points, curve }) {
  const W = 560, H = 380;
  const m = { l: 56, r: 16, t: 14, b: 46 };
  const iw = W - m.l - m.r, ih = H - m.t - m.b;
  const lo = Math.log2(0.25), hi = Math.log2(24);
  const x = (fp) => m.l + ((Math.log2(fp) - lo) / (hi - lo)) * iw;
  const y = (s) => m.t + ih - s * ih;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "FROC curve" });
  for (const s of [0, 0.2, 0.4, 0.6, 0.8, 1]) {
    root.appendChild(svg("line", { x1: m.l, x2: W - m.r, y1: y(s), y2: y(s), stroke: "#e4e7ec" }));
    root.appendChild(svg("text", { x: m.l - 6, y: y(s) + 4, "text-anchor": "end", "font-size": 11, fill: "#667085" }, `${Math.round(s * 100)}%`));
  }
  for (const fp of FP_POINTS) {
    root.appendChild(svg("line", { x1: x(fp), x2: x(fp), y1: m.t, y2: m.t + ih, stroke: "#e4e7ec" }));
    root.appendChild(svg("text", { x: x(fp), y: m.t + ih + 16, "text-anchor": "middle", "font-size": 11, fill: "#667085" }, String(fp)));
  }
  root.appendChild(svg("rect", { x: m.l, y: m.t, width: iw, height: ih, fill: "none", stroke: "#98a2b3" }));
  root.appendChild(svg("text", { x: m.l + iw / 2, y: H - 8, "text-anchor": "middle", "font-size": 12, fill: "#344054" }, "false positives per image (log scale)"));
  root.appendChild(svg("text", { x: 14, y: m.t + ih / 2, "text-anchor": "middle", "font-size": 12, fill: "#344054", transform: `rotate(-90 14 ${m.t + ih / 2})` }, "sensitivity"));
  // The protocol stops at 16 FP per image; the stored curve may run further, the chart does not.
  const inRange = (p) => p.fp >= 0.25 && p.fp <= 16;
  const line = (pts, attrs) => {
    if (pts.length < 2) return;
    const d = pts.filter(inRange).map((p, i) => `${i ? "L" : "M"}${x(p.fp).toFixed(1)},${y(p.sensitivity).toFixed(1)}`).join(" ");
    root.appendChild(svg("path", { d, fill: "none", ...attrs }));
  };
  line(curve, { stroke: "#98c1ff", "stroke-width": 1.5 });
  line(points, { stroke: "#1f6feb", "stroke-width": 2 });
  for (const p of points.filter(inRange)) {
    const c = svg("circle", { cx: x(p.fp), cy: y(p.sensitivity), r: 4.5, fill: "#1f6feb", class: "froc-point" });
    c.appendChild(svg("title", {}, `${p.fp} FP/image: ${(p.sensitivity * 100).toFixed(1)}%`));
    root.appendChild(c);
    root.appendChild(svg("text", { x: x(p.fp), y: y(p.sensitivity) - 9, "text-anchor": "middle", "font-size": 11, fill: "#1d2330" }, `${(p.sensitivity * 100).toFixed(1)}`));
  }
  return root;
}

// The dropdowns follow the result on screen, so that Run after a reload re-runs what is shown.
function selectShown(result) {
  for (const [id, value] of [["eval-split", result.split], ["eval-against", result.against]]) {
    const select = $(id);
    if (value && [...select.options].some((o) => o.value === value)) select.value = value;
  }
}

function show(result) {
  selectShown(result);
  const froc = frocPoints(result);
  $("froc").replaceChildren(plot(froc));
  const tbody = $("froc-table").querySelector("tbody");
  tbody.replaceChildren();
  for (const p of froc.points) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${p.fp}</td><td>${(p.sensitivity * 100).toFixed(1)}%</td>`;
    tbody.appendChild(tr);
  }
  const meta = $("eval-meta");
  meta.replaceChildren();
  const fields = [
    ["model", result.model_version], ["split", result.split], ["against", result.against], ["run by", result.run_by], ["images", result.images ?? result.n_images],
    ["lesions", result.lesions ?? result.n_lesions],
    // What was left out, so a low count is never a mystery: noisy lesions and key slices not on disk.
    ["noisy lesions left out", result.noisy_excluded], ["key slices not on disk", result.missing_key_slices],
    ["IoU", result.iou_threshold ?? result.iou],
    ["provider", result.provider], ["run at", result.created_at ?? result.at], ["job", result.job_id != null ? `#${result.job_id}` : null], ["elapsed", result.seconds != null ? `${Number(result.seconds).toFixed(1)} s` : result.elapsed_s != null ? `${Number(result.elapsed_s).toFixed(1)} s` : result.elapsed_ms != null ? `${Math.round(result.elapsed_ms)} ms` : null],
  ];
  for (const [k, v] of fields) {
    if (v === undefined || v === null || v === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = String(v);
    meta.append(dt, dd);
  }
  const rows = $("breakdowns").querySelector("tbody");
  rows.replaceChildren();
  for (const [kind, groups] of Object.entries(result.breakdowns || {})) {
    for (const g of groups) {
      const tr = document.createElement("tr");
      const cells = [`${kind.replace("_", " ")}: ${g.label}`, g.lesions, ...(g.sensitivity || []).map((v) => `${(v * 100).toFixed(0)}%`)];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = String(c);
        tr.appendChild(td);
      }
      rows.appendChild(tr);
    }
  }
  document.body.dataset.points = String(froc.points.length);
  if (!froc.points.length) $("eval-status").textContent = "The stored result has no FROC points.";
}

// One line and a bar for a job; `data-job-status` lets the browser tests wait for a state.
function showJob(job) {
  document.body.dataset.jobStatus = job.status;
  document.body.dataset.jobId = String(job.id);
  const p = job.params || {};
  const head = `Job ${job.id}${job.requested_by ? ` (${job.requested_by})` : ""} · ${p.split} split vs ${p.against}`;
  $("eval-status").textContent = `${head} · ${showProgress($("eval-progress"), $("eval-progress-bar"), job)}`;
}

function busy(on) {
  $("run-eval").disabled = on;
  $("eval-spinner").hidden = !on;
}

// Polls a job until it ends, then draws its result (done) or shows its error (failed).
async function follow(job) {
  busy(true);
  try {
    job = await pollJob(job, `/api/evaluation/jobs/${job.id}`, showJob);
    if (job.status === "done") show(await get(job.result_url));
    else showError(`Evaluation failed: ${job.error || "unknown error"}`, run);
  } catch (err) {
    $("eval-status").textContent = `Lost track of job ${job.id}.`;
    showError(`Could not follow the evaluation: ${describeError(err)}`, () => follow(job));
  } finally {
    busy(false);
  }
}

async function load() {
  try {
    const result = await get("/api/evaluation");
    $("eval-status").textContent = "Latest stored result.";
    show(result);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      $("eval-status").textContent = "No evaluation has been run yet. Press Run.";
      $("froc").replaceChildren(plot({ points: [], curve: [] }));
    } else {
      showError(`Could not load the evaluation: ${describeError(err)}`, load);
    }
  }
  document.body.dataset.ready = "1";
  // A job started earlier (or by someone else) is still running: follow it after a reload too.
  try {
    const { jobs } = await get("/api/evaluation/jobs?limit=1");
    if (jobs.length && ACTIVE.has(jobs[0].status)) await follow(jobs[0]);
  } catch { /* the stored result is shown; the job list is a convenience */ }
}

async function run() {
  hideError();
  busy(true);
  $("eval-status").textContent = "Starting…";
  let job;
  try {
    job = await post("/api/evaluation", { split: $("eval-split").value, against: $("eval-against").value });
  } catch (err) {
    const running = err instanceof ConflictError && err.code === "detector_job_running" ? err.body.job : null;
    if (running && running.kind === "evaluation") {
      await follow(running);  // one runs at a time: show the one that is running
      return;
    }
    if (running) {
      const say = (text) => { $("eval-status").textContent = text; };
      try { await waitForOtherJob(running, say); } catch (e) { showError(`Could not follow job ${running.id}: ${describeError(e)}`); }
      busy(false);
      return;
    }
    busy(false);
    $("eval-status").textContent = "Could not start.";
    showError(`Evaluation could not start: ${describeError(err)}`, run);
    return;
  }
  await follow(job);
}

$("run-eval").addEventListener("click", run);
// Only admins may start an evaluation (the API answers 403 otherwise): reviewers get no button to press.
initShell().then(() => {
  const admin = user()?.role === "admin";
  $("run-eval").hidden = !admin;
  $("run-eval-note").hidden = admin;
});
load();
