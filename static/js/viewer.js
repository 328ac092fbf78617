// Slice viewer: composes the stack viewport, slice cache, annotation state, overlay, tools, review edits,
// panels, cine and the command table (static/js/viewer/*) into one page. Only wiring lives here.
import { describeError, get, initShell, isTypingTarget, showError, ApiError, wireKeymap } from "./api.js";
import { buildKeyIndex, eventKeyId, renderKeymap } from "./keymap.js";
import { DEFAULT_PRESET, DICOM_PRESET, LAYERS } from "./vocabulary.js";
import { createAnnotations } from "./viewer/annotations.js";
import { createCine } from "./viewer/cine.js";
import { createControls } from "./viewer/controls.js";
import { viewerCommands } from "./viewer/commands.js";
import { createEdits } from "./viewer/edits.js";
import { createOverlay } from "./viewer/overlay.js";
import { createPanels } from "./viewer/panels.js";
import { createSliceCache } from "./viewer/slice-cache.js";
import { HU_PER_PX, createTools, wirePointer } from "./viewer/tools.js";
import { createViewport } from "./viewer/viewport.js";

const $ = (id) => document.getElementById(id);
const root = $("viewer");
const fileName = root.dataset.fileName;
const viewport = $("viewport");
const keyIndex = parseInt(fileName.slice(fileName.lastIndexOf("_") + 1, -4), 10);

const state = {
  ks: null,
  current: keyIndex,
  window: { center: DEFAULT_PRESET.center, width: DEFAULT_PRESET.width },
  windowName: DEFAULT_PRESET.label,
  invert: false,
  zoom: 1,
  panX: 0,
  panY: 0,
  rotation: 0, // quarter turns clockwise
  flipH: false,
  flipV: false,
  tool: "pointer",
  selected: null, // {kind: "lesion"|"prediction", id}
  layers: Object.fromEntries(Object.keys(LAYERS).map((layer) => [layer, true])),
  threshold: 0.5,
  smooth: false,
  // "N/M": the key slice's study among the patient's studies in the work list (set once they are listed).
  studyOf: null,
  // The reader's own measurements, kept in the browser only: {id, kind, slice, box|point|p1,p2}.
  measures: [],
  measureTarget: null,
  drawing: null,
  dragging: null,
  pending: null,
  provider: null,
  // ?prefetch=0 turns neighbour prefetching off: the benchmark's cold baseline.
  prefetch: new URLSearchParams(location.search).get("prefetch") !== "0",
};

const stats = { renders: 0, renderTimes: [], blankFrames: 0, firstImageMs: null, shown: null /* {index, status} */ };

// The pointer's last client position over the viewport (null when outside): the HU readout is recomputed
// from it on every frame, so scrolling or zooming under a still pointer never leaves a stale number.
let lastPointer = null;

// `app` is what every part is handed: the page's facts, the shared state and the other parts.
const app = {
  $, root, viewport, fileName, keyIndex, state, stats,
  seriesFolder: fileName.slice(0, fileName.lastIndexOf("_")),
  // The page knows from the database whether the key slice's image is on disk; no request is made when not.
  keyStored: root.dataset.keyStored !== "false",
};

app.slices = createSliceCache({
  ...app, onLoaded: (index) => { if (index === state.current) requestRender(); },
});
app.marks = createAnnotations({ state, keyIndex, decoded: app.slices.decoded });
app.view = createViewport({
  viewport, state, imageCanvas: $("image-canvas"), overlayCanvas: $("overlay-canvas"),
  labels: { left: $("orient-l"), right: $("orient-r"), top: $("orient-t"), bottom: $("orient-b") },
  onChange: () => { redraw(); app.panels.updateReadouts(); updateHu(); },
});
app.overlay = createOverlay({ ...app, canvas: $("overlay-canvas") });
app.panels = createPanels(app);
app.edits = createEdits(app);
app.cine = createCine({
  state, root, button: $("cine"), fpsInput: $("cine-fps"), fpsOutput: $("cine-fps-value"),
  setSlice: (i) => setSlice(i), setMessage: (t) => app.panels.setMessage(t),
  beforeStart: () => { if (state.tool !== "pointer") app.setTool("pointer"); },
});
Object.assign(app, {
  redraw, setSlice, stepSlice, applyKeySlice,
  setMessage: (text) => app.panels.setMessage(text),
  updatePanels: () => app.panels.updatePanels(),
  updateReadouts: () => app.panels.updateReadouts(),
  addMeasure(m) {
    app.marks.addMeasure(m);
    app.panels.updateMeasures();
    redraw();
  },
  toggleKeymap: wireKeymap(),
});
Object.assign(app, createControls(app, requestRender));
app.tools = createTools(app);
const { setWindow, applyPreset, setTool, measureSelected, resetView, toggleInvert, toggleSmooth, dicomWindow } = app;

