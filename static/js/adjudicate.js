// Adjudication: the queue, and one case's two reads side by side; the consensus is A, B, or a row-by-row mix.
import { describeError, get, initShell, post, showError } from "./api.js";
import { $, fixed, flagName, longAxisPx, markRows, row, typeName } from "./teamshared.js";
import { BOX_PADDING_PX, vocabulary } from "./vocabulary.js";

const KINDS = vocabulary.team.disagreement_kinds;
const STATUSES = vocabulary.team.adjudication_statuses;
let current = null;
let spacingX = 1;
// Row choices of the mixed consensus: lesion id -> "a" | "b"; added marks kept, by read and index.
let choice = {};
let keepAdded = { a: new Set(), b: new Set() };

const say = (text) => { $("adj-status-line").textContent = text; };

async function loadQueue() {
  const status = $("adj-status").value;
  const { adjudications } = await get(`/api/team/adjudications${status ? `?status=${status}` : ""}`);
  const body = $("adj-queue").tBodies[0];
  body.replaceChildren();
  $("adj-empty").hidden = adjudications.length > 0;
  for (const a of adjudications) {
    const link = document.createElement("a");
    link.href = `/team/adjudications?id=${a.id}`;
    link.textContent = `#${a.id}`;
    link.addEventListener("click", (ev) => { ev.preventDefault(); history.replaceState(null, "", link.href); openCase(a.id); });
    const td = document.createElement("td");
    td.append(link);
    const kinds = [...new Set(a.disagreements.map((d) => KINDS[d.kind]))].join("; ");
    body.append(row(td, a.file_name, a.readers.join(" vs "), STATUSES[a.status], kinds || "none"));
  }
  document.body.dataset.queueSize = String(adjudications.length);
}

function readTable(read, side, disagreeing) {
  const wrap = document.createElement("div");
  const h = document.createElement("h3");
  h.textContent = `${side.toUpperCase()}: ${read.reader} (${read.seconds === null ? "?" : read.seconds.toFixed(0)} s)`;
  const table = document.createElement("table");
  table.className = "grid";
  table.setAttribute("aria-label", `Read ${side.toUpperCase()}`);
  table.innerHTML = "<thead><tr><th>Lesion</th><th>Type</th><th>Long axis mm</th><th>Noisy flag</th><th>Use</th></tr></thead><tbody></tbody>";
  const live = read.marks.added.filter((m) => !m.deleted);
  const rows = [...read.marks.lesions.map((m) => ({ key: `#${m.id}`, mark: m, id: m.id })), ...live.map((m, i) => ({ key: `+${i + 1}`, mark: m, index: i }))];
  for (const { key, mark, id, index } of rows) {
    if (mark.deleted) continue;
    const use = document.createElement("td");
    const input = document.createElement("input");
    if (id !== undefined) {
      input.type = "radio";
      input.name = `use-${id}`;
      input.checked = (choice[id] || "a") === side;
      input.addEventListener("change", () => { choice[id] = side; });
    } else {
      input.type = "checkbox";
      input.checked = keepAdded[side].has(index);
      input.addEventListener("change", () => { if (input.checked) keepAdded[side].add(index); else keepAdded[side].delete(index); });
    }
    input.setAttribute("aria-label", `Use ${key} of read ${side.toUpperCase()}`);
    use.append(input);
    const tr = row(key, typeName(mark.lesion_type), fixed(longAxisPx(mark, BOX_PADDING_PX) * spacingX, 1), flagName(mark.flag_reason), use);
    const hit = disagreeing.some((d) => (id !== undefined ? d.lesion_id === id : d[`${side}_added`] === index));
    if (hit) tr.classList.add("disagree");
    table.tBodies[0].append(tr);
  }
  wrap.append(h, table);
  return wrap;
}

function mixedConsensus() {
  const [a, b] = current.reads;
  const byId = (read) => Object.fromEntries(read.marks.lesions.map((m) => [m.id, m]));
  const ma = byId(a), mb = byId(b);
  const lesions = a.marks.lesions.map((m) => ((choice[m.id] || "a") === "b" ? mb[m.id] : ma[m.id]));
  const liveA = a.marks.added.filter((m) => !m.deleted), liveB = b.marks.added.filter((m) => !m.deleted);
  const added = [...liveA.filter((_, i) => keepAdded.a.has(i)), ...liveB.filter((_, i) => keepAdded.b.has(i))];
  return { lesions, added };
}

