// Screening page: an admin starts a batch detector run, everyone follows its progress and sees the last result.
import { ApiError, ConflictError, describeError, get, hideError, initShell, post, showError } from "./api.js";
import { ACTIVE, pollJob, seconds, showProgress, waitForOtherJob } from "./jobs.js";

const $ = (id) => document.getElementById(id);
const runButton = $("run-screen");  // absent for non-admins: the server renders it for admins only
const say = (text) => { $("screen-status").textContent = text; };

// One line and a bar for a job; `data-job-status` lets the browser tests wait for a state.
function showJob(job) {
  document.body.dataset.jobStatus = job.status;
  document.body.dataset.jobId = String(job.id);
  const p = job.params || {};
  const limit = p.limit ? `, first ${p.limit}` : "";
  const head = `Job ${job.id}${job.requested_by ? ` (${job.requested_by})` : ""} · ${p.split} split${limit}, threshold ${p.threshold}`;
  say(`${head} · ${showProgress($("screen-progress"), $("screen-progress-bar"), job)}`);
}

function term(meta, name, value) {
  if (value === undefined || value === null || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = String(value);
  meta.append(dt, dd);
}

// The summary of a finished screen job, with the way into the work list's possible-missed filter.
function showResult(job) {
  const r = job.result || {};
  const p = job.params || {};
  $("screen-result").hidden = false;
  document.body.dataset.resultJobId = String(job.id);
  $("screen-queue-slices").textContent = String(r.queue_key_slices ?? 0);
  $("screen-queue-predictions").textContent = String(r.queue_predictions ?? 0);
  $("screen-queue-link").textContent = r.queue_key_slices ? "Review them in the work list →" : "Open the work list's possible-missed filter →";
  const meta = $("screen-meta");
  meta.replaceChildren();
  term(meta, "key slices", `${r.key_slices} (${p.split} split${p.limit ? `, first ${p.limit}` : ""})`);
  term(meta, "predicted now", r.predicted);
  term(meta, "already screened", r.skipped != null ? `${r.skipped} (same model version, skipped)` : null);
  term(meta, "not readable", r.missing != null ? `${r.missing} (not on disk or corrupt)` : null);
  term(meta, "threshold", r.threshold ?? p.threshold);
  term(meta, "model", r.model_version ?? job.model_version);
  term(meta, "provider", r.provider);
  term(meta, "run by", job.requested_by);
  term(meta, "finished", job.finished_at ? new Date(job.finished_at).toLocaleString() : null);
  term(meta, "took", seconds(job.started_at || job.created_at, job.finished_at));
  term(meta, "job", `#${job.id}`);
  const hidden = $("screen-hidden");
  const h = r.hidden_lesions;
  hidden.hidden = !h;
  if (h) {
    const ranks = (h.ranks_iou_0_3 || []).filter((r) => r !== null).sort((a, b) => a - b);
    const anywhere = ranks.length
      ? ` Anywhere in the queue: ${ranks.length} of ${h.total}, at position${ranks.length > 1 ? "s" : ""} ${ranks.join(", ")}.`
      : " None of them is anywhere in the queue.";
    hidden.textContent = h.total
      ? `Synthetic-data check: ${h.found_top_n_iou_0_3} of ${h.total} deliberately unannotated lesions are among the top ${h.top_n} of the queue `
        + `(IoU ≥ 0.3; ${h.found_top_n_iou_0_5} at IoU ≥ 0.5).${anywhere} Measured on synthetic data, where the left-out lesions are known; it says nothing about real CT.`
      : "Synthetic-data check: none of the deliberately unannotated lesions lies on a screened key slice. Measured on synthetic data only.";
  }
}

function busy(on) {
  if (runButton) runButton.disabled = on;
  $("screen-spinner").hidden = !on;
}

// Polls a screen job until it ends, then shows its result (done) or its error (failed).
async function follow(job) {
  busy(true);
  try {
    const final = await pollJob(job, `/api/screen/jobs/${job.id}`, showJob);
    if (final.status === "done") showResult(final);
    else showError(`Screening failed: ${final.error || "unknown error"}`, runButton ? run : null);
  } catch (err) {
    say(`Lost track of job ${job.id}.`);
    showError(`Could not follow the screening: ${describeError(err)}`, () => follow(job));
  } finally {
    busy(false);
  }
}

async function load() {
  let latest = null;
  try {
    latest = await get("/api/screen");
    showResult(latest);
    say(`Latest result: job ${latest.id}.`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) say(runButton ? "No screening has finished yet. Press Run." : "No screening has finished yet.");
    else showError(`Could not load the last screening: ${describeError(err)}`, load);
  }
  document.body.dataset.ready = "1";
  // A screening started earlier (or by someone else) is still running, or the last one failed: say so.
  try {
    const { jobs } = await get("/api/screen/jobs?limit=1");
    const last = jobs[0];
    if (last && ACTIVE.has(last.status)) await follow(last);
    else if (last && last.status === "failed" && (!latest || last.id > latest.id)) {
      showJob(last);
      document.body.dataset.jobStatus = "failed";
    }
  } catch { /* the last result is shown; the job list is a convenience */ }
}

function request() {
  const threshold = Number($("screen-threshold").value);
  if ($("screen-threshold").value.trim() === "" || !(threshold >= 0 && threshold <= 1)) return null;
  return { split: $("screen-split").value, threshold };
}

async function run() {
  hideError();
  const body = request();
  if (!body) {
    showError("The threshold must be a number from 0 to 1.");
    $("screen-threshold").focus();
    return;
  }
  busy(true);
  say("Starting…");
  let job;
  try {
    job = await post("/api/screen", body);
  } catch (err) {
    const running = err instanceof ConflictError && err.code === "detector_job_running" ? err.body.job : null;
    if (running && running.kind === "screen") {
      await follow(running);  // one runs at a time: show the one that is running
      return;
    }
    if (running) {
      try { await waitForOtherJob(running, say); } catch (e) { showError(`Could not follow job ${running.id}: ${describeError(e)}`); }
      busy(false);
      return;
    }
    busy(false);
    say("Could not start.");
    showError(`Screening could not start: ${describeError(err)}`, run);
    return;
  }
  await follow(job);
}

runButton?.addEventListener("click", run);
initShell();
load();
