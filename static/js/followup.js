// Follow-up view: one tracked lesion in each of the patient's studies side by side (one window for all,
// each panel centred on the lesion), its axes over time, the RECIST 1.1 response, and link corrections.
import { ConflictError, describeError, get, hideError, initShell, post, showError } from "./api.js";
import { DEFAULT_PRESET, LESION_TYPES, PALETTE, TYPE_COLORS, vocabulary } from "./vocabulary.js";

const $ = (id) => document.getElementById(id);
const root = $("followup");
const fileName = root.dataset.fileName;
const patientIndex = Number(fileName.slice(0, 6));
const PANEL_PX = 256;
// Source pixels shown around the lesion: its box plus a margin, never less than this.
const MIN_VIEW_PX = 96;
const state = { view: null, track: null, baseline: null, center: DEFAULT_PRESET.center, width: DEFAULT_PRESET.width, lastFile: null };
const say = (t) => { $("fu-status").textContent = t; };

function fixedPresets() { return vocabulary.presets.filter((p) => p.center !== null); }

async function load() {
  const q = state.baseline ? `?baseline=${state.baseline}` : "";
  state.view = await get(`/api/followup/patients/${patientIndex}${q}`);
  const v = state.view;
  $("fu-title").textContent = `Follow-up · patient ${patientIndex}`;
  if (!state.track || !v.lesions.some((l) => l.track_id === state.track)) {
    const wanted = Number(new URLSearchParams(location.search).get("lesion"));
    const start = v.lesions.find((l) => l.lesion_id === wanted) || v.lesions.find((l) => l.file_name === fileName) || v.lesions[0];
    state.track = start.track_id;
  }
  fillSelects();
  render();
}

function trackLabel(t) {
  const studies = t.points.map((p) => p.study_index).join(", ");
  return `${t.track_id} · ${LESION_TYPES[t.lesion_type] ?? t.lesion_type} · studies ${studies}`;
}

function fillSelects() {
  const v = state.view;
  const track = $("fu-track");
  track.replaceChildren(...v.tracks.map((t) => new Option(trackLabel(t), t.track_id, false, t.track_id === state.track)));
  const base = $("fu-baseline");
  base.replaceChildren(...v.studies.map((s) => new Option(`study ${s}`, String(s), false, s === v.response.baseline_study)));
}

function render() {
  document.body.dataset.track = state.track;
  renderPanels();
  renderTimeline();
  renderResponse();
  document.body.dataset.ready = "true";
}

// The link that joins this lesion to the previous member of its track (or a broken one it had).
function linkInto(lesionId) {
  return state.view.links.find((l) => l.to_lesion_id === lesionId && l.status !== "removed") || null;
}

function renderPanels() {
  const v = state.view;
  const members = v.lesions.filter((l) => l.track_id === state.track);
  const panels = v.studies.map((study) => {
    const lesion = members.find((l) => l.study_index === study);
    return lesion ? lesionPanel(lesion, members) : absentPanel(study, members);
  });
  $("fu-panels").replaceChildren(...panels);
}

function heading(text, extra) {
  const h = document.createElement("h3");
  h.textContent = text;
  if (extra) { const s = document.createElement("span"); s.className = "muted small"; s.textContent = extra; h.append(s); }
  return h;
}

function lesionPanel(lesion, members) {
  const panel = document.createElement("div");
  panel.className = "fu-panel";
  Object.assign(panel.dataset, { study: lesion.study_index, lesionId: lesion.lesion_id, longMm: lesion.long_mm, shortMm: lesion.short_mm });
  panel.append(heading(`Study ${lesion.study_index}`, `${lesion.long_mm.toFixed(1)} × ${lesion.short_mm.toFixed(1)} mm · slice ${lesion.slice_index}`));
  const canvas = document.createElement("canvas");
  canvas.width = PANEL_PX;
  canvas.height = PANEL_PX;
  canvas.setAttribute("aria-label", `Study ${lesion.study_index}, centred on lesion ${lesion.lesion_id}`);
  panel.append(canvas);
  drawSlice(canvas, lesion);
  const link = linkInto(lesion.lesion_id);
  const earlier = members.some((m) => m.study_index < lesion.study_index);
  if (link && (earlier || link.status === "broken")) panel.append(linkControls(link));
  const open = document.createElement("a");
  open.href = `/viewer/${lesion.file_name}`;
  open.className = "small";
  open.textContent = "open in the viewer";
  panel.append(open);
  return panel;
}

