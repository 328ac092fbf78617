// Slice viewer: raw int16 HU pixels windowed in the browser, context scrolling, overlays and review tools.
import {
  ApiError, ConflictError, NetworkError, del, describeError, get, hideError,
  initShell, isTypingTarget, post, put, showConflict, showError, user, wireKeymap,
} from "./api.js";
import {
  boxCorners, boxOfPoints, compose, decompose, dot, len, normBox, pointsToRecist, recistPoints, segmentDistance, sub,
} from "./geometry.js";
import { buildKeyIndex, eventKeyId, renderKeymap } from "./keymap.js";
import { INT16_OFFSET, buildLut } from "./lut.js";
import { roiStats } from "./roi.js";
import {
  ALL_FLAG_REASONS, BOX_PADDING_PX, DEFAULT_PRESET, DICOM_PRESET, LAYERS, LESION_TYPES, PALETTE, PRESETS, STATUSES,
  vocabulary,
} from "./vocabulary.js";

const HU_PER_PX = 4;
const REVIEW_STATES = vocabulary.review_states;
const PREFETCH_CONCURRENCY = 4;
const HANDLE_PX = 8;

const root = document.getElementById("viewer");
const fileName = root.dataset.fileName;
const seriesFolder = fileName.slice(0, fileName.lastIndexOf("_"));
const keyIndex = parseInt(fileName.slice(fileName.lastIndexOf("_") + 1, -4), 10);
// The page knows from the database whether the key slice's image is on disk; no request is made when not.
const keyStored = root.dataset.keyStored !== "false";
const viewport = document.getElementById("viewport");
const imageCanvas = document.getElementById("image-canvas");
const overlayCanvas = document.getElementById("overlay-canvas");
const imageCtx = imageCanvas.getContext("2d", { willReadFrequently: true });
const overlayCtx = overlayCanvas.getContext("2d");
const $ = (id) => document.getElementById(id);

const state = {
  ks: null,
  current: keyIndex,
  window: { center: DEFAULT_PRESET.center, width: DEFAULT_PRESET.width },
  windowName: DEFAULT_PRESET.label,
  invert: false,
  zoom: 1,
  panX: 0,
  panY: 0,
  tool: "pointer",
  selected: null, // {kind: "lesion"|"prediction", id}
  layers: Object.fromEntries(Object.keys(LAYERS).map((layer) => [layer, true])),
  threshold: 0.5,
  smooth: false,
  // "N/M": the key slice's study among the patient's studies in the work list (set once they are listed).
  studyOf: null,
  // The reader's own measurements, kept in the browser only: {id, kind: ellipse|rectangle|probe, slice, box|point}.
  measures: [],
  drawing: null,
  dragging: null,
  pending: null,
  provider: null,
  // ?prefetch=0 turns neighbour prefetching off: the benchmark's cold baseline.
  prefetch: new URLSearchParams(location.search).get("prefetch") !== "0",
};

// The pointer's last client position over the viewport (null when outside): the HU readout is recomputed
// from it on every frame, so scrolling or zooming under a still pointer never leaves a stale number.
let lastPointer = null;

const stats = {
  renders: 0,
  renderTimes: [],
  blankFrames: 0,
  firstImageMs: null,
  shown: null, // {index, status}
};

// ---------------------------------------------------------------- slice cache and prefetch

const cache = new Map(); // index -> {status: "ok", data, w, h} | {status: "missing"} | {status: "error", error}
const inflight = new Map(); // index -> Promise
let prefetchQueue = [];
let prefetchActive = 0;

function sliceName(index) {
  return `${seriesFolder}_${String(index).padStart(3, "0")}`;
}

// The scroll path: the slices stored for the series (and the key slice, shown as missing when it is not).
// An index between far-apart stored slices is never visited, so it is never requested.
let sliceListCache = { ks: null, list: [keyIndex] };
function sliceList() {
  if (!state.ks) return [keyIndex];
  if (sliceListCache.ks !== state.ks) {
    const list = [...new Set([...(state.ks.stored_slices || []), keyIndex])].sort((a, b) => a - b);
    sliceListCache = { ks: state.ks, list };
  }
  return sliceListCache.list;
}

function sliceRange() {
  const list = sliceList();
  return [list[0], list[list.length - 1]];
}

// The stored slice nearest to `index` (ties go to the lower one).
function nearestListed(index) {
  let best = keyIndex;
  for (const i of sliceList()) if (Math.abs(i - index) < Math.abs(best - index)) best = i;
  return best;
}

function isStored(index) {
  if (!state.ks) return index !== keyIndex || keyStored;
  return (state.ks.stored_slices || []).includes(index);
}

async function fetchSlice(index) {
  const response = await fetch(`/api/slices/${sliceName(index)}.raw`, { credentials: "same-origin" });
  if (response.status === 404) return { status: "missing" };
  if (!response.ok) {
    let detail = `HTTP ${response.status}`;
    try { detail = (await response.json()).detail || detail; } catch { /* not JSON */ }
    return { status: "error", error: detail };
  }
  const w = parseInt(response.headers.get("X-Width"), 10);
  const h = parseInt(response.headers.get("X-Height"), 10);
  const buffer = await response.arrayBuffer();
  const data = new Int16Array(buffer);
  if (!w || !h || data.length !== w * h) return { status: "error", error: `bad raw slice (${data.length} values for ${w}x${h})` };
  return { status: "ok", data, w, h };
}

function loadSlice(index) {
  if (cache.has(index)) return Promise.resolve(cache.get(index));
  if (inflight.has(index)) return inflight.get(index);
  if (!isStored(index)) {
    const entry = { status: "missing" };
    cache.set(index, entry);
    return Promise.resolve(entry);
  }
  const promise = fetchSlice(index)
    .catch((err) => ({ status: "error", error: String(err.message || err), transient: true }))
    .then((entry) => {
      inflight.delete(index);
      // A dropped connection should be retried on the next visit, not remembered as broken.
      if (!entry.transient) cache.set(index, entry);
      if (index === state.current) requestRender();
      return entry;
    });
  inflight.set(index, promise);
  return promise;
}

// Nearest slices first, so scrolling away from the key finds its neighbours already decoded.
function schedulePrefetch() {
  if (!state.prefetch) return;
  const wanted = sliceList().filter((i) => isStored(i) && !cache.has(i) && !inflight.has(i));
  wanted.sort((a, b) => Math.abs(a - state.current) - Math.abs(b - state.current));
  prefetchQueue = wanted;
  pumpPrefetch();
}

function pumpPrefetch() {
  while (prefetchActive < PREFETCH_CONCURRENCY && prefetchQueue.length) {
    const index = prefetchQueue.shift();
    if (cache.has(index) || inflight.has(index)) continue;
    prefetchActive++;
    loadSlice(index).finally(() => {
      prefetchActive--;
      pumpPrefetch();
    });
  }
}

// ---------------------------------------------------------------- windowing

// One entry per possible int16 value, so a frame is a single table lookup per pixel.
const lut = new Uint32Array(65536);
let lutKey = "";

function ensureLut() {
  const key = `${state.window.center}|${state.window.width}|${state.invert}`;
  if (key !== lutKey) {
    buildLut(lut, state.window.center, state.window.width, state.invert);
    lutKey = key;
  }
}

let imageData = null;
let imageData32 = null;

function ensureImageSize(w, h) {
  if (imageCanvas.width !== w || imageCanvas.height !== h || !imageData) {
    imageCanvas.width = w;
    imageCanvas.height = h;
    imageData = imageCtx.createImageData(w, h);
    imageData32 = new Uint32Array(imageData.data.buffer);
    layout();
  }
}

function windowInto(data) {
  ensureLut();
  const out = imageData32;
  const n = data.length;
  for (let i = 0; i < n; i++) out[i] = lut[data[i] + INT16_OFFSET];
  imageCtx.putImageData(imageData, 0, 0);
}

// A plain grey frame: the words go in the #missing label only, so there is one message, never two on top.
function drawPlaceholder() {
  const [w, h] = (state.ks && state.ks.image_size) || [512, 512];
  ensureImageSize(w, h);
  imageCtx.fillStyle = "#3a3a3a";
  imageCtx.fillRect(0, 0, w, h);
}

function showMissing(text) {
  const el = $("missing");
  el.textContent = text;
  el.hidden = false;
}

let renderQueued = false;
function requestRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  const index = state.current;
  const entry = cache.get(index);
  const t0 = performance.now();
  $("missing").hidden = true;
  $("loading").hidden = true;
  if (!entry) {
    // Keep the previous frame on screen rather than flashing an empty canvas.
    stats.blankFrames++;
    $("loading").hidden = false;
    loadSlice(index);
    stats.shown = { index, status: "loading" };
  } else if (entry.status === "ok") {
    ensureImageSize(entry.w, entry.h);
    windowInto(entry.data);
    stats.shown = { index, status: "ok" };
    if (stats.firstImageMs === null && index === keyIndex) {
      stats.firstImageMs = performance.now();
      root.dataset.firstImage = "1";
    }
  } else if (entry.status === "missing") {
    drawPlaceholder();
    showMissing(`${index === keyIndex ? "key " : ""}slice ${index} missing on disk`);
    stats.shown = { index, status: "missing" };
  } else {
    drawPlaceholder();
    showMissing(`slice ${index}: ${entry.error}`);
    stats.shown = { index, status: "error" };
  }
  const dt = performance.now() - t0;
  stats.renders++;
  stats.renderTimes.push(dt);
  if (stats.renderTimes.length > 1000) stats.renderTimes.shift();
  root.dataset.renders = String(stats.renders);
  root.dataset.shownSlice = String(index);
  drawOverlay();
  updateReadouts();
  updateHu();
  if (state.measures.length) updateMeasures();
}

// ---------------------------------------------------------------- view transform

let fit = { scale: 1, x: 0, y: 0 };

function layout() {
  const rect = viewport.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  overlayCanvas.width = Math.max(1, Math.round(rect.width * dpr));
  overlayCanvas.height = Math.max(1, Math.round(rect.height * dpr));
  overlayCanvas.style.width = `${rect.width}px`;
  overlayCanvas.style.height = `${rect.height}px`;
  const w = imageCanvas.width || 512;
  const h = imageCanvas.height || 512;
  const s = Math.min(rect.width / w, rect.height / h);
  fit = { scale: s, x: (rect.width - w * s) / 2, y: (rect.height - h * s) / 2 };
  applyTransform();
}

function transform() {
  const s = fit.scale * state.zoom;
  const w = imageCanvas.width;
  const h = imageCanvas.height;
  // Zoom about the viewport centre, then pan.
  const cx = fit.x + (w * fit.scale) / 2;
  const cy = fit.y + (h * fit.scale) / 2;
  return { s, tx: cx - (w * s) / 2 + state.panX, ty: cy - (h * s) / 2 + state.panY };
}

