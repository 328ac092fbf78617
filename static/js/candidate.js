// A volume-screening candidate in the viewer (/viewer/KEY?candidate=ID): the viewer opens on the slice where
// the candidate is largest with its box drawn; the reviewer adds it (a lesion on that slice, through the
// review write that answers the key slice) or dismisses it. Kept apart from viewer.js, which it reaches
// only through window.__viewer (setSlice, applyKeySlice, addOverlay, onKeySlice).
import { ConflictError, describeError, get, post, showError } from "./api.js";
import { CANDIDATE_LAYER, CANDIDATE_STATUSES, PALETTE } from "./vocabulary.js";

const id = new URLSearchParams(location.search).get("candidate");
const root = document.getElementById("viewer");

function whenReady() {
  return new Promise((resolve) => {
    const check = () => (root.dataset.ready === "1" && window.__viewer ? resolve(window.__viewer) : setTimeout(check, 50));
    check();
  });
}

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

let cand = null;

function panel() {
  const section = el("section", { id: "candidate-panel", "aria-labelledby": "candidate-title" });
  section.append(
    el("h2", { id: "candidate-title" }, `Volume candidate #${id}`),
    el("p", { id: "candidate-meta", class: "muted small" }),
    el("p", { id: "candidate-status" }),
  );
  const row = el("div", { class: "row" });
  row.append(
    el("button", { type: "button", id: "candidate-add", class: "primary", "aria-label": "Add the candidate as a lesion on its slice (type from the toolbar)" }, "+ Add as lesion"),
    el("button", { type: "button", id: "candidate-dismiss", "aria-label": "Dismiss the candidate: not a lesion" }, "✗ Dismiss"),
    el("a", { href: "/volume", id: "candidate-back", class: "button", "aria-label": "Back to the candidates" }, "☰ Candidates"),
  );
  section.append(row);
  document.querySelector("aside.side").prepend(section);
  section.querySelector("#candidate-add").addEventListener("click", add);
  section.querySelector("#candidate-dismiss").addEventListener("click", dismiss);
}

function show() {
  const slices = `slices ${cand.slice_first}–${cand.slice_last} (${cand.slice_count} with a box)`;
  document.getElementById("candidate-meta").textContent =
    `score ${cand.score.toFixed(2)} · largest on slice ${cand.slice_index} · ${slices} · model ${cand.model_version}`;
  const who = cand.decided_by ? ` by ${cand.decided_by}` : "";
  const when = cand.decided_at ? ` on ${new Date(cand.decided_at).toLocaleString()}` : "";
  document.getElementById("candidate-status").textContent = `Status: ${CANDIDATE_STATUSES[cand.status]}${who}${when}`;
  const pending = cand.status === "pending";
  document.getElementById("candidate-add").disabled = !pending;
  document.getElementById("candidate-dismiss").disabled = !pending;
  root.dataset.candidateStatus = cand.status;
}

// The candidate's box on each slice it has one, brightest on its largest slice; drawn while still to review.
function draw(ctx, { drawGeometry, current }) {
  if (!cand || cand.status !== "pending") return;
  const here = cand.slices.find((s) => s.slice_index === current);
  if (!here) return;
  const largest = current === cand.slice_index;
  drawGeometry(ctx, { box: here.box }, PALETTE[CANDIDATE_LAYER], {
    dashed: true, faint: !largest, labelBelow: true,
    label: `candidate #${cand.id} ${here.score.toFixed(2)}${largest ? " · largest" : ""}`,
  });
}

async function add() {
  try {
    const type = Number(document.getElementById("new-type").value);
    const answer = await post(`/api/volume/candidates/${id}/add`, { version: cand.version, lesion_type: type });
    cand = answer.candidate;
    window.__viewer.applyKeySlice(answer.key_slice);  // the write's answer: the key slice with the new lesion
    show();
  } catch (err) {
    await conflictOr(err, "Could not add the candidate");
  }
}

async function dismiss() {
  try {
    cand = (await post(`/api/volume/candidates/${id}/dismiss`, { version: cand.version })).candidate;
    show();
    window.__viewer.redraw();  // without its box
  } catch (err) {
    await conflictOr(err, "Could not dismiss the candidate");
  }
}

// Someone else decided first: show the candidate as it is now, say who.
async function conflictOr(err, what) {
  if (err instanceof ConflictError) {
    cand = await get(`/api/volume/candidates/${id}`);
    show();
    showError(`${what}: ${describeError(err)}`);
    return;
  }
  showError(`${what}: ${describeError(err)}`);
}

async function refresh() {
  try {
    const now = await get(`/api/volume/candidates/${id}`);
    if (now.version === cand.version) return;
    cand = now;
    show();
    window.__viewer.redraw();
  } catch (err) {
    showError(`Could not refresh volume candidate ${id}: ${describeError(err)}`);
  }
}

async function start() {
  const viewer = await whenReady();
  try {
    cand = await get(`/api/volume/candidates/${id}`);
  } catch (err) {
    showError(`Could not load volume candidate ${id}: ${describeError(err)}`);
    return;
  }
  panel();
  show();
  viewer.setSlice(cand.slice_index);
  viewer.addOverlay(draw);
  // A delete, undo or redo elsewhere in the viewer can reopen or re-add the candidate (its lesion moved).
  viewer.onKeySlice(refresh);
  root.dataset.candidate = String(cand.id);
}

if (id) start();