function linkControls(link) {
  const row = document.createElement("div");
  row.className = "fu-link";
  row.dataset.linkId = link.id;
  row.dataset.linkStatus = link.status;
  const s = document.createElement("span");
  s.className = `fu-status-${link.status}`;
  s.textContent = `link from the earlier study: ${vocabulary.link_statuses[link.status]}`;
  row.append(s);
  if (link.status !== "confirmed") row.append(button("Confirm", `Confirm link ${link.id}`, () => decide(link, "confirm")));
  if (link.status !== "broken") row.append(button("Break", `Break link ${link.id}`, () => decide(link, "break")));
  return row;
}

function button(text, label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", action);
  return b;
}

// A study where the track has no lesion: the study's other lesions can be linked into the track.
function absentPanel(study, members) {
  const panel = document.createElement("div");
  panel.className = "fu-panel fu-absent";
  panel.dataset.study = study;
  panel.append(heading(`Study ${study}`, "not found in this study"));
  const empty = document.createElement("div");
  empty.className = "fu-empty";
  empty.textContent = "This lesion is not linked in this study (absent, resolved, or not measured).";
  panel.append(empty);
  const candidates = state.view.lesions.filter((l) => l.study_index === study);
  const anchor = members.find((m) => m.study_index !== study);
  if (candidates.length && anchor) {
    const row = document.createElement("div");
    row.className = "fu-link";
    const sel = document.createElement("select");
    sel.setAttribute("aria-label", `Lesion of study ${study} to link`);
    sel.append(...candidates.map((c) => new Option(`${LESION_TYPES[c.lesion_type] ?? c.lesion_type} ${c.long_mm.toFixed(1)} mm (${c.file_name})`, String(c.lesion_id))));
    row.append(sel, button("Link", `Link a lesion of study ${study} to this lesion`, () => addLink(anchor, Number(sel.value))));
    panel.append(row);
  }
  return panel;
}

function windowQuery() { return `center=${state.center}&width=${state.width}`; }

// The server's windowed PNG, cropped around the lesion; the box is drawn in the lesion type's colour.
function drawSlice(canvas, lesion) {
  const [cx, cy] = lesion.centre_px;
  const [x1, y1, x2, y2] = lesion.box;
  const side = Math.max(MIN_VIEW_PX, 2.2 * Math.max(x2 - x1, y2 - y1));
  const sx = cx - side / 2;
  const sy = cy - side / 2;
  Object.assign(canvas.dataset, { viewX: sx, viewY: sy, viewSide: side, window: `${state.center},${state.width}` });
  const ctx = canvas.getContext("2d");
  const img = new Image();
  img.onload = () => {
    ctx.imageSmoothingEnabled = true;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, PANEL_PX, PANEL_PX);
    ctx.drawImage(img, sx, sy, side, side, 0, 0, PANEL_PX, PANEL_PX);
    const k = PANEL_PX / side;
    ctx.strokeStyle = TYPE_COLORS[lesion.lesion_type] || PALETTE.original;
    ctx.lineWidth = 1.5;
    ctx.strokeRect((x1 - sx) * k, (y1 - sy) * k, (x2 - x1) * k, (y2 - y1) * k);
    canvas.dataset.loaded = "true";
  };
  img.onerror = () => {
    ctx.fillStyle = "#333";
    ctx.fillRect(0, 0, PANEL_PX, PANEL_PX);
    ctx.fillStyle = "#ddd";
    ctx.font = "13px system-ui, sans-serif";
    ctx.fillText("slice not on disk", 80, PANEL_PX / 2);
    canvas.dataset.loaded = "missing";
  };
  img.src = `/api/slices/${lesion.slice_name}.png?${windowQuery()}`;
  canvas.dataset.src = img.src;
}

function pct(v) { return v === null || v === undefined ? "–" : `${v > 0 ? "+" : ""}${v.toFixed(1)}%`; }

function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }

function renderTimeline() {
  const track = state.view.tracks.find((t) => t.track_id === state.track);
  const rows = track.points.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.study = p.study_index;
    tr.append(cell(String(p.study_index)), cell(p.long_mm.toFixed(1)), cell(pct(p.long_change_pct)), cell(p.short_mm.toFixed(1)), cell(pct(p.short_change_pct)));
    return tr;
  });
  $("fu-timeline").tBodies[0].replaceChildren(...rows);
  drawChart(track);
}

