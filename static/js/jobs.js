// Background detector jobs (evaluation, screening), shared by their pages: polling, progress bar, wording.
import { get } from "./api.js";

// A job's status is polled this often while it runs (each poll is one small indexed read).
export const POLL_MS = 1000;
export const ACTIVE = new Set(["queued", "running"]);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The server words each kind (app/review/jobs.py NOUNS) and sends it with the job.
export function noun(job) {
  return job.noun || `${job.kind} job`;
}

const article = (word) => (/^[aeiou]/i.test(word) ? "An" : "A");

export function seconds(from, to) {
  const s = (Date.parse(to) - Date.parse(from)) / 1000;
  return Number.isFinite(s) ? `${s.toFixed(1)} s` : "";
}

// Polls `url` until the job ends, calling onUpdate(job) for every state seen; resolves to the final job.
export async function pollJob(job, url, onUpdate) {
  while (ACTIVE.has(job.status)) {
    onUpdate(job);
    await sleep(POLL_MS);
    job = await get(url);
  }
  onUpdate(job);
  return job;
}

// Fills a progressbar (hidden unless the job is active) and returns the state in words.
export function showProgress(bar, fill, job) {
  const { done = 0, total = 0 } = job.progress || {};
  const pct = total ? (100 * done) / total : 0;
  bar.hidden = !ACTIVE.has(job.status);
  fill.style.width = `${pct.toFixed(1)}%`;
  bar.setAttribute("aria-valuenow", String(Math.round(pct)));
  if (job.status === "queued") return "queued…";
  if (job.status === "running") return total ? `${done.toLocaleString()} / ${total.toLocaleString()} key slices (${Math.floor(pct)}%)` : "preparing…";
  if (job.status === "done") return `finished in ${seconds(job.started_at || job.created_at, job.finished_at)}`;
  return `failed: ${job.error || "unknown error"}`;
}

// Another kind of job holds the one-job slot: say so and resolve once it has ended.
export async function waitForOtherJob(job, say) {
  const who = job.requested_by ? `, started by ${job.requested_by}` : "";
  const final = await pollJob(job, `/api/jobs/${job.id}`, (j) => {
    const { done = 0, total = 0 } = j.progress || {};
    const where = total ? ` (${done} / ${total} key slices)` : "";
    say(`${article(noun(j))} ${noun(j)} is running (job ${j.id}${who})${where}; one detector job runs at a time, this one can start when it ends.`);
  });
  say(`The ${noun(final)} (job ${final.id}) has ended (${final.status}); you can start now.`);
  return final;
}