function redraw() {
  app.overlay.draw();
}

// ---------------------------------------------------------------- the frame

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
  const entry = app.slices.cache.get(index);
  const t0 = performance.now();
  $("missing").hidden = true;
  $("loading").hidden = true;
  const placeholder = (text) => {
    const [w, h] = (state.ks && state.ks.image_size) || [512, 512];
    app.view.drawPlaceholder(w, h);
    $("missing").textContent = text;
    $("missing").hidden = false;
  };
  if (!entry) {
    // Keep the previous frame on screen rather than flashing an empty canvas.
    stats.blankFrames++;
    $("loading").hidden = false;
    app.slices.loadSlice(index);
    stats.shown = { index, status: "loading" };
  } else if (entry.status === "ok") {
    app.view.drawSlice(entry);
    stats.shown = { index, status: "ok" };
    if (stats.firstImageMs === null && index === keyIndex) {
      stats.firstImageMs = performance.now();
      root.dataset.firstImage = "1";
    }
  } else if (entry.status === "missing") {
    placeholder(`${index === keyIndex ? "key " : ""}slice ${index} missing on disk`);
    stats.shown = { index, status: "missing" };
  } else {
    placeholder(`slice ${index}: ${entry.error}`);
    stats.shown = { index, status: "error" };
  }
  stats.renders++;
  stats.renderTimes.push(performance.now() - t0);
  if (stats.renderTimes.length > 1000) stats.renderTimes.shift();
  root.dataset.renders = String(stats.renders);
  root.dataset.shownSlice = String(index);
  redraw();
  app.panels.updateReadouts();
  updateHu();
  if (state.measures.length) app.panels.updateMeasures();
}

// Only a slice that is on screen has a value; a missing, failed or still-loading slice has none.
function updateHu() {
  const el = $("sb-hu");
  const shown = stats.shown;
  const onScreen = lastPointer && shown && shown.status === "ok" && shown.index === state.current;
  const at = onScreen ? app.marks.huAt(app.view.toImage(lastPointer.x, lastPointer.y)) : null;
  if (!at) {
    el.textContent = "HU –";
    delete root.dataset.hu;
    return;
  }
  el.textContent = `HU ${at.hu} at (${at.x}, ${at.y})`;
  root.dataset.hu = `${state.current},${at.x},${at.y},${at.hu}`;
}

// ---------------------------------------------------------------- navigation along the stored slices

function setSlice(index) {
  const clamped = app.slices.nearestListed(index);
  if (clamped === state.current) return;
  state.current = clamped;
  if (state.drawing) state.drawing = null;
  requestRender();
  app.slices.schedulePrefetch(state.current);
}

// Moves `steps` places along the scroll path (stored slices only), stopping at its ends.
function stepSlice(steps) {
  const list = app.slices.sliceList();
  const at = list.indexOf(state.current);
  const next = Math.max(0, Math.min(list.length - 1, (at < 0 ? list.indexOf(app.slices.nearestListed(state.current)) : at) + steps));
  setSlice(list[next]);
}

// ---------------------------------------------------------------- input

