// Team page: admins create assignments from a work-list filter; everyone sees progress and their queue.
import { describeError, get, initShell, post, showError } from "./api.js";
import { $, cell, row } from "./teamshared.js";
import { vocabulary } from "./vocabulary.js";

const MODES = vocabulary.team.modes;
const READ_STATUSES = vocabulary.team.read_statuses;

function filterOf(form) {
  const data = new FormData(form);
  const flt = {};
  for (const key of ["split", "patient", "min_size_mm", "max_size_mm"]) {
    const v = String(data.get(key) || "").trim();
    if (v) flt[key] = ["patient", "min_size_mm", "max_size_mm"].includes(key) ? Number(v) : v;
  }
  if (data.get("lesion_type")) flt.lesion_type = [Number(data.get("lesion_type"))];
  if (data.get("possible_missed")) flt.possible_missed = true;
  return flt;
}

async function takeNext(assignmentId) {
  try {
    const { read } = await post(`/api/team/assignments/${assignmentId}/next`);
    if (read) location.assign(`/team/reads/${read.id}`);
    else showError("Nothing left for you in this assignment.");
  } catch (err) {
    showError(`Could not take the next key slice: ${describeError(err)}`);
  }
}

function renderAssignments(assignments, me) {
  const body = $("assignments").tBodies[0];
  body.replaceChildren();
  $("no-assignments").hidden = assignments.length > 0;
  for (const a of assignments) {
    const p = a.progress;
    const byReader = p.readers.map((r) => `${r.reader}: ${r.done} done, ${r.claimed} open`).join("; ");
    const adj = Object.entries(p.adjudications).map(([k, n]) => `${vocabulary.team.adjudication_statuses[k]} ${n}`).join(", ");
    const action = document.createElement("td");
    if (a.readers.includes(me.name)) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "primary";
      b.textContent = "Next for me";
      b.dataset.assignment = String(a.id);
      b.setAttribute("aria-label", `Take the next key slice of assignment ${a.id}`);
      b.addEventListener("click", () => takeNext(a.id));
      action.append(b);
    }
    body.append(row(String(a.id), a.name, MODES[a.mode], a.readers.join(", "), `${p.reads.done} / ${p.reads.total}`, byReader || "–", adj, action));
  }
}

function renderQueue(reads) {
  const body = $("my-reads").tBodies[0];
  body.replaceChildren();
  $("no-reads").hidden = reads.length > 0;
  for (const r of reads) {
    const link = document.createElement("a");
    link.href = `/team/reads/${r.id}`;
    link.textContent = `#${r.id}`;
    const td = document.createElement("td");
    td.append(link);
    body.append(row(td, r.file_name, String(r.assignment_id), READ_STATUSES[r.status], r.seconds === null ? "–" : r.seconds.toFixed(0)));
  }
}

async function refresh(me) {
  const [{ assignments }, queue] = await Promise.all([get("/api/team/assignments"), get("/api/team/queue")]);
  renderAssignments(assignments, me);
  renderQueue(queue.reads);
  document.body.dataset.ready = "1";
}

async function main() {
  await initShell();
  const me = (await get("/api/auth/me")).user;
  const form = $("assign-form");
  if (form) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const data = new FormData(form);
      const body = {
        name: String(data.get("name")),
        mode: String(data.get("mode")),
        readers: String(data.get("readers")).split(",").map((s) => s.trim()).filter(Boolean),
        filter: filterOf(form),
      };
      try {
        const a = await post("/api/team/assignments", body);
        $("assign-status").textContent = `Assignment ${a.id}: ${a.progress.reads.total} reads.`;
        await refresh(me);
      } catch (err) {
        $("assign-status").textContent = describeError(err);
      }
    });
  }
  try { await refresh(me); } catch (err) { showError(`Could not load the team review: ${describeError(err)}`); }
}

main();
