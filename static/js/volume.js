// Volume screening page: an admin starts a screen of every stored slice; everyone lists its candidates, best
// first, and opens one in the viewer (on the slice where it is largest) to add or dismiss it.
import { ConflictError, describeError, get, hideError, initShell, post, showError } from "./api.js";
import { ACTIVE, pollJob, showProgress, waitForOtherJob } from "./jobs.js";
import { CANDIDATE_STATUSES } from "./vocabulary.js";

const $ = (id) => document.getElementById(id);
const runButton = $("run-volume");
const say = (text) => { $("volume-status").textContent = text; };

function showJob(job) {
  document.body.dataset.jobStatus = job.status;
  say(`Job ${job.id} · threshold ${job.params.threshold} · ${showProgress($("volume-progress"), $("volume-progress-bar"), job)}`);
}

function showLast(job) {
  const r = job.result || {};
  const left = r.left_out_lesions;
  const synthetic = left ? ` Synthetic-data check: the queue finds ${left.found} of ${left.total} left-out lesions (precision ${left.precision ?? "–"}).` : "";
  $("volume-last").textContent = `Last screen: job ${job.id}, model ${r.model_version}, ${r.series} series (${r.slices} slices, `
    + `${r.skipped_series} already done), ${r.candidates} candidates, ${r.queue_candidates} matching no marked lesion.${synthetic}`;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

async function loadCandidates() {
  const status = $("candidate-status-filter").value;
  let page;
  try {
    page = await get(`/api/volume/candidates?status=${encodeURIComponent(status)}&limit=200`);
  } catch (err) {
    showError(`Could not list the candidates: ${describeError(err)}`, loadCandidates);
    return;
  }
  const body = document.querySelector("#candidates tbody");
  body.replaceChildren();
  page.items.forEach((c, i) => {
    const tr = document.createElement("tr");
    tr.dataset.candidate = String(c.id);
    const open = document.createElement("a");
    open.href = `/viewer/${encodeURIComponent(c.file_name)}?candidate=${c.id}`;
    open.className = "button";
    open.textContent = "Open →";
    open.setAttribute("aria-label", `Open candidate ${c.id} in the viewer`);
    const action = document.createElement("td");
    action.append(open);
    const who = c.decided_by ? ` (${c.decided_by})` : "";
    tr.append(
      cell(String(i + 1)), cell(c.score.toFixed(2)),
      cell(`${c.patient_index} · ${c.study_index} · ${c.series_index}`), cell(String(c.slice_index)),
      cell(`${c.slice_first}–${c.slice_last} (${c.slice_count})`), cell(c.file_name),
      cell(`${CANDIDATE_STATUSES[c.status]}${who}`), action,
    );
    body.append(tr);
  });
  $("candidate-count").textContent = page.model_version
    ? `${page.total} ${CANDIDATE_STATUSES[status]} · model ${page.model_version}${page.total > page.items.length ? ` · first ${page.items.length} shown` : ""}`
    : "No volume screening has run yet.";
  document.body.dataset.candidates = String(page.total);
}

async function follow(job) {
  if (runButton) runButton.disabled = true;
  $("volume-spinner").hidden = false;
  try {
    const final = await pollJob(job, `/api/volume/screen/jobs/${job.id}`, showJob);
    if (final.status === "done") { showLast(final); await loadCandidates(); }
    else showError(`Volume screening failed: ${final.error || "unknown error"}`);
  } catch (err) {
    showError(`Could not follow the volume screening: ${describeError(err)}`, () => follow(job));
  } finally {
    if (runButton) runButton.disabled = false;
    $("volume-spinner").hidden = true;
  }
}

async function run() {
  hideError();
  const threshold = Number($("volume-threshold").value);
  if ($("volume-threshold").value.trim() === "" || !(threshold >= 0 && threshold <= 1)) {
    showError("The threshold must be a number from 0 to 1.");
    return;
  }
  try {
    await follow(await post("/api/volume/screen", { threshold }));
  } catch (err) {
    const running = err instanceof ConflictError && err.code === "detector_job_running" ? err.body.job : null;
    if (running && running.kind === "volume_screen") await follow(running);
    else if (running) await waitForOtherJob(running, say);
    else showError(`Volume screening could not start: ${describeError(err)}`, run);
  }
}

async function load() {
  try {
    showLast(await get("/api/volume/screen"));
  } catch { $("volume-last").textContent = "No volume screening has finished yet."; }
  await loadCandidates();
  document.body.dataset.ready = "1";
  try {
    const { jobs } = await get("/api/volume/screen/jobs?limit=1");
    if (jobs[0] && ACTIVE.has(jobs[0].status)) await follow(jobs[0]);
  } catch { /* the candidates are shown; the running job is a convenience */ }
}

runButton?.addEventListener("click", run);
$("candidate-status-filter").addEventListener("change", loadCandidates);
initShell();
load();