function applyTransform() {
  const { s, tx, ty } = transform();
  imageCanvas.style.transform = `translate(${tx}px, ${ty}px) scale(${s})`;
  // Above 2x the pixels show as blocks (what a reader measures on) unless smooth interpolation is chosen.
  imageCanvas.classList.toggle("pixelated", s > 2 && !state.smooth);
  drawOverlay();
  updateReadouts();
  updateHu();
}

function toImage(clientX, clientY) {
  const rect = viewport.getBoundingClientRect();
  const { s, tx, ty } = transform();
  return { x: (clientX - rect.left - tx) / s, y: (clientY - rect.top - ty) / s };
}

function toScreen(x, y) {
  const { s, tx, ty } = transform();
  return { x: tx + x * s, y: ty + y * s };
}

function imageToClient(x, y) {
  const rect = viewport.getBoundingClientRect();
  const p = toScreen(x, y);
  return { x: rect.left + p.x, y: rect.top + p.y };
}

// ---------------------------------------------------------------- geometry helpers

function spacingX() {
  const s = state.ks && state.ks.spacing_mm;
  return s && s[0] > 0 ? s[0] : null;
}

function lengthLabel(px) {
  const sx = spacingX();
  return sx ? `${(px * sx).toFixed(1)} mm` : `${px.toFixed(1)} px`;
}

function diametersLabel(geometry) {
  if (geometry.diameters_mm && spacingX()) return `${geometry.diameters_mm[0].toFixed(1)} × ${geometry.diameters_mm[1].toFixed(1)} mm`;
  if (geometry.recist) {
    const p = recistPoints(geometry.recist);
    return `${lengthLabel(len(sub(p[1], p[0])))} × ${lengthLabel(len(sub(p[3], p[2])))}`;
  }
  const b = geometry.box;
  return `box ${lengthLabel(b[2] - b[0])} × ${lengthLabel(b[3] - b[1])}`;
}

// ---------------------------------------------------------------- marks

// The server derives each lesion's layer (app/review/lesion_state.py); the viewer never re-decides it.
function layerOf(lesion) {
  return lesion.layer;
}

function flagLabel(flag) {
  return `${ALL_FLAG_REASONS[flag.reason] ?? flag.reason}${flag.note ? `: ${flag.note}` : ""}`;
}

function lesionSlice(lesion) {
  const g = lesion.current || {};
  return g.slice_index ?? keyIndex;
}

function visibleLesions() {
  if (!state.ks) return [];
  return state.ks.lesions.filter((l) => state.layers[layerOf(l)] && lesionSlice(l) === state.current);
}

function visiblePredictions() {
  if (!state.ks || !state.layers.predicted || state.current !== keyIndex) return [];
  return (state.ks.predictions || []).filter((p) => p.status === "pending" && p.score >= state.threshold);
}

function findLesion(id) {
  return state.ks ? state.ks.lesions.find((l) => l.id === id) : null;
}

function findPrediction(id) {
  return state.ks ? (state.ks.predictions || []).find((p) => p.id === id) : null;
}

function selectedLesion() {
  return state.selected && state.selected.kind === "lesion" ? findLesion(state.selected.id) : null;
}

function selectedPrediction() {
  return state.selected && state.selected.kind === "prediction" ? findPrediction(state.selected.id) : null;
}

// Geometry being dragged or saved replaces the stored one on screen, so the user's edit never vanishes.
function displayedGeometry(lesion) {
  if (state.dragging && state.dragging.lesionId === lesion.id) return state.dragging.geometry;
  if (state.pending && state.pending.lesionId === lesion.id && state.pending.geometry) return state.pending.geometry;
  return lesion.current;
}

let placedLabels = [];
// Marks other modules draw over the slice (candidate.js: a volume candidate's box), each fn(ctx, helpers).
const overlayHooks = [];

function drawOverlay() {
  placedLabels = [];
  const dpr = window.devicePixelRatio || 1;
  const ctx = overlayCtx;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, overlayCanvas.width, overlayCanvas.height);
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  if (!state.ks) return;
  for (const lesion of visibleLesions()) {
    const layer = layerOf(lesion);
    const selected = state.selected && state.selected.kind === "lesion" && state.selected.id === lesion.id;
    if (layer === "corrected" && lesion.original && state.layers.original) {
      drawGeometry(ctx, lesion.original, PALETTE.original, { dashed: true, faint: true });
    }
    const g = displayedGeometry(lesion);
    const flagged = lesion.flag !== null;
    const label = [
      `#${lesion.id} ${LESION_TYPES[g.lesion_type] ?? g.lesion_type}`,
      diametersLabel(g),
      flagged ? `⚑ noisy (${flagLabel(lesion.flag)})` : "",
      lesion.confirmed && !flagged ? "✓" : "",
    ].filter(Boolean).join(" · ");
    drawGeometry(ctx, g, PALETTE[layer], { dashed: flagged, selected, label, handles: selected });
  }
  for (const prediction of visiblePredictions()) {
    const selected = state.selected && state.selected.kind === "prediction" && state.selected.id === prediction.id;
    // A prediction on a lesion that is already marked is drawn dashed and says so: accepting it asks first.
    const dup = prediction.matches_annotation ? " · = a marked lesion" : "";
    // The proposed RECIST axes, which accepting the prediction keeps as the lesion's measurement.
    drawGeometry(ctx, { box: prediction.box, recist: prediction.recist }, PALETTE.predicted, {
      selected, dashed: prediction.matches_annotation, labelBelow: true,
      label: `AI ${prediction.score.toFixed(2)}${dup}${selected ? " · Enter accept · Del reject" : ""}`,
    });
  }
  if (state.pending && state.pending.newGeometry) {
    drawGeometry(ctx, state.pending.newGeometry, PALETTE.pending, { dashed: true, label: "saving…" });
  }
  const extent = extentLesions();
  const rel = state.current - keyIndex;
  for (const lesion of extent) {
    drawGeometry(ctx, { box: lesion.current.box }, PALETTE[layerOf(lesion)], {
      dashed: true, faint: true, label: `#${lesion.id} extent (key ${rel > 0 ? "+" : ""}${rel})`,
    });
  }
  root.dataset.extent = extent.map((l) => l.id).join(",");
  for (const hook of overlayHooks) hook(ctx, { drawGeometry, current: state.current });
  drawMeasures(ctx);
  drawScaleBar(ctx);
  if (state.drawing) drawInProgress(ctx, state.drawing);
}

function drawGeometry(ctx, g, color, { dashed = false, faint = false, selected = false, label = "", handles = false, labelBelow = false, anchor: at = null } = {}) {
  ctx.save();
  ctx.strokeStyle = color;
  ctx.fillStyle = color;
  ctx.globalAlpha = faint ? 0.5 : 1;
  ctx.setLineDash(dashed ? [6, 4] : []);
  ctx.shadowColor = "rgba(0,0,0,0.9)";
  ctx.shadowBlur = 2;
  const widthBoost = selected ? 1 : 0;
  let anchor = at;
  if (g.box) {
    const a = toScreen(g.box[0], g.box[1]);
    const b = toScreen(g.box[2], g.box[3]);
    ctx.lineWidth = 1 + widthBoost;
    ctx.strokeRect(a.x, a.y, b.x - a.x, b.y - a.y);
    anchor = labelBelow ? { x: a.x, y: b.y + 17 } : { x: a.x, y: a.y };
    if (handles && !g.recist) for (const c of boxCorners(g.box)) drawHandle(ctx, toScreen(c.x, c.y));
  }
  if (g.recist) {
    const p = recistPoints(g.recist).map((q) => toScreen(q.x, q.y));
    ctx.lineWidth = 2 + widthBoost;
    line(ctx, p[0], p[1]);
    ctx.lineWidth = 1.5 + widthBoost;
    line(ctx, p[2], p[3]);
    if (handles) for (const q of p) drawHandle(ctx, q);
    if (!anchor) anchor = { x: Math.min(p[0].x, p[1].x), y: Math.min(p[0].y, p[1].y) };
  }
  if (label && anchor) {
    ctx.setLineDash([]);
    ctx.font = `${selected ? "bold " : ""}12px system-ui, sans-serif`;
    const tw = ctx.measureText(label).width;
    let y = Math.max(14, anchor.y - 5);
    // Step a label up (then down) past labels already drawn this frame, so neighbours stay readable.
    const hits = (yy) => placedLabels.some((r) => anchor.x < r.x + r.w && r.x < anchor.x + tw + 4 && yy - 12 < r.y + 15 && r.y < yy + 3);
    const start = y;
    for (let up = 1; hits(y) && up <= 3 && start - 16 * up >= 14; up++) y = start - 16 * up;
    for (let down = 1; hits(y) && down <= 6; down++) y = start + 16 * down;
    placedLabels.push({ x: anchor.x - 2, y: y - 12, w: tw + 4 });
    ctx.shadowBlur = 0;
    ctx.globalAlpha = 0.65;
    ctx.fillStyle = "#000";
    ctx.fillRect(anchor.x - 2, y - 12, tw + 4, 15);
    ctx.globalAlpha = 1;
    ctx.fillStyle = color;
    ctx.fillText(label, anchor.x, y);
  }
  ctx.restore();
}

function line(ctx, a, b) {
  ctx.beginPath();
  ctx.moveTo(a.x, a.y);
  ctx.lineTo(b.x, b.y);
  ctx.stroke();
}

function drawHandle(ctx, p) {
  ctx.save();
  ctx.setLineDash([]);
  ctx.fillStyle = "#fff";
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 1;
  ctx.fillRect(p.x - 4, p.y - 4, 8, 8);
  ctx.strokeRect(p.x - 4, p.y - 4, 8, 8);
  ctx.restore();
}

function drawInProgress(ctx, d) {
  if (d.kind === "line") {
    ctx.save();
    ctx.strokeStyle = PALETTE.measure;
    ctx.setLineDash([6, 4]);
    strokeLine(ctx, d.line, d.p1, d.p2);
    ctx.restore();
    return;
  }
  if (d.kind === "roi") {
    ctx.save();
    ctx.strokeStyle = PALETTE.measure;
    ctx.setLineDash([6, 4]);
    strokeRoi(ctx, d.shape, normBox([d.p1.x, d.p1.y, d.p2.x, d.p2.y]));
    ctx.restore();
    return;
  }
  if (d.kind === "box") {
    drawGeometry(ctx, { box: normBox([d.p1.x, d.p1.y, d.p2.x, d.p2.y]) }, PALETTE.added, { dashed: true, label: "box" });
    return;
  }
  const long = len(sub(d.p2, d.p1));
  if (d.phase === 1 || !d.short) {
    const a = toScreen(d.p1.x, d.p1.y);
    const b = toScreen(d.p2.x, d.p2.y);
    ctx.save();
    ctx.strokeStyle = PALETTE.added;
    ctx.lineWidth = 2;
    line(ctx, a, b);
    ctx.fillStyle = PALETTE.added;
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(`long ${lengthLabel(long)}${d.phase === 1 ? "" : " — now drag across for the short axis"}`, b.x + 8, b.y);
    ctx.restore();
    return;
  }
  const pts = compose(d.p1, d.p2, d.short);
  drawGeometry(ctx, { recist: pointsToRecist(pts) }, PALETTE.added, {
    dashed: true, label: `${lengthLabel(long)} × ${lengthLabel(Math.abs(d.short.d2 - d.short.d1))}`,
  });
}

