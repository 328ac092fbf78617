// The reader's controls of the view and the marks: window and presets, invert, smoothing, fit and reset, the
// active tool, the selection and Esc. Called by the command table, the toolbar and the tools.
import { DEFAULT_PRESET, DICOM_PRESET, PRESETS } from "../vocabulary.js";

// `app`: state, $, viewport, view, marks, panels, cine, redraw, setMessage; `requestRender` redraws the frame.
export function createControls(app, requestRender) {
  const { state, $, viewport } = app;
  const redraw = () => app.redraw();

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
      else app.setMessage("This slice has no DICOM window in the CSV.");
      return;
    }
    setWindow(p.center, p.width, p.label);
  }

  function fitView() {
    Object.assign(state, { zoom: 1, panX: 0, panY: 0 });
    app.view.apply();
  }

  function resetView() {
    Object.assign(state, { zoom: 1, panX: 0, panY: 0, rotation: 0, flipH: false, flipV: false, invert: false });
    $("invert").setAttribute("aria-pressed", "false");
    const w = dicomWindow();
    if (w) setWindow(w.center, w.width, DICOM_PRESET.label);
    else setWindow(DEFAULT_PRESET.center, DEFAULT_PRESET.width, DEFAULT_PRESET.label);
    app.view.apply();
  }

  function toggleInvert() {
    state.invert = !state.invert;
    $("invert").setAttribute("aria-pressed", String(state.invert));
    requestRender();
  }

  function toggleSmooth() {
    state.smooth = !state.smooth;
    $("smooth").setAttribute("aria-pressed", String(state.smooth));
    app.view.apply();
  }

  function zoomCentre(factor) {
    const rect = viewport.getBoundingClientRect();
    app.view.zoomAt(factor, rect.left + rect.width / 2, rect.top + rect.height / 2);
  }

  // ---------------------------------------------------------------- tools and selection

  function setTool(tool) {
    // A drawing tool needs a still image: cine stops the moment one is taken.
    if (tool !== "pointer") app.cine.stop();
    state.measureTarget = null;
    state.tool = tool;
    state.drawing = null;
    for (const b of document.querySelectorAll(".tool")) b.setAttribute("aria-pressed", String(b.dataset.tool === tool));
    viewport.dataset.tool = tool;
    redraw();
  }

  // Measures the selected box-only lesion: the next RECIST drawing becomes its long and short axes.
  function measureSelected() {
    const lesion = app.marks.selectedLesion();
    if (!lesion || lesion.current.recist) return app.setMessage("Select a box-only lesion to measure it (M).");
    setTool("recist");
    state.measureTarget = lesion.id;
    app.setMessage(`Draw the long axis, then the short axis, of lesion #${lesion.id}.`);
    return undefined;
  }

  function select(selection) {
    state.selected = selection;
    app.panels.updatePanels();
    redraw();
  }

  // Tab order over marks on the key slice: lesions, then predictions above the threshold.
  function selectNext(step, onlyKind = null) {
    const items = [];
    if (!onlyKind || onlyKind === "lesion") for (const l of app.marks.visibleLesions()) items.push({ kind: "lesion", id: l.id });
    // Predictions on an already marked lesion come last, so the one selected for Enter is a new finding.
    const predictions = app.marks.visiblePredictions();
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

  function escape() {
    // As in OHIF, Esc cancels: cine first, then the drawing, the tool, the selection. It never decides anything.
    if (app.cine.stop()) return;
    if (state.drawing) { state.drawing = null; redraw(); }
    else if (state.tool !== "pointer") setTool("pointer");
    else select(null);
  }

  return {
    setWindow, dicomWindow, applyPreset, fitView, resetView, toggleInvert, toggleSmooth, zoomCentre, setTool,
    measureSelected, select, selectNext, escape,
  };
}