wirePointer(viewport, {
  tools: app.tools,
  activeTool: () => state.tool,
  toImage: app.view.toImage,
  afterDown: redraw,
  onHover(p, idle) {
    lastPointer = { x: p.x, y: p.y };
    updateHu();
    if (idle) viewport.classList.toggle("over-handle", !!app.overlay.handleAt(p.x, p.y));
  },
  onCancel() {
    state.dragging = null;
    redraw();
  },
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
    app.view.zoomAt(Math.exp(-e.deltaY * 0.002), e.clientX, e.clientY);
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

const COMMANDS = viewerCommands(app);
const KEYS = buildKeyIndex(COMMANDS);
renderKeymap($("keymap-rows"), COMMANDS);

document.addEventListener("keydown", (e) => {
  if (isTypingTarget(e.target) || document.querySelector("dialog[open]")) return;
  if (e.altKey) return;
  const command = KEYS.get(eventKeyId(e));
  if (!command) return;
  if (command.run(e) === false) return;
  e.preventDefault();
});

const { edits } = app;
const clicks = {
  invert: toggleInvert, cine: () => app.cine.toggle(), smooth: toggleSmooth, reset: resetView,
  "rotate-right": () => app.view.rotate(1), "rotate-left": () => app.view.rotate(-1),
  "flip-h": () => app.view.flip("flipH"), "flip-v": () => app.view.flip("flipV"),
  undo: () => edits.undoRedo("undo"), redo: () => edits.undoRedo("redo"), help: () => app.toggleKeymap(),
  "prev-key": () => edits.gotoNeighbour(-1), "next-key": () => edits.gotoNeighbour(1), "mark-done": edits.doneAndNext,
  "mark-in-progress": () => edits.setStatus("in_progress"), "confirm-lesion": () => edits.confirmSelected(),
  "flag-lesion": edits.flagSelected, "unflag-lesion": () => edits.lesionAction("unflag"),
  "delete-lesion": edits.deleteSelected, predict: edits.predict, "download-csv": app.panels.downloadPanelCsv,
  "measure-lesion": measureSelected, "show-history": app.panels.showHistory,
  "history-close": () => $("history-dialog").close(),
  "accept-prediction": () => edits.predictionAction(true), "reject-prediction": () => edits.predictionAction(false),
};
for (const [id, handler] of Object.entries(clicks)) $(id).addEventListener("click", () => handler());
for (const b of document.querySelectorAll(".preset")) b.addEventListener("click", () => applyPreset(b.dataset.preset));
for (const b of document.querySelectorAll(".tool")) b.addEventListener("click", () => setTool(b.dataset.tool));
for (const cb of document.querySelectorAll("[data-layer]")) {
  cb.addEventListener("change", () => {
    state.layers[cb.dataset.layer] = cb.checked;
    redraw();
  });
}
$("cine-fps").addEventListener("input", () => app.cine.showFps());
$("lesion-type").addEventListener("change", () => edits.setSelectedType(parseInt($("lesion-type").value, 10)));
$("threshold").addEventListener("input", () => {
  state.threshold = parseFloat($("threshold").value);
  $("threshold-value").textContent = state.threshold.toFixed(2);
  const prediction = app.marks.selectedPrediction();
  if (prediction && prediction.score < state.threshold) state.selected = null;
  app.panels.updatePanels();
  redraw();
});
$("back-to-list").href = `/${location.search}`;
new ResizeObserver(() => app.view.layout()).observe(viewport);

// ---------------------------------------------------------------- loading

// Features in their own modules (candidate.js) follow every key slice a write, undo or redo answers.
const keySliceListeners = [];

function applyKeySlice(ks) {
  state.ks = ks;
  app.marks.pruneSelection();
  app.panels.updatePanels();
  edits.updatePredictButton();
  redraw();
  app.panels.updateReadouts();
  for (const fn of keySliceListeners) fn(ks);
}

async function start() {
  // The key slice's pixels are requested at once, in parallel with the sign-in and metadata checks.
  const firstSlice = app.slices.loadSlice(keyIndex);
  const shell = initShell();
  let ks;
  try {
    ks = await get(edits.ksPath());
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
  if (entry.status === "missing" || entry.status === "error") app.slices.cache.set(keyIndex, entry);
  applyKeySlice(ks);
  app.view.layout();
  render();
  app.slices.schedulePrefetch(state.current);
  root.dataset.ready = "1";
  app.panels.loadThumbnails(ks);
  shell.then((h) => {
    window.__health = h;
    // Review mode without a model: the button says so instead of offering what can only fail.
    edits.updatePredictButton();
    app.panels.updateReadouts();
  });
}

// ---------------------------------------------------------------- hooks for the e2e tests and the benchmark

window.__viewer = {
  state,
  stats,
  cache: app.slices.cache,
  keyIndex,
  imageToClient: app.view.imageToClient,
  clientToImage: app.view.toImage,
  setSlice,
  setWindow,
  // For features that live in their own module (candidate.js): apply a write's key slice, draw on top, redraw.
  applyKeySlice,
  onKeySlice(fn) {
    keySliceListeners.push(fn);
  },
  addOverlay(fn) {
    app.overlay.addLayer((ctx, helpers) => fn(ctx, { ...helpers, current: state.current }));
    redraw();
  },
  redraw,
  measureValues: app.marks.measureValues,
  commands: COMMANDS,
  cineFps: app.cine.fps,
  scaleBar: app.overlay.scaleBar,
  loadSlice: app.slices.loadSlice,
  pixelChecksum: app.view.pixelChecksum,
};

// The benchmark's helpers (bench/bench_browser.py) load only when a page asks with ?bench=1.
if (new URLSearchParams(location.search).has("bench")) {
  import("./viewer-bench.js").then(({ installBench }) => {
    installBench(window.__viewer, {
      render, windowInto: app.view.windowInto, sliceList: app.slices.sliceList, huPerPx: HU_PER_PX,
      frame: app.view.frame, clearPrefetch: app.slices.clearPrefetch,
    });
    root.dataset.bench = "1";
  });
}

start();