function svg(tag, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// Long (solid) and short (dashed) axis per study, on the patient's studies as the x axis.
function drawChart(track) {
  const chart = $("fu-chart");
  const studies = state.view.studies;
  const W = 420, H = 200, L = 40, R = 34, T = 10, B = 28;
  const top = Math.max(10, ...track.points.map((p) => p.long_mm)) * 1.15;
  const x = (s) => L + (studies.length === 1 ? (W - L - R) / 2 : ((studies.indexOf(s)) / (studies.length - 1)) * (W - L - R));
  const y = (mm) => H - B - (mm / top) * (H - T - B);
  const parts = [svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }), svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" })];
  for (const s of studies) parts.push(svg("text", { x: x(s), y: H - 10, "text-anchor": "middle", "font-size": 11 }, `study ${s}`));
  for (const mm of [0, top / 2, top]) parts.push(svg("text", { x: L - 4, y: y(mm) + 4, "text-anchor": "end", "font-size": 10 }, mm.toFixed(0)));
  const colour = TYPE_COLORS[track.lesion_type] || PALETTE.corrected;
  for (const [key, dash] of [["long_mm", ""], ["short_mm", "4 3"]]) {
    const pts = track.points.map((p) => `${x(p.study_index)},${y(p[key])}`).join(" ");
    parts.push(svg("polyline", { points: pts, fill: "none", stroke: colour, "stroke-width": 2, "stroke-dasharray": dash }));
    for (const p of track.points) parts.push(svg("circle", { cx: x(p.study_index), cy: y(p[key]), r: 3, fill: colour, "data-axis": key, "data-mm": p[key] }));
  }
  parts.push(svg("text", { x: W - R, y: T + 10, "text-anchor": "end", "font-size": 11 }, "— long   - - short (mm)"));
  chart.replaceChildren(...parts);
}

function renderResponse() {
  const r = state.view.response;
  $("fu-targets").textContent = r.targets.length
    ? `Target lesions (largest measurable at the baseline study, ≤ 5, ≤ 2 per organ): ${r.targets.join(", ")}. A target missing in a study counts 0 mm.`
    : (r.note || "no target lesion");
  const rows = r.studies.map((s) => {
    const tr = document.createElement("tr");
    tr.dataset.study = s.study_index;
    tr.dataset.category = s.category || "baseline";
    tr.append(cell(String(s.study_index)), cell(s.sum_mm.toFixed(1)), cell(s.category || "baseline", "fu-cat"), cell(s.rule || ""));
    return tr;
  });
  $("fu-response").tBodies[0].replaceChildren(...rows);
}

async function write(action, fileForUndo) {
  try {
    hideError();
    const result = await action();
    state.lastFile = fileForUndo || result.key_slice.file_name;
    say(result.entry ? `${result.entry.action.replace("_", " ")} saved` : "nothing to change");
    await load();
  } catch (err) {
    if (err instanceof ConflictError) { say("someone else changed this link first; showing the current state"); await load(); return; }
    showError(describeError(err), () => write(action, fileForUndo));
  }
}

const decide = (link, verb) => write(() => post(`/api/followup/links/${link.id}/${verb}`, { version: link.version }));
const addLink = (anchor, lesionId) => write(() => post("/api/followup/links", { from_lesion_id: anchor.lesion_id, to_lesion_id: lesionId }));

$("fu-undo").addEventListener("click", () => {
  if (!state.lastFile) { say("nothing to undo on this page yet"); return; }
  write(() => post(`/api/key-slices/${state.lastFile}/undo`), state.lastFile);
});
$("fu-track").addEventListener("change", (e) => { state.track = e.target.value; render(); });
$("fu-baseline").addEventListener("change", async (e) => { state.baseline = Number(e.target.value); await load(); });

function setWindow(center, width) {
  state.center = center;
  state.width = width;
  $("fu-center").value = String(center);
  $("fu-width").value = String(width);
  renderPanels();
}
const presetSel = $("fu-preset");
presetSel.replaceChildren(...fixedPresets().map((p) => new Option(p.label, p.name, false, p.name === DEFAULT_PRESET.name)));
presetSel.addEventListener("change", () => { const p = fixedPresets().find((q) => q.name === presetSel.value); setWindow(p.center, p.width); });
for (const id of ["fu-center", "fu-width"]) {
  $(id).addEventListener("change", () => {
    const c = Number($("fu-center").value), w = Number($("fu-width").value);
    if (Number.isFinite(c) && Number.isFinite(w) && w >= 1) setWindow(c, w);
  });
}

await initShell();
$("fu-center").value = String(state.center);
$("fu-width").value = String(state.width);
try {
  await load();
} catch (err) {
  showError(describeError(err), load);
}
