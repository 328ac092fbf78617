// The overlay canvas: marks, predictions, extents, measurements, the scale bar and the drawing in progress,
// all in screen pixels through the viewport's mapping (so they follow zoom, pan, rotation and flips); and
// hit testing of the same shapes. `addLayer(draw)` lets another feature draw its own marks on top.
import { boxCorners, compose, len, normBox, pointsToRecist, recistPoints, segmentDistance, sub } from "../geometry.js";
import { LESION_TYPES, PALETTE } from "../vocabulary.js";

const HANDLE_PX = 8;
// The longest round length that fits the bar's room: 5, 10, 20, 50 or 100 mm.
const SCALE_STEPS_MM = [5, 10, 20, 50, 100];

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

// The screen rectangle of an image box, whatever the rotation: {x0, y0, x1, y1} with x0 <= x1, y0 <= y1.
function screenRect(toScreen, box) {
  const a = toScreen(box[0], box[1]);
  const b = toScreen(box[2], box[3]);
  return { x0: Math.min(a.x, b.x), y0: Math.min(a.y, b.y), x1: Math.max(a.x, b.x), y1: Math.max(a.y, b.y) };
}

export function createOverlay({ canvas, viewport, root, state, keyIndex, marks, view }) {
  const overlayCtx = canvas.getContext("2d");
  const layers = [];
  let placedLabels = [];
  const { toScreen } = view;

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
      const r = screenRect(toScreen, g.box);
      ctx.lineWidth = 1 + widthBoost;
      ctx.strokeRect(r.x0, r.y0, r.x1 - r.x0, r.y1 - r.y0);
      anchor = labelBelow ? { x: r.x0, y: r.y1 + 17 } : { x: r.x0, y: r.y0 };
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
    const r = screenRect(toScreen, box);
    ctx.beginPath();
    if (shape === "rectangle") ctx.rect(r.x0, r.y0, r.x1 - r.x0, r.y1 - r.y0);
    else ctx.ellipse((r.x0 + r.x1) / 2, (r.y0 + r.y1) / 2, (r.x1 - r.x0) / 2, (r.y1 - r.y0) / 2, 0, 0, 2 * Math.PI);
    ctx.stroke();
  }

  function drawInProgress(ctx, d) {
    if (d.kind === "line" || d.kind === "roi") {
      ctx.save();
      ctx.strokeStyle = PALETTE.measure;
      ctx.setLineDash([6, 4]);
      if (d.kind === "line") strokeLine(ctx, d.line, d.p1, d.p2);
      else strokeRoi(ctx, d.shape, normBox([d.p1.x, d.p1.y, d.p2.x, d.p2.y]));
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
      ctx.fillText(`long ${marks.lengthLabel(long)}${d.phase === 1 ? "" : " — now drag across for the short axis"}`, b.x + 8, b.y);
      ctx.restore();
      return;
    }
    const pts = compose(d.p1, d.p2, d.short);
    drawGeometry(ctx, { recist: pointsToRecist(pts) }, PALETTE.added, {
      dashed: true, label: `${marks.lengthLabel(long)} × ${marks.lengthLabel(Math.abs(d.short.d2 - d.short.d1))}`,
    });
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
        strokeLine(ctx, m.kind, m.p1, m.p2);
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
        const r = screenRect(toScreen, m.box);
        anchor = { x: r.x0, y: r.y0 };
      }
      ctx.restore();
      drawGeometry(ctx, {}, PALETTE.measure, { label: marks.measureLabel(m), anchor });
    }
  }

  function scaleBar() {
    const sx = marks.spacingX();
    if (!sx) return null;
    const pxPerMm = view.scale() / sx;
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

  function draw() {
    placedLabels = [];
    const dpr = window.devicePixelRatio || 1;
    const ctx = overlayCtx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    if (!state.ks) return;
    for (const lesion of marks.visibleLesions()) {
      const layer = marks.layerOf(lesion);
      const selected = marks.isSelected("lesion", lesion.id);
      if (layer === "corrected" && lesion.original && state.layers.original) {
        drawGeometry(ctx, lesion.original, PALETTE.original, { dashed: true, faint: true });
      }
      const g = marks.displayedGeometry(lesion);
      const flagged = lesion.flag !== null;
      const label = [
        `#${lesion.id} ${LESION_TYPES[g.lesion_type] ?? g.lesion_type}`,
        marks.diametersLabel(g),
        flagged ? `⚑ noisy (${marks.flagLabel(lesion.flag)})` : "",
        lesion.confirmed && !flagged ? "✓" : "",
      ].filter(Boolean).join(" · ");
      drawGeometry(ctx, g, PALETTE[layer], { dashed: flagged, selected, label, handles: selected });
    }
    for (const prediction of marks.visiblePredictions()) {
      const selected = marks.isSelected("prediction", prediction.id);
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
    const extent = marks.extentLesions();
    const rel = state.current - keyIndex;
    for (const lesion of extent) {
      drawGeometry(ctx, { box: lesion.current.box }, PALETTE[marks.layerOf(lesion)], {
        dashed: true, faint: true, label: `#${lesion.id} extent (key ${rel > 0 ? "+" : ""}${rel})`,
      });
    }
    root.dataset.extent = extent.map((l) => l.id).join(",");
    for (const layer of layers) layer(ctx, { toScreen, drawGeometry });
    drawMeasures(ctx);
    drawScaleBar(ctx);
    if (state.drawing) drawInProgress(ctx, state.drawing);
  }

  function boxDistance(m, box) {
    const c = boxCorners(box).map((q) => toScreen(q.x, q.y));
    const r = screenRect(toScreen, box);
    const inside = m.x >= r.x0 && m.x <= r.x1 && m.y >= r.y0 && m.y <= r.y1;
    const edge = Math.min(...[0, 1, 2, 3].map((i) => segmentDistance(m, c[i], c[(i + 1) % 4])));
    return inside ? Math.min(edge, 5.5) : edge;
  }

  function local(clientX, clientY) {
    const rect = viewport.getBoundingClientRect();
    return { x: clientX - rect.left, y: clientY - rect.top };
  }

  // Nearest visible mark under the pointer, in screen pixels; lesions win over predictions.
  function hitTest(clientX, clientY) {
    const m = local(clientX, clientY);
    let best = null;
    const consider = (kind, id, d) => {
      if (d <= 6 && (!best || d < best.d)) best = { kind, id, d };
    };
    for (const lesion of marks.visibleLesions()) {
      const g = lesion.current;
      if (g.recist) {
        const p = recistPoints(g.recist).map((q) => toScreen(q.x, q.y));
        consider("lesion", lesion.id, Math.min(segmentDistance(m, p[0], p[1]), segmentDistance(m, p[2], p[3])));
      }
      if (g.box) consider("lesion", lesion.id, boxDistance(m, g.box) + (g.recist ? 1 : 0));
    }
    for (const p of marks.visiblePredictions()) consider("prediction", p.id, boxDistance(m, p.box) + 0.5);
    return best;
  }

  // The selected lesion's end point or box corner under the pointer.
  function handleAt(clientX, clientY) {
    const lesion = marks.selectedLesion();
    if (!lesion || marks.lesionSlice(lesion) !== state.current) return null;
    const m = local(clientX, clientY);
    const g = lesion.current;
    const pts = g.recist ? recistPoints(g.recist) : boxCorners(g.box);
    for (let i = 0; i < pts.length; i++) {
      const s = toScreen(pts[i].x, pts[i].y);
      if (Math.abs(s.x - m.x) <= HANDLE_PX && Math.abs(s.y - m.y) <= HANDLE_PX) return { lesion, index: i, recist: !!g.recist };
    }
    return null;
  }

  return { draw, hitTest, handleAt, scaleBar, addLayer: (fn) => layers.push(fn) };
}