// Nearest visible mark under the pointer, in screen pixels; lesions win over predictions.
function hitTest(clientX, clientY) {
  const rect = viewport.getBoundingClientRect();
  const m = { x: clientX - rect.left, y: clientY - rect.top };
  let best = null;
  const consider = (kind, id, d) => {
    if (d <= 6 && (!best || d < best.d)) best = { kind, id, d };
  };
  for (const lesion of visibleLesions()) {
    const g = lesion.current;
    if (g.recist) {
      const p = recistPoints(g.recist).map((q) => toScreen(q.x, q.y));
      consider("lesion", lesion.id, Math.min(segmentDistance(m, p[0], p[1]), segmentDistance(m, p[2], p[3])));
    }
    if (g.box) consider("lesion", lesion.id, boxDistance(m, g.box) + (g.recist ? 1 : 0));
  }
  for (const p of visiblePredictions()) consider("prediction", p.id, boxDistance(m, p.box) + 0.5);
  return best;
}

function boxDistance(m, box) {
  const c = boxCorners(box).map((q) => toScreen(q.x, q.y));
  const inside = m.x >= c[0].x && m.x <= c[2].x && m.y >= c[0].y && m.y <= c[2].y;
  const edge = Math.min(...[0, 1, 2, 3].map((i) => segmentDistance(m, c[i], c[(i + 1) % 4])));
  return inside ? Math.min(edge, 5.5) : edge;
}

function handleAt(clientX, clientY) {
  const lesion = selectedLesion();
  if (!lesion || lesionSlice(lesion) !== state.current) return null;
  const rect = viewport.getBoundingClientRect();
  const m = { x: clientX - rect.left, y: clientY - rect.top };
  const g = lesion.current;
  const pts = g.recist ? recistPoints(g.recist) : boxCorners(g.box);
  for (let i = 0; i < pts.length; i++) {
    const s = toScreen(pts[i].x, pts[i].y);
    if (Math.abs(s.x - m.x) <= HANDLE_PX && Math.abs(s.y - m.y) <= HANDLE_PX) return { lesion, index: i, recist: !!g.recist };
  }
  return null;
}

function moveWhole(drag, pos) {
  const dx = pos.x - drag.from.x;
  const dy = pos.y - drag.from.y;
  const g = drag.start;
  const shift = (v, i) => v + (i % 2 ? dy : dx);
  return { ...g, recist: g.recist ? g.recist.map(shift) : null, box: g.box.map(shift) };
}

function moveHandle(drag, pos) {
  const g = drag.start;
  if (drag.recist) {
    const p = recistPoints(g.recist);
    let pts;
    if (drag.index < 2) {
      // Moving a long-axis end turns the short axis with it, keeping its position and lengths.
      const parts = decompose(p);
      const ends = [p[0], p[1]];
      ends[drag.index] = pos;
      pts = compose(ends[0], ends[1], parts);
    } else {
      // Moving a short-axis end slides it along the long axis and changes its length; it stays perpendicular.
      const parts = decompose(p);
      const L = sub(p[1], p[0]);
      const l = len(L) || 1;
      const u = { x: L.x / l, y: L.y / l };
      const n = { x: -u.y, y: u.x };
      parts.t = Math.max(0, Math.min(1, dot(sub(pos, p[0]), u) / l));
      if (drag.index === 2) parts.d1 = dot(sub(pos, p[0]), n);
      else parts.d2 = dot(sub(pos, p[0]), n);
      pts = compose(p[0], p[1], parts);
    }
    const recist = pointsToRecist(pts);
    return { ...g, recist, box: boxOfPoints(pts, BOX_PADDING_PX), diameters_mm: null };
  }
  const c = boxCorners(g.box);
  const opposite = c[(drag.index + 2) % 4];
  return { ...g, box: normBox([opposite.x, opposite.y, pos.x, pos.y]) };
}

// ---------------------------------------------------------------- edits (409 and network handling)

async function runEdit(edit) {
  state.pending = edit;
  drawOverlay();
  try {
    const result = await edit.request(edit.version);
    state.pending = null;
    hideError();
    setMessage(`${edit.label}: saved`);
    // Every review write answers with the updated key slice: apply it, no second request.
    if (result && result.key_slice) applyKeySlice(result.key_slice);
    if (edit.after) await edit.after(result);
  } catch (err) {
    if (err instanceof ConflictError && err.code === "duplicate_lesion" && edit.onDuplicate) {
      state.pending = null;
      return edit.onDuplicate(err);
    }
    if (err instanceof ConflictError) {
      const choice = await showConflict(err, edit.before, edit.label, edit.change);
      const current = err.body.current || {};
      if (choice === "reapply") {
        edit.version = current.status_version ?? current.version ?? edit.version;
        return runEdit(edit);
      }
      state.pending = null;
      setMessage(`${edit.label}: discarded, showing ${err.body.changed_by || "the other reviewer"}'s version`);
      if (err.body.key_slice) applyKeySlice(err.body.key_slice);
      else await reloadKeySlice();
    } else if (err instanceof NetworkError || (err instanceof ApiError && err.status >= 500)) {
      // Keep state.pending so the edit stays drawn until the retry succeeds.
      showError(`Could not save "${edit.label}": ${describeError(err)}`, () => runEdit(edit));
      drawOverlay();
    } else {
      state.pending = null;
      showError(`${edit.label} failed: ${describeError(err)}`);
      await reloadKeySlice();
    }
  }
  return undefined;
}

function ksPath(suffix = "") {
  return `/api/key-slices/${encodeURIComponent(fileName)}${suffix}`;
}

function addLesion(geometry, label) {
  const body = { lesion_type: parseInt($("new-type").value, 10), slice_index: state.current, ...geometry };
  runEdit({
    label,
    newGeometry: geometry,
    version: null,
    before: null,
    request: () => post(ksPath("/lesions"), body),
    after: async (result) => {
      if (result.lesion_id !== null) select({ kind: "lesion", id: result.lesion_id });
    },
  });
}

function updateGeometry(lesion, geometry) {
  const body = geometry.recist ? { recist: geometry.recist } : { box: geometry.box };
  runEdit({
    label: `edit lesion #${lesion.id}`,
    lesionId: lesion.id,
    geometry,
    change: geometry.recist ? { recist: geometry.recist } : { box: geometry.box },
    version: lesion.version,
    before: lesion,
    request: (version) => put(`/api/lesions/${lesion.id}/geometry`, { version, ...body }),
  });
}

// What each lesion action sets, for the conflict dialog's "Your change" column.
const ACTION_CHANGES = {
  confirm: () => ({ confirmed: { by: user()?.name ?? "you" } }),
  flag: (extra) => ({ flag: { reason: extra.reason, note: extra.note } }),
  unflag: () => ({ flag: null }),
};

function lesionAction(action, extra = {}, label = action) {
  const lesion = selectedLesion();
  if (!lesion) return setMessage("Select a lesion first (click it, or Tab).");
  return runEdit({
    label: `${label} lesion #${lesion.id}`,
    change: ACTION_CHANGES[action] ? ACTION_CHANGES[action](extra) : null,
    lesionId: lesion.id,
    version: lesion.version,
    before: lesion,
    request: (version) => post(`/api/lesions/${lesion.id}/${action}`, { version, ...extra }),
  });
}

function confirmSelected() {
  const lesion = selectedLesion();
  if (lesion && lesion.flag !== null) return setMessage(`Lesion #${lesion.id} is flagged noisy: unflag it first (U).`);
  return lesionAction("confirm");
}

function setSelectedType(lesionType) {
  const lesion = selectedLesion();
  if (!lesion || lesion.current.lesion_type === lesionType) return;
  runEdit({
    label: `set the type of lesion #${lesion.id} to ${LESION_TYPES[lesionType] ?? lesionType}`,
    change: { lesion_type: lesionType },
    lesionId: lesion.id,
    version: lesion.version,
    before: lesion,
    request: (version) => put(`/api/lesions/${lesion.id}/geometry`, { version, lesion_type: lesionType }),
  });
}

function deleteSelected() {
  const lesion = selectedLesion();
  if (!lesion) return setMessage("Select an added lesion first.");
  if (lesion.origin === "csv") return setMessage("DL_info.csv lesions cannot be deleted; flag them as noisy instead (F).");
  runEdit({
    label: `delete lesion #${lesion.id}`,
    change: { review: "deleted" },
    lesionId: lesion.id,
    version: lesion.version,
    before: lesion,
    request: (version) => del(`/api/lesions/${lesion.id}?version=${version}`),
    after: async () => {
      state.selected = null;
      drawOverlay();
    },
  });
  return undefined;
}

function predictionAction(accept, allowDuplicate = false) {
  const prediction = selectedPrediction();
  if (!prediction) return setMessage("Select a prediction first (click it, or Tab).");
  const type = parseInt($("new-type").value, 10);
  const body = accept && type !== -1 ? { lesion_type: type } : {};
  if (accept && allowDuplicate) body.allow_duplicate = true;
  runEdit({
    label: `${accept ? "accept" : "reject"} prediction #${prediction.id}`,
    change: { status: accept ? "accepted" : "rejected" },
    version: prediction.version,
    before: prediction,
    request: (version) => post(`/api/predictions/${prediction.id}/${accept ? "accept" : "reject"}`, { version, ...body }),
    // The server refuses to add a lesion twice; the reviewer decides.
    onDuplicate: (err) => {
      const again = window.confirm(
        `Prediction #${prediction.id} marks lesion #${err.body.lesion_id}, which is already there. Add a second lesion anyway?`);
      if (again) return predictionAction(true, true);
      setMessage(`Prediction #${prediction.id} not accepted: it marks lesion #${err.body.lesion_id}.`);
      drawOverlay();
      return undefined;
    },
    after: async (result) => {
      // Nothing is selected after a reject: a second key press must not reject the next prediction.
      state.selected = accept && result.lesion_id !== null ? { kind: "lesion", id: result.lesion_id } : null;
      updatePanels();
      drawOverlay();
    },
  });
  return undefined;
}

function flagSelected() {
  const lesion = selectedLesion();
  if (!lesion) return setMessage("Select a lesion first (click it, or Tab).");
  const dialog = $("flag-dialog");
  $("flag-form").reset();
  dialog.returnValue = "";
  dialog.onclose = () => {
    dialog.onclose = null;
    if (dialog.returnValue !== "ok") return;
    const form = $("flag-form");
    const reason = form.querySelector('input[name="reason"]:checked').value;
    lesionAction("flag", { reason, note: $("flag-text").value }, "flag");
  };
  dialog.showModal();
  return undefined;
}

