// Annotation state: the key slice's lesions and predictions as the server sent them, the selection, the mark
// being drawn, dragged or saved, and the reader's own measurements (browser only). Queries only, no drawing
// and no requests; other marks (a screening candidate, say) add their own kind here and a layer in overlay.js.
import { len, recistPoints, sub } from "../geometry.js";
import { roiStats } from "../roi.js";
import { ALL_FLAG_REASONS } from "../vocabulary.js";

export function createAnnotations({ state, keyIndex, decoded }) {
  let measureSeq = 0;

  const spacing = () => (state.ks && state.ks.spacing_mm) || null;

  function spacingX() {
    const s = spacing();
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

  // The server derives each lesion's layer (app/review/lesion_state.py); the viewer never re-decides it.
  const layerOf = (lesion) => lesion.layer;

  const flagLabel = (flag) => `${ALL_FLAG_REASONS[flag.reason] ?? flag.reason}${flag.note ? `: ${flag.note}` : ""}`;

  const lesionSlice = (lesion) => (lesion.current || {}).slice_index ?? keyIndex;

  function visibleLesions() {
    if (!state.ks) return [];
    return state.ks.lesions.filter((l) => state.layers[layerOf(l)] && lesionSlice(l) === state.current);
  }

  function visiblePredictions() {
    if (!state.ks || !state.layers.predicted || state.current !== keyIndex) return [];
    return (state.ks.predictions || []).filter((p) => p.status === "pending" && p.score >= state.threshold);
  }

  const findLesion = (id) => (state.ks ? state.ks.lesions.find((l) => l.id === id) : null);
  const findPrediction = (id) => (state.ks ? (state.ks.predictions || []).find((p) => p.id === id) : null);
  const selectedLesion = () => (state.selected && state.selected.kind === "lesion" ? findLesion(state.selected.id) : null);
  const selectedPrediction = () => (state.selected && state.selected.kind === "prediction" ? findPrediction(state.selected.id) : null);
  const isSelected = (kind, id) => !!state.selected && state.selected.kind === kind && state.selected.id === id;

  // Geometry being dragged or saved replaces the stored one on screen, so the user's edit never vanishes.
  function displayedGeometry(lesion) {
    if (state.dragging && state.dragging.lesionId === lesion.id) return state.dragging.geometry;
    if (state.pending && state.pending.lesionId === lesion.id && state.pending.geometry) return state.pending.geometry;
    return lesion.current;
  }

  // While scrolling through the key slice's Slice_range, its lesions' boxes show faint and dashed on the
  // neighbouring slices: where the lesion still is, as the dataset records it.
  function extentLesions() {
    if (!state.ks || state.current === keyIndex) return [];
    const [first, last] = state.ks.slice_range || [keyIndex, keyIndex];
    if (state.current < first || state.current > last) return [];
    return state.ks.lesions.filter((l) => state.layers[layerOf(l)] && lesionSlice(l) === keyIndex);
  }

  // A selection that no longer exists (or a prediction already decided) is dropped after new key-slice data.
  function pruneSelection() {
    if (!state.selected) return;
    const still = state.selected.kind === "lesion" ? findLesion(state.selected.id) : findPrediction(state.selected.id);
    if (!still || (state.selected.kind === "prediction" && still.status !== "pending")) state.selected = null;
  }

  // ------------------------------------------------ the reader's measurements: {id, kind, slice, box|point|p1,p2}

  // Length in mm of an image-space segment (pixel spacing may differ in x and y).
  function lengthMm(a, b) {
    const sp = spacing();
    if (!sp) return null;
    return Math.hypot((b.x - a.x) * sp[0], (b.y - a.y) * sp[1]);
  }

  // A measurement's numbers on the slice it was made on (null while that slice is not decoded).
  function measureValues(m) {
    if (m.kind === "length") return { mm: lengthMm(m.p1, m.p2), px: len(sub(m.p2, m.p1)) };
    if (m.kind === "arrow") return { text: m.text };
    const entry = decoded(m.slice);
    if (!entry) return null;
    if (m.kind === "probe") {
      const x = Math.floor(m.point.x);
      const y = Math.floor(m.point.y);
      if (x < 0 || y < 0 || x >= entry.w || y >= entry.h) return null;
      return { hu: entry.data[y * entry.w + x], x, y };
    }
    return roiStats(entry.data, entry.w, entry.h, m.kind, m.box, spacing());
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
  }

  function removeMeasure(id) {
    state.measures = state.measures.filter((x) => x.id !== id);
  }

  // The HU of the decoded pixel under image point `pos` on the current slice, or null.
  function huAt(pos) {
    const entry = decoded(state.current);
    if (!entry) return null;
    const x = Math.floor(pos.x);
    const y = Math.floor(pos.y);
    if (x < 0 || y < 0 || x >= entry.w || y >= entry.h) return null;
    return { hu: entry.data[y * entry.w + x], x, y };
  }

  return {
    spacingX, lengthLabel, diametersLabel, layerOf, flagLabel, lesionSlice, visibleLesions, visiblePredictions,
    findLesion, findPrediction, selectedLesion, selectedPrediction, isSelected, displayedGeometry, extentLesions,
    pruneSelection, lengthMm, measureValues, measureLabel, addMeasure, removeMeasure, huAt,
  };
}
