// A reader's read of one key slice: the reader's own marks over the slice, saved as they change (blind read).
import { ConflictError, describeError, get, initShell, post, put, showError } from "./api.js";
import { $, fixed, flagName, longAxisPx, markRows, row, typeName } from "./teamshared.js";
import { BOX_PADDING_PX, PALETTE, vocabulary } from "./vocabulary.js";
import { svg } from "./charts.js";

const readId = Number($("team-read").dataset.readId);
let read = null;
let spacingX = 1;

const say = (text) => { $("read-status").textContent = text; };

function select(options, value, label, onChange) {
  const s = document.createElement("select");
  s.setAttribute("aria-label", label);
  for (const [v, text] of options) {
    const o = document.createElement("option");
    o.value = v;
    o.textContent = text;
    if (String(value) === v) o.selected = true;
    s.append(o);
  }
  s.addEventListener("change", () => onChange(s.value));
  return s;
}

async function save(marks) {
  try {
    const result = await put(`/api/team/reads/${readId}`, { version: read.version, marks });
    show(result.read);
    say("saved");
  } catch (err) {
    if (err instanceof ConflictError) { say("changed in another window: reloaded"); show(await get(`/api/team/reads/${readId}`)); return; }
    showError(`Could not save: ${describeError(err)}`);
  }
}

function changed(key, patch) {
  const marks = structuredClone(read.marks);
  const [kind, n] = [key[0], Number(key.slice(1))];
  if (kind === "#") Object.assign(marks.lesions.find((m) => m.id === n), patch);
  else Object.assign(marks.added[n - 1], patch);
  save(marks);
}

function drawMarks() {
  const layer = $("marks");
  layer.replaceChildren();
  for (const { key, mark, added } of markRows(read.marks)) {
    if (mark.deleted) continue;
    const [x1, y1, x2, y2] = mark.box;
    const colour = added ? PALETTE.added : PALETTE.original;
    const rect = svg("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none", stroke: colour, "stroke-width": 2, "vector-effect": "non-scaling-stroke" });
    if (mark.flag_reason) rect.setAttribute("stroke-dasharray", "4 3");
    layer.append(rect, svg("text", { x: x1, y: y1 - 3, fill: colour, "font-size": 12 }, key));
  }
}

function show(next) {
  read = next;
  document.body.dataset.readVersion = String(read.version);
  document.body.dataset.readStatus = read.status;
  $("read-title").textContent = `${read.file_name} (assignment ${read.assignment_id})`;
  const body = $("mark-table").tBodies[0];
  body.replaceChildren();
  const finished = read.status !== "claimed";
  const flagOptions = [["", "not noisy"], ...Object.entries(vocabulary.flag_reasons)];
  const typeOptions = vocabulary.lesion_types.map((t) => [String(t.id), t.name]);
  const baseline = Object.fromEntries((read.baseline?.lesions || []).map((m) => [m.id, m]));
  for (const { key, mark, added } of markRows(read.marks)) {
    const origin = added ? "added" : baseline[mark.id]?.origin;
    const reasons = mark.flag_reason === "dataset" ? [...flagOptions, ["dataset", flagName("dataset")]] : flagOptions;
    const type = finished ? typeName(mark.lesion_type) : select(typeOptions, mark.lesion_type, `Type of ${key}`, (v) => changed(key, { lesion_type: Number(v) }));
    const flag = finished || added ? flagName(mark.flag_reason) : select(reasons, mark.flag_reason || "", `Noisy flag of ${key}`, (v) => changed(key, { flag_reason: v || null, flag_note: v === "other" ? "flagged in a team read" : "" }));
    const actions = document.createElement("td");
    if (!finished && origin !== "csv") {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = mark.deleted ? "Restore" : "Delete";
      b.setAttribute("aria-label", `${b.textContent} ${key}`);
      b.addEventListener("click", () => changed(key, { deleted: !mark.deleted }));
      actions.append(b);
    }
    const tr = row(key, type, fixed(longAxisPx(mark, BOX_PADDING_PX) * spacingX, 1), flag, actions);
    tr.dataset.key = key;
    if (mark.deleted) tr.classList.add("muted");
    body.append(tr);
  }
  $("read-undo").disabled = finished || !read.can_undo;
  $("read-redo").disabled = finished || !read.can_redo;
  $("read-finish").disabled = finished;
  drawMarks();
}

// Drag on the image: a box lesion the dataset missed, of the first lesion type until changed in the table.
function wireDrawing() {
  const layer = $("marks");
  let start = null;
  let ghost = null;
  const point = (ev) => {
    const r = layer.getBoundingClientRect();
    const vb = layer.viewBox.baseVal;
    return [((ev.clientX - r.left) / r.width) * vb.width, ((ev.clientY - r.top) / r.height) * vb.height];
  };
  layer.addEventListener("pointerdown", (ev) => {
    if (read.status !== "claimed") return;
    start = point(ev);
    ghost = svg("rect", { fill: "none", stroke: PALETTE.pending, "stroke-width": 1, "vector-effect": "non-scaling-stroke" });
    layer.append(ghost);
    layer.setPointerCapture(ev.pointerId);
  });
  layer.addEventListener("pointermove", (ev) => {
    if (!start) return;
    const [x, y] = point(ev);
    ghost.setAttribute("x", Math.min(x, start[0]));
    ghost.setAttribute("y", Math.min(y, start[1]));
    ghost.setAttribute("width", Math.abs(x - start[0]));
    ghost.setAttribute("height", Math.abs(y - start[1]));
  });
  layer.addEventListener("pointerup", (ev) => {
    if (!start) return;
    const [x, y] = point(ev);
    const box = [Math.min(x, start[0]), Math.min(y, start[1]), Math.max(x, start[0]), Math.max(y, start[1])].map((v) => Math.round(v * 10) / 10);
    start = null;
    ghost.remove();
    if (box[2] - box[0] < 4 || box[3] - box[1] < 4) return;
    const marks = structuredClone(read.marks);
    marks.added.push({ recist: null, box, lesion_type: vocabulary.lesion_types[0].id, flag_reason: null, flag_note: "", deleted: false });
    save(marks);
  });
}

async function step(path) {
  try {
    show((await post(`/api/team/reads/${readId}/${path}`, { version: read.version })).read);
  } catch (err) {
    showError(`Could not ${path}: ${describeError(err)}`);
  }
}

async function finishAndNext() {
  try {
    await post(`/api/team/reads/${readId}/finish`, { version: read.version });
    const { read: next } = await post(`/api/team/assignments/${read.assignment_id}/next`);
    location.assign(next ? `/team/reads/${next.id}` : "/team");
  } catch (err) {
    showError(`Could not finish: ${describeError(err)}`);
  }
}

async function main() {
  await initShell();
  try {
    const first = await get(`/api/team/reads/${readId}`);
    const ks = await get(`/api/key-slices/${first.file_name}`);
    spacingX = ks.spacing_mm[0];
    $("marks").setAttribute("viewBox", `0 0 ${ks.image_size[0]} ${ks.image_size[1]}`);
    $("slice-image").src = `/api/slices/${first.file_name.replace(/\.png$/, "")}.png`;
    show(first);
  } catch (err) {
    showError(`Could not load read ${readId}: ${describeError(err)}`);
    return;
  }
  wireDrawing();
  $("read-undo").addEventListener("click", () => step("undo"));
  $("read-redo").addEventListener("click", () => step("redo"));
  $("read-finish").addEventListener("click", finishAndNext);
  document.body.dataset.ready = "1";
}

main();