async function setStatus(status) {
  if (!state.ks) return false;
  let ok = false;
  await runEdit({
    label: `mark ${STATUSES[status] ?? status}`,
    change: { status },
    version: state.ks.status_version,
    before: { status: state.ks.status, status_version: state.ks.status_version },
    request: (version) => put(ksPath("/status"), { status, version }),
    after: async () => {
      ok = true;
    },
  });
  return ok;
}

async function undoRedo(which) {
  try {
    const result = await post(ksPath(`/${which}`));
    const entry = result.entry;
    if (!entry) setMessage(which === "undo" ? "Nothing to undo." : "Nothing to redo.");
    else setMessage(which === "undo" ? "Undone." : "Redone.");
    root.dataset.undoCount = String(Number(root.dataset.undoCount || 0) + 1);
    if (result.key_slice) applyKeySlice(result.key_slice);
  } catch (err) {
    showError(`${which} failed: ${describeError(err)}`, () => undoRedo(which));
  }
}

async function predict() {
  const spinner = $("predict-spinner");
  const button = $("predict");
  spinner.hidden = false;
  predicting = true;
  button.disabled = true;
  $("predict-time").textContent = "running…";
  const t0 = performance.now();
  try {
    // Ask for everything above a low floor; the slider filters in the browser without a round trip.
    const result = await post(`${ksPath("/predict")}?threshold=0.05`);
    const elapsed = performance.now() - t0;
    const run = result.run;
    state.provider = run.provider;
    const found = result.key_slice.predictions.filter((p) => p.model_version === run.model_version).length;
    $("predict-time").textContent = `${found} found in ${Math.round(elapsed)} ms` +
      ` (model ${Math.round(run.elapsed_ms)} ms${run.cached ? ", cached" : ""}, ${run.provider || "?"})`;
    applyKeySlice(result.key_slice);
    showContextNotice(run.context_missing || []);
    if (!selectedPrediction()) selectNext(1, "prediction");
    root.dataset.predicted = "1";
  } catch (err) {
    if (err instanceof ApiError && err.code === "no_model") $("predict-time").textContent = "No detector loaded on the server.";
    else {
      $("predict-time").textContent = "failed";
      showError(`Predict failed: ${describeError(err)}`, predict);
    }
  } finally {
    spinner.hidden = true;
    predicting = false;
    updatePredictButton();
    updateReadouts();
  }
}

// The detector's 3-slice input repeats a nearer slice where a context slice is not stored: say so.
function showContextNotice(missing) {
  const el = $("predict-context");
  el.hidden = !missing.length;
  el.textContent = missing.length
    ? `Ran with repeated neighbours: context slice${missing.length > 1 ? "s" : ""} ${missing.join(", ")} ` +
      "not on disk, the nearest stored slice stood in."
    : "";
}

// Predict needs a detector and the key slice's image; without either the button says why instead of failing.
let predicting = false;
function updatePredictButton() {
  const button = $("predict");
  const h = window.__health;
  let why = "";
  if (state.ks && !state.ks.key_slice_stored) why = "The key slice's image is not on disk: nothing to run the detector on.";
  else if (h && h.detector && !h.detector.loaded) why = "No detector loaded (review mode).";
  button.disabled = predicting || !!why;
  button.title = why || (h && h.detector && h.detector.error) || "";
  if (why) $("predict-time").textContent = why;
}

// ---------------------------------------------------------------- queue navigation

async function gotoNeighbour(direction) {
  try {
    const n = await get(`${ksPath("/neighbours")}${location.search}`);
    const target = direction > 0 ? n.next : n.previous;
    if (!target) {
      setMessage(direction > 0 ? "End of the queue." : "Start of the queue.");
      return false;
    }
    location.assign(`/viewer/${encodeURIComponent(target)}${location.search}`);
    return true;
  } catch (err) {
    showError(`Could not find the ${direction > 0 ? "next" : "previous"} key slice: ${describeError(err)}`, () => gotoNeighbour(direction));
    return false;
  }
}

async function doneAndNext() {
  if (await setStatus("done")) {
    if (!(await gotoNeighbour(1))) location.assign(`/${location.search}`);
  }
}

// ---------------------------------------------------------------- panels and readouts

let messageTimer = null;
function setMessage(text) {
  const el = $("info-bl");
  el.textContent = text;
  clearTimeout(messageTimer);
  messageTimer = setTimeout(() => { el.textContent = ""; }, 4000);
}

// Position along the series relative to the key slice, from the slice interval (Spacing_mm_px_ z).
function slicePositionLabel() {
  const dz = state.ks && state.ks.spacing_mm ? state.ks.spacing_mm[2] : null;
  const rel = state.current - keyIndex;
  if (!dz) return rel === 0 ? "z 0" : `z ${rel > 0 ? "+" : ""}${rel} slices`;
  const mm = rel * dz;
  return `z ${mm > 0 ? "+" : ""}${mm.toFixed(1)} mm`;
}

// The longest round length that fits the bar's room: 5, 10, 20, 50 or 100 mm.
const SCALE_STEPS_MM = [5, 10, 20, 50, 100];
function scaleBar() {
  const sx = spacingX();
  if (!sx) return null;
  const pxPerMm = transform().s / sx;
  let mm = SCALE_STEPS_MM[0];
  for (const step of SCALE_STEPS_MM) if (step * pxPerMm <= 160) mm = step;
  return { mm, px: mm * pxPerMm };
}

function drawScaleBar(ctx) {
  const bar = scaleBar();
  if (!bar) return;
  const rect = viewport.getBoundingClientRect();
  const x1 = rect.width / 2 + bar.px / 2;
  const x0 = x1 - bar.px;
  const y = rect.height - 14;
  ctx.save();
  ctx.strokeStyle = "#fff";
  ctx.fillStyle = "#fff";
  ctx.shadowColor = "rgba(0,0,0,0.9)";
  ctx.shadowBlur = 2;
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(x0, y - 5);
  ctx.lineTo(x0, y);
  ctx.lineTo(x1, y);
  ctx.lineTo(x1, y - 5);
  ctx.stroke();
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.fillText(`${bar.mm} mm`, (x0 + x1) / 2, y - 4);
  ctx.restore();
}

// While scrolling through the key slice's Slice_range, its lesions' boxes show faint and dashed on the
// neighbouring slices: where the lesion still is, as the dataset records it.
function extentLesions() {
  if (!state.ks || state.current === keyIndex) return [];
  const [first, last] = state.ks.slice_range || [keyIndex, keyIndex];
  if (state.current < first || state.current > last) return [];
  return state.ks.lesions.filter((l) => state.layers[layerOf(l)] && lesionSlice(l) === keyIndex);
}

function updateReadouts() {
  const { center, width } = state.window;
  $("sb-wl").textContent = `W ${Math.round(width)} / L ${Math.round(center)} (${state.windowName})${state.invert ? " inverted" : ""}`;
  const [first, last] = sliceRange();
  const rel = state.current - keyIndex;
  const z = slicePositionLabel();
  $("sb-slice").textContent = `slice ${state.current} [${first}–${last}]${rel === 0 ? " KEY" : ` (${rel > 0 ? "+" : ""}${rel}, ${z})`}`;
  const sp = state.ks && state.ks.spacing_mm;
  $("sb-spacing").textContent = sp ? `${sp[0]} × ${sp[1]} mm/px, ${sp[2]} mm slices` : "spacing unknown";
  $("sb-zoom").textContent = `zoom ${(transform().s).toFixed(2)}×`;
  const provider = state.provider || (window.__health && window.__health.detector && window.__health.detector.provider);
  $("sb-provider").textContent = provider ? `detector ${provider}` : "no detector";
  // "study N/M": which of the patient's studies this is (DeepLesion has no study date to show instead).
  const study = state.studyOf ? ` · study ${state.studyOf}` : "";
  $("info-tl").textContent = `${seriesFolder}${study} · ${state.current === keyIndex ? "KEY " : ""}slice ${state.current} · ${slicePositionLabel()}`;
  $("info-tr").textContent = `W ${Math.round(width)} L ${Math.round(center)}`;
  const shown = stats.shown;
  root.dataset.window = `${Math.round(center)},${Math.round(width)}`;
  if (shown) root.dataset.shownStatus = shown.status;
}

function updatePanels() {
  const ks = state.ks;
  if (!ks) return;
  const typeNames = [...new Set(ks.lesions.map((l) => LESION_TYPES[l.current.lesion_type]))].join(", ");
  $("ks-meta").textContent = `patient ${ks.patient_index} · study ${ks.study_index} · series ${ks.series_id} · ${ks.split} · ` +
    `${ks.gender || "?"} ${ks.age ?? "?"} y · ${ks.image_size[0]}×${ks.image_size[1]} · ${typeNames}`;
  $("status-text").textContent = STATUSES[ks.status] ?? ks.status;
  root.dataset.status = ks.status;

  const lesionList = $("lesion-list");
  lesionList.replaceChildren();
  for (const row of panelRows(ks)) lesionList.appendChild(panelItem(row));

  const predList = $("prediction-list");
  predList.replaceChildren();
  const preds = (ks.predictions || []).filter((p) => p.status === "pending");
  const shown = preds.filter((p) => p.score >= state.threshold);
  for (const p of shown) {
    const li = document.createElement("li");
    li.dataset.predictionId = String(p.id);
    li.className = `item${state.selected?.kind === "prediction" && state.selected.id === p.id ? " selected" : ""}`;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "item-button";
    button.setAttribute("aria-label", `Select prediction ${p.id}`);
    button.textContent = `AI #${p.id} score ${p.score.toFixed(2)} · ${lengthLabel(p.box[2] - p.box[0])} wide`;
    button.addEventListener("click", () => {
      setSlice(keyIndex);
      select({ kind: "prediction", id: p.id });
    });
    const sw = document.createElement("span");
    sw.className = "swatch sw-predicted";
    li.append(sw, button);
    predList.appendChild(li);
  }
  const hiddenCount = preds.length - shown.length;
  const decided = (ks.predictions || []).length - preds.length;
  if (hiddenCount || decided) {
    const li = document.createElement("li");
    li.className = "muted small";
    li.textContent = `${hiddenCount} below the threshold · ${decided} accepted or rejected`;
    predList.appendChild(li);
  }
  root.dataset.lesionCount = String(ks.lesions.length);
  root.dataset.pendingPredictions = String(preds.length);
  const lesion = selectedLesion();
  $("delete-lesion").disabled = !(lesion && lesion.origin !== "csv");
  $("measure-lesion").disabled = !(lesion && !lesion.current.recist);
  $("lesion-type").disabled = !lesion;
  if (lesion) $("lesion-type").value = String(lesion.current.lesion_type);
  // The server refuses to confirm a lesion flagged noisy (unflag first), so the button says so up front.
  $("confirm-lesion").disabled = !lesion || lesion.flag !== null;
  $("confirm-lesion").title = lesion && lesion.flag !== null ? "Flagged noisy: unflag it first (U)" : "";
  $("flag-lesion").disabled = !lesion;
  $("unflag-lesion").disabled = !(lesion && lesion.flag);
  $("accept-prediction").disabled = !selectedPrediction();
  $("reject-prediction").disabled = !selectedPrediction();
}