async function openCase(id) {
  try {
    current = await get(`/api/team/adjudications/${id}`);
    const ks = await get(`/api/key-slices/${current.file_name}`);
    spacingX = ks.spacing_mm[0];
  } catch (err) {
    showError(`Could not open case ${id}: ${describeError(err)}`);
    return;
  }
  choice = {};
  keepAdded = { a: new Set(current.reads[0].marks.added.filter((m) => !m.deleted).map((_, i) => i)), b: new Set() };
  $("adj-case").hidden = false;
  $("adj-title").textContent = `#${current.id} · ${current.file_name} · ${STATUSES[current.status]}`;
  $("adj-viewer").href = `/viewer/${current.file_name}`;
  const list = $("adj-disagreements");
  list.replaceChildren();
  for (const d of current.disagreements) {
    const li = document.createElement("li");
    const where = d.lesion_id !== null ? `lesion #${d.lesion_id}` : `added ${d.a_added !== null ? `A+${d.a_added + 1}` : ""}${d.b_added !== null ? ` B+${d.b_added + 1}` : ""}`;
    li.textContent = `${KINDS[d.kind]}: ${where} (${d.detail})`;
    list.append(li);
  }
  $("adj-reads").replaceChildren(...current.reads.map((r, i) => readTable(r, "ab"[i], current.disagreements)));
  const resolved = current.status === "resolved";
  for (const b of ["take-a", "take-b", "take-edited"]) $(b).disabled = resolved;
  $("adj-undo").hidden = !resolved;
  document.body.dataset.caseStatus = current.status;
  say(resolved ? `resolved by ${current.resolved_by}` : "");
}

async function resolve(body) {
  try {
    const result = await post(`/api/team/adjudications/${current.id}/resolve`, { version: current.version, ...body });
    say(`consensus applied to ${result.key_slice.file_name}`);
    await openCase(current.id);
    await loadQueue();
  } catch (err) {
    showError(`Could not apply the consensus: ${describeError(err)}`);
  }
}

// Batches of agreed cases until none is left (or a batch applies nothing: those left were skipped).
async function applyAgreed() {
  const button = $("apply-agreed");
  button.disabled = true;
  let applied = 0;
  let skipped = [];
  try {
    for (;;) {
      const result = await post("/api/team/adjudications/apply-agreed", {});
      applied += result.results.length;
      skipped = result.skipped;
      if (!result.results.length || !result.left) break;
    }
    const notes = skipped.map((s) => `#${s.id}: ${s.detail}`).join("; ");
    $("apply-agreed-status").textContent =
      `${applied} agreed case(s) applied as the consensus${skipped.length ? `; skipped ${notes}` : ""}`;
    document.body.dataset.appliedAgreed = String(applied);
    await loadQueue();
    if (current) await openCase(current.id);
  } catch (err) {
    showError(`Could not apply the agreed cases: ${describeError(err)}`);
  } finally {
    button.disabled = false;
  }
}

async function main() {
  await initShell();
  $("adj-status").addEventListener("change", () => loadQueue().catch((err) => showError(describeError(err))));
  $("take-a").addEventListener("click", () => resolve({ pick: "a" }));
  $("take-b").addEventListener("click", () => resolve({ pick: "b" }));
  $("take-edited").addEventListener("click", () => resolve({ consensus: mixedConsensus() }));
  $("apply-agreed").addEventListener("click", applyAgreed);
  $("adj-undo").addEventListener("click", async () => {
    try {
      await post(`/api/team/adjudications/${current.id}/unresolve`, { version: current.version });
      await openCase(current.id);
      await loadQueue();
    } catch (err) {
      showError(`Could not undo: ${describeError(err)}`);
    }
  });
  try {
    await loadQueue();
  } catch (err) {
    showError(`Could not load the adjudication queue: ${describeError(err)}`);
    return;
  }
  const id = new URLSearchParams(location.search).get("id");
  if (id) await openCase(Number(id));
  document.body.dataset.ready = "1";
}

main();