// ---------------------------------------------------------------- measurement panel (the key slice's lesions)

// One row per lesion, exactly the API's values: the panel shows them and the CSV download writes them.
const PANEL_COLUMNS = [
  "lesion_id", "slice", "type", "long_mm", "short_mm", "state", "flag_reason", "flag_note", "by", "at",
];

function lastChange(lesion) {
  const candidates = [
    lesion.updated_by ? { by: lesion.updated_by, at: lesion.updated_at } : null,
    lesion.flag && lesion.flag.by ? lesion.flag : null,
    lesion.confirmed,
    lesion.created,
  ].filter((c) => c && c.at);
  candidates.sort((a, b) => String(b.at).localeCompare(String(a.at)));
  return candidates[0] || { by: null, at: null };
}

function panelRows(ks) {
  return ks.lesions.map((lesion) => {
    const g = lesion.current;
    const d = g.diameters_mm;
    const who = lastChange(lesion);
    return {
      lesion,
      values: {
        lesion_id: lesion.id,
        slice: lesionSlice(lesion),
        type: LESION_TYPES[g.lesion_type] ?? String(g.lesion_type),
        long_mm: d ? d[0] : null,
        short_mm: d ? d[1] : null,
        state: REVIEW_STATES[lesion.review] ?? lesion.review,
        flag_reason: lesion.flag ? (ALL_FLAG_REASONS[lesion.flag.reason] ?? lesion.flag.reason) : "",
        flag_note: lesion.flag ? lesion.flag.note || "" : "",
        by: who.by || "",
        at: who.at || "",
      },
    };
  });
}

function panelItem({ lesion, values: v }) {
  const li = document.createElement("li");
  const layer = layerOf(lesion);
  li.dataset.lesionId = String(lesion.id);
  for (const key of PANEL_COLUMNS) li.dataset[key.replace(/_(.)/g, (_, c) => c.toUpperCase())] = v[key] ?? "";
  li.className = `item layer-${layer}${state.selected?.kind === "lesion" && state.selected.id === lesion.id ? " selected" : ""}`;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "item-button";
  button.setAttribute("aria-label", `Select lesion ${lesion.id}`);
  const size = v.long_mm === null ? diametersLabel(lesion.current) : `${v.long_mm.toFixed(1)} × ${v.short_mm.toFixed(1)} mm`;
  const line1 = document.createElement("span");
  line1.className = "panel-main";
  line1.textContent = `#${lesion.id} ${v.type} · ${size} · ${v.state}` +
    `${v.flag_reason ? ` · ⚑ ${v.flag_reason}${v.flag_note ? `: ${v.flag_note}` : ""}` : ""}` +
    `${v.slice !== keyIndex ? ` · slice ${v.slice}` : ""}${lesion.prediction ? ` · AI ${lesion.prediction.score?.toFixed(2) ?? ""}` : ""}`;
  const line2 = document.createElement("span");
  line2.className = "panel-who muted small";
  line2.textContent = v.by ? `${v.by} · ${new Date(v.at).toLocaleString()}` : "as imported";
  button.append(line1, line2);
  button.addEventListener("click", () => {
    if (v.slice !== state.current) setSlice(v.slice);
    select({ kind: "lesion", id: lesion.id });
    centreOn(lesion.current);
  });
  const sw = document.createElement("span");
  sw.className = `swatch sw-${layer}`;
  li.append(sw, button);
  return li;
}

// Pans (zoom unchanged) so that the mark's box centre is in the middle of the viewport, when the mark is not
// wholly in view already: a mark the reader can see stays where it is.
function centreOn(g) {
  const b = g.box;
  const rect = viewport.getBoundingClientRect();
  const inView = boxCorners(b).every((c) => {
    const p = toScreen(c.x, c.y);
    return p.x >= 0 && p.y >= 0 && p.x <= rect.width && p.y <= rect.height;
  });
  if (inView) return;
  pinImagePoint({ x: (b[0] + b[2]) / 2, y: (b[1] + b[3]) / 2 }, rect.left + rect.width / 2, rect.top + rect.height / 2);
  applyTransform();
}

function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

// The panel's rows as CSV, made in the browser: what the reader sees is what the file holds.
function downloadPanelCsv() {
  if (!state.ks) return;
  const lines = [["file_name", ...PANEL_COLUMNS].join(",")];
  for (const { values } of panelRows(state.ks)) lines.push([fileName, ...PANEL_COLUMNS.map((k) => values[k])].map(csvCell).join(","));
  const blob = new Blob([`${lines.join("\n")}\n`], { type: "text/csv" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${fileName.slice(0, -4)}_marks.csv`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

// The key slice's audit trail, newest first: who did what to which lesion, and when.
async function showHistory() {
  const dialog = $("history-dialog");
  const body = $("history-rows");
  body.replaceChildren();
  try {
    const entries = await get(ksPath("/history"));
    for (const e of [...entries].reverse()) {
      const tr = document.createElement("tr");
      tr.dataset.entryId = String(e.id);
      for (const text of [e.at ? new Date(e.at).toLocaleString() : "–", e.user || "–", e.action.replace(/_/g, " "),
        e.lesion_id !== null ? `#${e.lesion_id}` : e.prediction_id !== null ? `AI #${e.prediction_id}` : "key slice"]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    $("history-empty").hidden = entries.length > 0;
    dialog.showModal();
  } catch (err) {
    showError(`Could not load the history: ${describeError(err)}`, showHistory);
  }
}

function select(selection) {
  state.selected = selection;
  updatePanels();
  drawOverlay();
}

// Tab order over marks on the key slice: lesions, then predictions above the threshold.
function selectNext(step, onlyKind = null) {
  const items = [];
  if (!onlyKind || onlyKind === "lesion") for (const l of visibleLesions()) items.push({ kind: "lesion", id: l.id });
  // Predictions on an already marked lesion come last, so the one selected for Enter is a new finding.
  const predictions = visiblePredictions();
  const ordered = [...predictions.filter((p) => !p.matches_annotation), ...predictions.filter((p) => p.matches_annotation)];
  if (!onlyKind || onlyKind === "prediction") for (const p of ordered) items.push({ kind: "prediction", id: p.id });
  if (!items.length) {
    if (!onlyKind) select(null);
    return;
  }
  const at = state.selected ? items.findIndex((i) => i.kind === state.selected.kind && i.id === state.selected.id) : -1;
  const next = at < 0 ? (step > 0 ? 0 : items.length - 1) : (at + step + items.length) % items.length;
  select(items[next]);
}

// ---------------------------------------------------------------- view controls

function setWindow(center, width, name = "custom") {
  state.window = { center, width: Math.max(1, width) };
  state.windowName = name;
  requestRender();
}

function dicomWindow() {
  const w = state.ks && state.ks.dicom_window;
  if (!w || w[1] <= w[0]) return null;
  return { center: (w[0] + w[1]) / 2, width: w[1] - w[0] };
}

function applyPreset(key) {
  const p = PRESETS[key];
  if (!p) return;
  if (p === DICOM_PRESET) {
    const w = dicomWindow();
    if (w) setWindow(w.center, w.width, p.label);
    else setMessage("This slice has no DICOM window in the CSV.");
    return;
  }
  setWindow(p.center, p.width, p.label);
}

function setSlice(index) {
  const clamped = nearestListed(index);
  if (clamped === state.current) return;
  state.current = clamped;
  if (state.drawing) state.drawing = null;
  requestRender();
  schedulePrefetch();
}

// Moves `steps` places along the scroll path (stored slices only), stopping at its ends.
function stepSlice(steps) {
  const list = sliceList();
  const at = list.indexOf(state.current);
  const next = Math.max(0, Math.min(list.length - 1, (at < 0 ? list.indexOf(nearestListed(state.current)) : at) + steps));
  setSlice(list[next]);
}

// ---------------------------------------------------------------- cine

// Cine plays the stored slices of the series only (never an index between them, so nothing unstored is
// requested), looping, at the rate of #cine-fps (its min and max in the template are the allowed range).
// Frames are timed on animation frames, one slice at most per frame, so a busy machine slows cine down
// rather than skipping slices.
const cine = { raf: null, last: 0 };

function cineFps() {
  const input = $("cine-fps");
  const fps = parseInt(input.value, 10);
  return Math.max(parseInt(input.min, 10), Math.min(parseInt(input.max, 10), Number.isFinite(fps) ? fps : parseInt(input.min, 10)));
}

function cineFrame(now) {
  const period = 1000 / cineFps();
  if (now - cine.last >= period) {
    // Keeps the average rate, but never owes more than one frame after a stall.
    cine.last = Math.max(cine.last + period, now - period);
    const frames = state.ks.stored_slices;
    setSlice(frames[(frames.indexOf(state.current) + 1) % frames.length]);
  }
  cine.raf = requestAnimationFrame(cineFrame);
}

function startCine() {
  const frames = (state.ks && state.ks.stored_slices) || [];
  if (frames.length < 2) return setMessage("Cine needs at least two stored slices in this series.");
  if (state.tool !== "pointer") setTool("pointer");
  if (cine.raf === null) {
    cine.last = performance.now();
    cine.raf = requestAnimationFrame(cineFrame);
  }
  root.dataset.cine = "playing";
  $("cine").setAttribute("aria-pressed", "true");
  $("cine").textContent = "❚❚";
  return undefined;
}

function stopCine() {
  if (cine.raf === null) return false;
  cancelAnimationFrame(cine.raf);
  cine.raf = null;
  root.dataset.cine = "paused";
  $("cine").setAttribute("aria-pressed", "false");
  $("cine").textContent = "▶";
  return true;
}

function toggleCine() {
  if (cine.raf === null) startCine();
  else stopCine();
}

// The rate is read on every animation frame, so a new one applies at once while playing.
function setCineFps() {
  $("cine-fps-value").textContent = `${cineFps()} fps`;
}

function fitView() {
  state.zoom = 1;
  state.panX = 0;
  state.panY = 0;
  applyTransform();
}

function resetView() {
  state.zoom = 1;
  state.panX = 0;
  state.panY = 0;
  state.invert = false;
  $("invert").setAttribute("aria-pressed", "false");
  const w = dicomWindow();
  if (w) setWindow(w.center, w.width, DICOM_PRESET.label);
  else setWindow(DEFAULT_PRESET.center, DEFAULT_PRESET.width, DEFAULT_PRESET.label);
  applyTransform();
}

function toggleInvert() {
  state.invert = !state.invert;
  $("invert").setAttribute("aria-pressed", String(state.invert));
  requestRender();
}

// Measures the selected box-only lesion: the next RECIST drawing becomes its long and short axes.
function measureSelected() {
  const lesion = selectedLesion();
  if (!lesion || lesion.current.recist) return setMessage("Select a box-only lesion to measure it (M).");
  setTool("recist");
  state.measureTarget = lesion.id;
  setMessage(`Draw the long axis, then the short axis, of lesion #${lesion.id}.`);
  return undefined;
}

function setTool(tool) {
  // A drawing tool needs a still image: cine stops the moment one is taken.
  if (tool !== "pointer") stopCine();
  state.measureTarget = null;
  state.tool = tool;
  state.drawing = null;
  for (const b of document.querySelectorAll(".tool")) b.setAttribute("aria-pressed", String(b.dataset.tool === tool));
  viewport.dataset.tool = tool;
  drawOverlay();
}

// Pans so that image point `p` is drawn at client (clientX, clientY).
function pinImagePoint(p, clientX, clientY) {
  const after = toScreen(p.x, p.y);
  const rect = viewport.getBoundingClientRect();
  state.panX += clientX - rect.left - after.x;
  state.panY += clientY - rect.top - after.y;
}

function zoomAt(factor, clientX, clientY) {
  const before = toImage(clientX, clientY);
  state.zoom = Math.max(0.25, Math.min(16, state.zoom * factor));
  pinImagePoint(before, clientX, clientY);
  applyTransform();
}

function toggleSmooth() {
  state.smooth = !state.smooth;
  $("smooth").setAttribute("aria-pressed", String(state.smooth));
  applyTransform();
}

// ---------------------------------------------------------------- measurement tools (one object per tool)

let measureSeq = 0;

function shownEntry(index) {
  const entry = cache.get(index);
  return entry && entry.status === "ok" ? entry : null;
}

// A measurement's numbers on the slice it was made on (null while that slice is not decoded).
// Length in mm of an image-space segment (pixel spacing may differ in x and y).
function lengthMm(a, b) {
  const sp = state.ks && state.ks.spacing_mm;
  if (!sp) return null;
  return Math.hypot((b.x - a.x) * sp[0], (b.y - a.y) * sp[1]);
}

function measureValues(m) {
  if (m.kind === "length") return { mm: lengthMm(m.p1, m.p2), px: len(sub(m.p2, m.p1)) };
  if (m.kind === "arrow") return { text: m.text };
  const entry = shownEntry(m.slice);
  if (!entry) return null;
  if (m.kind === "probe") {
    const x = Math.floor(m.point.x);
    const y = Math.floor(m.point.y);
    if (x < 0 || y < 0 || x >= entry.w || y >= entry.h) return null;
    return { hu: entry.data[y * entry.w + x], x, y };
  }
  return roiStats(entry.data, entry.w, entry.h, m.kind, m.box, state.ks && state.ks.spacing_mm);
}

function measureLabel(m) {
  const v = measureValues(m);
  if (m.kind === "length") return v.mm === null ? `${v.px.toFixed(1)} px` : `${v.mm.toFixed(1)} mm`;
  if (m.kind === "arrow") return v.text;
  if (!v) return m.kind === "probe" ? "HU –" : "no pixels";
  if (m.kind === "probe") return `HU ${v.hu} at (${v.x}, ${v.y})`;
  const area = v.areaMm2 === null ? `${v.n} px` : `${v.areaMm2.toFixed(1)} mm²`;
  return `mean ${v.mean.toFixed(1)} SD ${v.sd.toFixed(1)} min ${v.min} max ${v.max} HU · ${area}`;
}

function addMeasure(m) {
  state.measures.push({ id: ++measureSeq, slice: state.current, ...m });
  updateMeasures();
  drawOverlay();
}

function roiTool(shape) {
  return {
    down(pos) { state.drawing = { kind: "roi", shape, p1: pos, p2: pos }; },
    move(pos) { if (state.drawing) state.drawing.p2 = pos; },
    up() {
      const d = state.drawing;
      state.drawing = null;
      if (!d) return;
      const box = normBox([d.p1.x, d.p1.y, d.p2.x, d.p2.y]);
      if (box[2] - box[0] < 1 || box[3] - box[1] < 1) { drawOverlay(); return; }
      addMeasure({ kind: shape, box });
    },
  };
}

// A segment tool (length, arrow): drag from p1 to p2. The arrow's head is at p1, where the drag began, and
// its text label at p2, as in OHIF.
function lineTool(kind) {
  return {
    down(pos) { state.drawing = { kind: "line", line: kind, p1: pos, p2: pos }; },
    move(pos) { if (state.drawing) state.drawing.p2 = pos; },
    up() {
      const d = state.drawing;
      state.drawing = null;
      if (!d || len(sub(d.p2, d.p1)) < 1) { drawOverlay(); return; }
      if (kind === "length") { addMeasure({ kind, p1: d.p1, p2: d.p2 }); return; }
      const text = window.prompt("Label for the arrow", "") ?? "";
      addMeasure({ kind, p1: d.p1, p2: d.p2, text: text.trim() });
    },
  };
}

const probeTool = {
  down() {},
  move() {},
  up(pos) { addMeasure({ kind: "probe", point: pos }); },
};

// Left-button tools that only measure; the drawing tools (RECIST, box) and W/L keep their own branches.
const MEASURE_TOOLS = {
  ellipse: roiTool("ellipse"), rectangle: roiTool("rectangle"), probe: probeTool, length: lineTool("length"), arrow: lineTool("arrow"),
};

function updateMeasures() {
  const list = $("measure-list");
  list.replaceChildren();
  for (const m of state.measures) {
    const li = document.createElement("li");
    li.className = "item";
    li.dataset.measureId = String(m.id);
    const v = measureValues(m);
    if (v && m.kind !== "probe") {
      li.dataset.mean = String(v.mean);
      li.dataset.sd = String(v.sd);
      li.dataset.min = String(v.min);
      li.dataset.max = String(v.max);
      li.dataset.n = String(v.n);
      li.dataset.area = String(v.areaMm2);
    }
    const text = document.createElement("span");
    text.textContent = `${m.kind} · slice ${m.slice} · ${measureLabel(m)}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", `Remove measurement ${m.id}`);
    remove.addEventListener("click", () => {
      state.measures = state.measures.filter((x) => x.id !== m.id);
      updateMeasures();
      drawOverlay();
    });
    li.append(text, remove);
    list.appendChild(li);
  }
  $("measures").hidden = !state.measures.length;
}

function drawMeasures(ctx) {
  for (const m of state.measures) {
    if (m.slice !== state.current) continue;
    ctx.save();
    ctx.strokeStyle = PALETTE.measure;
    ctx.lineWidth = 1.5;
    ctx.shadowColor = "rgba(0,0,0,0.9)";
    ctx.shadowBlur = 2;
    let anchor;
    if (m.kind === "length" || m.kind === "arrow") {
      strokeLine(ctx, m.line ?? m.kind, m.p1, m.p2);
      const b = toScreen(m.p2.x, m.p2.y);
      anchor = { x: b.x + 6, y: b.y + 4 };
    } else if (m.kind === "probe") {
      const p = toScreen(m.point.x, m.point.y);
      ctx.beginPath();
      ctx.arc(p.x, p.y, 4, 0, 2 * Math.PI);
      ctx.stroke();
      anchor = { x: p.x + 6, y: p.y - 6 };
    } else {
      strokeRoi(ctx, m.kind, m.box);
      const a = toScreen(m.box[0], m.box[1]);
      anchor = { x: a.x, y: a.y };
    }
    ctx.restore();
    drawGeometry(ctx, {}, PALETTE.measure, { label: measureLabel(m), anchor });
  }
}

function strokeLine(ctx, kind, p1, p2) {
  const a = toScreen(p1.x, p1.y);
  const b = toScreen(p2.x, p2.y);
  ctx.beginPath();
  ctx.moveTo(a.x, a.y);
  ctx.lineTo(b.x, b.y);
  const angle = Math.atan2(b.y - a.y, b.x - a.x);
  if (kind === "arrow") {
    for (const side of [-1, 1]) {
      ctx.moveTo(a.x, a.y);
      ctx.lineTo(a.x + 10 * Math.cos(angle + side * 0.45), a.y + 10 * Math.sin(angle + side * 0.45));
    }
  } else {
    for (const p of [a, b]) {
      ctx.moveTo(p.x - 4 * Math.sin(angle), p.y + 4 * Math.cos(angle));
      ctx.lineTo(p.x + 4 * Math.sin(angle), p.y - 4 * Math.cos(angle));
    }
  }
  ctx.stroke();
}

function strokeRoi(ctx, shape, box) {
  const a = toScreen(box[0], box[1]);
  const b = toScreen(box[2], box[3]);
  ctx.beginPath();
  if (shape === "rectangle") ctx.rect(a.x, a.y, b.x - a.x, b.y - a.y);
  else ctx.ellipse((a.x + b.x) / 2, (a.y + b.y) / 2, Math.abs(b.x - a.x) / 2, Math.abs(b.y - a.y) / 2, 0, 0, 2 * Math.PI);
  ctx.stroke();
}

// ---------------------------------------------------------------- mouse

viewport.addEventListener("contextmenu", (e) => e.preventDefault());

viewport.addEventListener("pointerdown", (e) => {
  viewport.focus({ preventScroll: true });
  const pos = toImage(e.clientX, e.clientY);
  const start = { x: e.clientX, y: e.clientY };
  viewport.setPointerCapture(e.pointerId);
  if (e.button === 2) {
    // Zoom about the point under the pointer, as Ctrl+wheel does, so the lesion stays where the reader looks.
    state.gesture = { kind: "zoom", start, zoom: state.zoom, anchor: pos };
  } else if (e.button === 1 || (e.button === 0 && e.shiftKey)) {
    e.preventDefault();
    state.gesture = { kind: "pan", start, panX: state.panX, panY: state.panY };
  } else if (e.button === 0 && state.tool === "recist") {
    if (state.drawing && state.drawing.phase === 2) {
      const d = state.drawing;
      const L = sub(d.p2, d.p1);
      const l = len(L) || 1;
      const u = { x: L.x / l, y: L.y / l };
      const n = { x: -u.y, y: u.x };
      const t = Math.max(0, Math.min(1, dot(sub(pos, d.p1), u) / l));
      const off = dot(sub(pos, d.p1), n);
      d.short = { t, d1: off, d2: off };
      d.shortDragging = true;
    } else {
      state.drawing = { kind: "recist", phase: 1, p1: pos, p2: pos };
    }
    state.gesture = { kind: "draw", start };
  } else if (e.button === 0 && MEASURE_TOOLS[state.tool]) {
    MEASURE_TOOLS[state.tool].down(pos);
    state.gesture = { kind: "measure", start, tool: MEASURE_TOOLS[state.tool] };
  } else if (e.button === 0 && state.tool === "box") {
    state.drawing = { kind: "box", p1: pos, p2: pos };
    state.gesture = { kind: "draw", start };
  } else if (e.button === 0) {
    const handle = handleAt(e.clientX, e.clientY);
    const hit = handle ? null : hitTest(e.clientX, e.clientY);
    const selected = selectedLesion();
    if (handle) {
      state.dragging = { lesionId: handle.lesion.id, index: handle.index, recist: handle.recist, start: handle.lesion.current, geometry: handle.lesion.current };
      state.gesture = { kind: "handle", start };
    } else if (hit && selected && hit.kind === "lesion" && hit.id === selected.id && lesionSlice(selected) === state.current) {
      // Dragging the selected mark's outline moves the whole mark (RECIST and box together).
      state.dragging = { lesionId: selected.id, whole: true, from: pos, start: selected.current, geometry: selected.current };
      state.gesture = { kind: "handle", start };
    } else {
      state.gesture = { kind: "wl", start, window: { ...state.window }, moved: false };
    }
  }
  drawOverlay();
});

viewport.addEventListener("pointermove", (e) => {
  const pos = toImage(e.clientX, e.clientY);
  lastPointer = { x: e.clientX, y: e.clientY };
  updateHu();
  const g = state.gesture;
  if (!g) {
    viewport.classList.toggle("over-handle", !!handleAt(e.clientX, e.clientY));
    return;
  }
  const dx = e.clientX - g.start.x;
  const dy = e.clientY - g.start.y;
  if (g.kind === "wl") {
    if (Math.abs(dx) + Math.abs(dy) > 2) g.moved = true;
    if (g.moved) setWindow(g.window.center + dy * HU_PER_PX, g.window.width + dx * HU_PER_PX, "custom");
  } else if (g.kind === "pan") {
    state.panX = g.panX + dx;
    state.panY = g.panY + dy;
    applyTransform();
  } else if (g.kind === "zoom") {
    state.zoom = Math.max(0.25, Math.min(16, g.zoom * Math.exp(-dy * 0.01)));
    pinImagePoint(g.anchor, g.start.x, g.start.y);
    applyTransform();
  } else if (g.kind === "draw" && state.drawing) {
    const d = state.drawing;
    if (d.kind === "box" || d.phase === 1) d.p2 = pos;
    else if (d.shortDragging) {
      const L = sub(d.p2, d.p1);
      const l = len(L) || 1;
      const n = { x: -L.y / l, y: L.x / l };
      d.short.d2 = dot(sub(pos, d.p1), n);
    }
    drawOverlay();
  } else if (g.kind === "handle" && state.dragging) {
    state.dragging.geometry = state.dragging.whole ? moveWhole(state.dragging, pos) : moveHandle(state.dragging, pos);
    drawOverlay();
  } else if (g.kind === "measure") {
    g.tool.move(pos);
    drawOverlay();
  }
});

function finishGesture(e) {
  const g = state.gesture;
  state.gesture = null;
  if (!g) return;
  if (g.kind === "measure") {
    g.tool.up(toImage(e.clientX, e.clientY));
  } else if (g.kind === "wl" && !g.moved) {
    const hit = hitTest(e.clientX, e.clientY);
    select(hit ? { kind: hit.kind, id: hit.id } : null);
  } else if (g.kind === "draw" && state.drawing) {
    finishDrawing();
  } else if (g.kind === "handle" && state.dragging) {
    const drag = state.dragging;
    state.dragging = null;
    const lesion = findLesion(drag.lesionId);
    const moved = JSON.stringify(drag.geometry) !== JSON.stringify(drag.start);
    if (lesion && moved) updateGeometry(lesion, drag.geometry);
    else drawOverlay();
  }
}

function finishDrawing() {
  const d = state.drawing;
  const minPx = 2;
  if (d.kind === "box") {
    const box = normBox([d.p1.x, d.p1.y, d.p2.x, d.p2.y]);
    state.drawing = null;
    if (box[2] - box[0] < minPx || box[3] - box[1] < minPx) return drawOverlay();
    addLesion({ box }, "add box");
    return undefined;
  }
  if (d.phase === 1) {
    if (len(sub(d.p2, d.p1)) < minPx) {
      state.drawing = null;
    } else {
      d.phase = 2;
      setMessage("Now drag across the lesion for the short axis (Esc cancels).");
    }
    return drawOverlay();
  }
  if (!d.shortDragging) return undefined;
  d.shortDragging = false;
  const shortLen = Math.abs(d.short.d2 - d.short.d1);
  if (shortLen < minPx) return drawOverlay();
  let pts = compose(d.p1, d.p2, d.short);
  // RECIST lists the longer axis first; swap when the user drew the short one longer.
  if (shortLen > len(sub(d.p2, d.p1))) pts = [pts[2], pts[3], pts[0], pts[1]];
  state.drawing = null;
  const target = state.measureTarget ? findLesion(state.measureTarget) : null;
  state.measureTarget = null;
  if (target && !target.current.recist && lesionSlice(target) === state.current) {
    // A box-only lesion (an accepted prediction, say) gets its RECIST measurement; it stays the same lesion.
    updateGeometry(target, { ...target.current, recist: pointsToRecist(pts), box: boxOfPoints(pts, BOX_PADDING_PX) });
    setTool("pointer");
    return undefined;
  }
  addLesion({ recist: pointsToRecist(pts) }, "add RECIST mark");
  return undefined;
}

viewport.addEventListener("pointerup", finishGesture);
viewport.addEventListener("pointercancel", () => {
  state.gesture = null;
  state.dragging = null;
  drawOverlay();
});
viewport.addEventListener("pointerleave", () => {
  lastPointer = null;
  updateHu();
});

// Trackpads send many small pixel deltas: add them up so one slice step needs a real notch's worth.
let wheelPixels = 0;
const WHEEL_STEP_PX = 50;
viewport.addEventListener("wheel", (e) => {
  e.preventDefault();
  lastPointer = { x: e.clientX, y: e.clientY };
  if (e.ctrlKey) {
    zoomAt(Math.exp(-e.deltaY * 0.002), e.clientX, e.clientY);
    return;
  }
  if (e.deltaMode !== 0 || Math.abs(e.deltaY) >= WHEEL_STEP_PX) {
    // A mouse notch (line mode, or about 100 px) is one slice, however the platform scales it.
    wheelPixels = 0;
    stepSlice(Math.sign(e.deltaY));
    return;
  }
  wheelPixels += e.deltaY;
  if (Math.abs(wheelPixels) < WHEEL_STEP_PX) return;
  const steps = Math.trunc(wheelPixels / WHEEL_STEP_PX);
  wheelPixels -= steps * WHEEL_STEP_PX;
  stepSlice(steps);
}, { passive: false });

function updateHu() {
  const el = $("sb-hu");
  const shown = stats.shown;
  // Only a slice that is on screen has a value; a missing, failed or still-loading slice has none.
  const entry = shown && shown.status === "ok" && shown.index === state.current ? cache.get(shown.index) : null;
  if (!lastPointer || !entry || entry.status !== "ok") {
    el.textContent = "HU –";
    delete root.dataset.hu;
    return;
  }
  const pos = toImage(lastPointer.x, lastPointer.y);
  const x = Math.floor(pos.x);
  const y = Math.floor(pos.y);
  if (x < 0 || y < 0 || x >= entry.w || y >= entry.h) {
    el.textContent = "HU –";
    delete root.dataset.hu;
    return;
  }
  const hu = entry.data[y * entry.w + x];
  el.textContent = `HU ${hu} at (${x}, ${y})`;
  root.dataset.hu = `${state.current},${x},${y},${hu}`;
}

// ---------------------------------------------------------------- keyboard

const toggleKeymap = wireKeymap();

function zoomCentre(factor) {
  const rect = viewport.getBoundingClientRect();
  zoomAt(factor, rect.left + rect.width / 2, rect.top + rect.height / 2);
}

function escape() {
  // As in OHIF, Esc cancels: cine first, then the drawing, the tool, the selection. It never decides anything.
  if (stopCine()) return;
  if (state.drawing) { state.drawing = null; drawOverlay(); }
  else if (state.tool !== "pointer") setTool("pointer");
  else select(null);
}

function deleteOrReject() {
  if (selectedPrediction()) predictionAction(false);
  else deleteSelected();
}

const fixedPresets = Object.values(PRESETS).filter((p) => p !== DICOM_PRESET);

// The one table of the viewer's keys and gestures: the keydown handler and the `?` dialog both read it.
// Where OHIF has the same action its default key is used (I invert, Space reset, + / - zoom, Esc cancel,
// 1-n presets).
const COMMANDS = [
  { label: "Left drag", what: "Window / level (horizontal = width, vertical = centre, 4 HU/px)" },
  { label: "Wheel / ↑ ↓", keys: ["ArrowUp", "ArrowDown"], what: "Previous / next stored slice",
    run: (e) => stepSlice(e.key === "ArrowUp" ? -1 : 1) },
  { label: "Home / End", keys: ["Home", "End"], what: "First / last stored slice",
    run: (e) => setSlice(sliceRange()[e.key === "Home" ? 0 : 1]) },
  { keys: ["K"], what: "Back to the key slice", run: () => setSlice(keyIndex) },
  // OHIF plays cine with C, which is Confirm here; L (loop) is free.
  { keys: ["L"], what: "Cine: play / pause the stored slices in a loop (OHIF's C is Confirm here; Esc or a drawing tool stops it)",
    run: toggleCine },
  { keys: ["[", "]"], label: "[ / ]", what: "Cine slower / faster (1 fps steps)",
    run: (e) => { $("cine-fps").stepUp(e.key === "]" ? 1 : -1); setCineFps(); } },
  { label: "Right drag / Ctrl+wheel / + -", keys: ["+", "-"], what: "Zoom about the pointer (+ / - about the centre)",
    run: (e) => zoomCentre(e.key === "-" ? 1 / 1.25 : 1.25) },
  { keys: ["="], what: "Fit the image to the viewport (zoom and pan only)", run: fitView },
  { label: "Middle drag / Shift+left drag", what: "Pan" },
  ...fixedPresets.map((p) => ({ keys: [p.key], label: p.key, run: () => applyPreset(p.key) })),
  { label: fixedPresets.map((p) => p.key).join(" "), what: `${fixedPresets.map((p) => p.label).join(", ")} windows` },
  { keys: [DICOM_PRESET.key], what: `The slice's ${DICOM_PRESET.label} window`, run: () => applyPreset(DICOM_PRESET.key) },
  { keys: ["I"], what: "Invert", run: toggleInvert },
  { keys: ["Space"], label: "Space", what: "Reset view", run: resetView },
  { keys: ["S"], what: "Smooth interpolation above 2x zoom (on / off)", run: toggleSmooth },
  { keys: ["R"], what: "RECIST tool (drawing takes the left button)", run: () => setTool("recist") },
  { keys: ["B"], what: "Box tool", run: () => setTool("box") },
  { keys: ["E"], what: "Ellipse ROI: mean, SD, min, max HU and area in mm²", run: () => setTool("ellipse") },
  { keys: ["G"], what: "Rectangle ROI: mean, SD, min, max HU and area in mm²", run: () => setTool("rectangle") },
  { keys: ["O"], what: "HU probe: pins the HU of a pixel", run: () => setTool("probe") },
  { keys: ["T"], what: "Length in mm (a measurement, not saved)", run: () => setTool("length") },
  { keys: ["A"], what: "Arrow with a text label (not saved)", run: () => setTool("arrow") },
  { keys: ["M"], what: "Measure the selected box-only lesion: draw its RECIST axes", run: measureSelected },
  { label: "Drag a selected mark", what: "Move the whole mark" },
  { keys: ["Escape"], label: "Esc", what: "Cancel the drawing / leave the tool / deselect (never rejects)", run: escape },
  { label: "Click a mark, drag a handle", what: "Select a mark and move its end points" },
  { keys: ["Tab", "Shift+Tab"], label: "Tab / Shift+Tab", what: "Select the next / previous mark or prediction",
    run: (e) => (e.target === document.body || e.target === viewport ? selectNext(e.shiftKey ? -1 : 1) : false) },
  { keys: ["C"], what: "Confirm the selected lesion", run: confirmSelected },
  { keys: ["F"], what: "Flag the selected lesion as noisy", run: flagSelected },
  { keys: ["U"], what: "Unflag", run: () => lesionAction("unflag") },
  { keys: ["Backspace", "Delete"], label: "Backspace / Delete", what: "Delete the selected added lesion / reject the selected prediction",
    run: deleteOrReject },
  { keys: ["Enter"], what: "Accept the selected prediction",
    run: () => (selectedPrediction() ? predictionAction(true) : false) },
  { keys: ["Ctrl+Z", "Ctrl+Y", "Ctrl+Shift+Z"], label: "Ctrl+Z / Ctrl+Y / Ctrl+Shift+Z", what: "Undo / redo / redo",
    run: (e) => undoRedo(e.key.toLowerCase() === "z" && !e.shiftKey ? "undo" : "redo") },
  { keys: ["D"], what: "Mark done and open the next key slice", run: doneAndNext },
  { keys: ["N", "P", "Ctrl+ArrowRight", "Ctrl+ArrowLeft"], label: "N / P, Ctrl+→ / Ctrl+←", what: "Next / previous key slice in the queue",
    run: (e) => gotoNeighbour(e.key === "n" || e.key === "N" || e.key === "ArrowRight" ? 1 : -1) },
  { keys: ["?"], what: "This key map", run: () => toggleKeymap() },
];
const KEYS = buildKeyIndex(COMMANDS);
renderKeymap(document.getElementById("keymap-rows"), COMMANDS);

document.addEventListener("keydown", (e) => {
  if (isTypingTarget(e.target) || document.querySelector("dialog[open]")) return;
  if (e.altKey) return;
  const command = KEYS.get(eventKeyId(e));
  if (!command) return;
  if (command.run(e) === false) return;
  e.preventDefault();
});

// ---------------------------------------------------------------- buttons

for (const b of document.querySelectorAll(".preset")) b.addEventListener("click", () => applyPreset(b.dataset.preset));
for (const b of document.querySelectorAll(".tool")) b.addEventListener("click", () => setTool(b.dataset.tool));
for (const cb of document.querySelectorAll("[data-layer]")) {
  cb.addEventListener("change", () => {
    state.layers[cb.dataset.layer] = cb.checked;
    drawOverlay();
  });
}
$("invert").addEventListener("click", toggleInvert);
$("cine").addEventListener("click", toggleCine);
$("cine-fps").addEventListener("input", setCineFps);
$("smooth").addEventListener("click", toggleSmooth);
$("reset").addEventListener("click", resetView);
$("undo").addEventListener("click", () => undoRedo("undo"));
$("redo").addEventListener("click", () => undoRedo("redo"));
$("help").addEventListener("click", toggleKeymap);
$("prev-key").addEventListener("click", () => gotoNeighbour(-1));
$("next-key").addEventListener("click", () => gotoNeighbour(1));
$("mark-done").addEventListener("click", doneAndNext);
$("mark-in-progress").addEventListener("click", () => setStatus("in_progress"));
$("confirm-lesion").addEventListener("click", () => confirmSelected());
$("flag-lesion").addEventListener("click", flagSelected);
$("unflag-lesion").addEventListener("click", () => lesionAction("unflag"));
$("delete-lesion").addEventListener("click", deleteSelected);
$("lesion-type").addEventListener("change", () => setSelectedType(parseInt($("lesion-type").value, 10)));
$("predict").addEventListener("click", predict);
$("download-csv").addEventListener("click", downloadPanelCsv);
$("measure-lesion").addEventListener("click", measureSelected);
$("show-history").addEventListener("click", showHistory);
$("history-close").addEventListener("click", () => $("history-dialog").close());
$("accept-prediction").addEventListener("click", () => predictionAction(true));
$("reject-prediction").addEventListener("click", () => predictionAction(false));
$("threshold").addEventListener("input", () => {
  state.threshold = parseFloat($("threshold").value);
  $("threshold-value").textContent = state.threshold.toFixed(2);
  if (selectedPrediction() && selectedPrediction().score < state.threshold) state.selected = null;
  updatePanels();
  drawOverlay();
});
$("back-to-list").href = `/${location.search}`;
new ResizeObserver(() => layout()).observe(viewport);

// ---------------------------------------------------------------- loading

function applyKeySlice(ks) {
  state.ks = ks;
  if (state.selected) {
    const still = state.selected.kind === "lesion" ? findLesion(state.selected.id) : findPrediction(state.selected.id);
    if (!still || (state.selected.kind === "prediction" && still.status !== "pending")) state.selected = null;
  }
  updatePanels();
  updatePredictButton();
  drawOverlay();
  updateReadouts();
}

async function reloadKeySlice() {
  try {
    applyKeySlice(await get(ksPath()));
  } catch (err) {
    showError(`Could not reload the key slice: ${describeError(err)}`, reloadKeySlice);
  }
}

async function start() {
  // The key slice's pixels are requested at once, in parallel with the sign-in and metadata checks.
  const firstSlice = loadSlice(keyIndex);
  const shell = initShell();
  let ks;
  try {
    ks = await get(ksPath());
  } catch (err) {
    const el = $("missing");
    el.hidden = false;
    el.textContent = err instanceof ApiError && err.status === 404 ? `Key slice ${fileName} is not in the database.` : describeError(err);
    if (!(err instanceof ApiError && err.status === 404)) showError(`Could not load the key slice: ${describeError(err)}`, () => location.reload());
    return;
  }
  state.ks = ks;
  const w = dicomWindow();
  if (w) { state.window = w; state.windowName = DICOM_PRESET.label; }
  const entry = await firstSlice;
  if (entry.status === "missing" || entry.status === "error") cache.set(keyIndex, entry);
  applyKeySlice(ks);
  layout();
  render();
  schedulePrefetch();
  root.dataset.ready = "1";
  loadThumbnails(ks);
  shell.then((h) => {
    window.__health = h;
    // Review mode without a model: the button says so instead of offering what can only fail.
    updatePredictButton();
    updateReadouts();
  });
}

// ---------------------------------------------------------------- the patient's other key slices

// Thumbnails of the patient's other key slices as the work list knows them (GET /api/key-slices?patient=),
// each the slice's PNG in its DICOM window scaled down by CSS, linking to its viewer. A key image that is
// not on disk gets a label, never a request.
async function loadThumbnails(ks) {
  const list = $("thumbs");
  let page;
  try {
    page = await get(`/api/key-slices?patient=${ks.patient_index}&sort=file_name&page_size=500`);
  } catch (err) {
    $("thumbs-note").textContent = `Could not list the patient's key slices: ${describeError(err)}`;
    return;
  }
  const items = page.items;
  const studies = [...new Set(items.map((i) => i.study_index))].sort((a, b) => a - b);
  // DL_info.csv numbers a patient's studies but gives no date: the order is all the data says.
  $("study-of").textContent = `study ${ks.study_index} of the patient's ${studies.length} in the work list` +
    " (DeepLesion has no study date)";
  state.studyOf = `${ks.study_index}/${studies.length}`;
  root.dataset.studyOf = state.studyOf;
  updateReadouts();
  const others = items.filter((i) => i.file_name !== fileName);
  list.replaceChildren();
  for (const item of others) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `/viewer/${encodeURIComponent(item.file_name)}${location.search}`;
    a.className = "thumb";
    a.dataset.fileName = item.file_name;
    a.title = `${item.file_name}: ${item.lesion_count} lesion(s), ${item.max_size_mm} mm`;
    if (item.image_on_disk === false) {
      const span = document.createElement("span");
      span.className = "thumb-missing";
      span.textContent = "not on disk";
      a.appendChild(span);
    } else {
      const img = document.createElement("img");
      img.loading = "lazy";
      img.alt = item.file_name;
      img.src = `/api/slices/${encodeURIComponent(item.file_name.slice(0, -4))}.png?preset=${encodeURIComponent(DICOM_PRESET.name)}`;
      a.appendChild(img);
    }
    const caption = document.createElement("span");
    caption.className = "thumb-caption small";
    caption.textContent = `study ${item.study_index}\nseries ${item.series_id} · ${item.key_slice_index}`;
    a.appendChild(caption);
    li.appendChild(a);
    list.appendChild(li);
  }
  $("thumbs-note").textContent = !others.length ? "No other key slice of this patient in the work list."
    : page.total > items.length ? `The first ${items.length} of the patient's ${page.total} key slices.` : "";
  root.dataset.thumbs = String(others.length);
}

// ---------------------------------------------------------------- hooks for the e2e tests and the benchmark

window.__viewer = {
  state,
  applyKeySlice,
  addOverlay(fn) { overlayHooks.push(fn); drawOverlay(); },
  redraw: () => drawOverlay(),
  stats,
  cache,
  keyIndex,
  imageToClient,
  setSlice,
  setWindow,
  measureValues,
  commands: COMMANDS,
  cineFps,
  scaleBar,
  loadSlice,
  pixelChecksum() {
    const d = imageCtx.getImageData(0, 0, imageCanvas.width, imageCanvas.height).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum = (sum + d[i] * ((i >> 2) % 251 + 1)) % 1e9;
    return sum;
  },
};

// The benchmark's helpers (bench/bench_browser.py) load only when a page asks with ?bench=1.
if (new URLSearchParams(location.search).has("bench")) {
  import("./viewer-bench.js").then(({ installBench }) => {
    installBench(window.__viewer, {
      render, windowInto, sliceList, huPerPx: HU_PER_PX,
      frame: () => ({ ctx: imageCtx, imageData }),
      clearPrefetch: () => { prefetchQueue = []; },
    });
    root.dataset.bench = "1";
  });
}

start();
