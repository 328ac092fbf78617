// The viewer's pointer tools, one object each with down / move / up, and the small dispatcher that routes a
// press to one of them. A tool's down(p) returns its gesture state g (or null to ignore the press); move(g, p)
// and up(g, p) get it back. p = {x, y} client position, pos = the image point under it.
import { boxOfPoints, compose, decompose, dot, len, normBox, pointsToRecist, recistPoints, sub } from "../geometry.js";
import { BOX_PADDING_PX } from "../vocabulary.js";

export const HU_PER_PX = 4;
const MIN_DRAW_PX = 2;

// What a press starts, before any tool sees it: right = zoom, middle or Shift+left = pan, left = the active tool.
export function routeButton(button, shiftKey, activeTool) {
  if (button === 2) return "zoom";
  if (button === 1 || (button === 0 && shiftKey)) return "pan";
  if (button === 0) return activeTool;
  return null;
}

// Unit vector of the segment a -> b and its normal.
function axes(a, b) {
  const L = sub(b, a);
  const l = len(L) || 1;
  const u = { x: L.x / l, y: L.y / l };
  return { l, u, n: { x: -u.y, y: u.x } };
}

// A whole mark moved by the pointer's image-space travel.
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
    const parts = decompose(p);
    let pts;
    if (drag.index < 2) {
      // Moving a long-axis end turns the short axis with it, keeping its position and lengths.
      const ends = [p[0], p[1]];
      ends[drag.index] = pos;
      pts = compose(ends[0], ends[1], parts);
    } else {
      // Moving a short-axis end slides it along the long axis and changes its length; it stays perpendicular.
      const { l, u, n } = axes(p[0], p[1]);
      parts.t = Math.max(0, Math.min(1, dot(sub(pos, p[0]), u) / l));
      if (drag.index === 2) parts.d1 = dot(sub(pos, p[0]), n);
      else parts.d2 = dot(sub(pos, p[0]), n);
      pts = compose(p[0], p[1], parts);
    }
    return { ...g, recist: pointsToRecist(pts), box: boxOfPoints(pts, BOX_PADDING_PX), diameters_mm: null };
  }
  const c = [{ x: g.box[0], y: g.box[1] }, { x: g.box[2], y: g.box[1] }, { x: g.box[2], y: g.box[3] }, { x: g.box[0], y: g.box[3] }];
  const opposite = c[(drag.index + 2) % 4];
  return { ...g, box: normBox([opposite.x, opposite.y, pos.x, pos.y]) };
}

// `app` is what the tools act through: state, view, overlay, marks, edits, select, setWindow, setMessage, setTool.
export function createTools(app) {
  const { state, view, overlay, marks } = app;
  const redraw = () => overlay.draw();

  const wl = {
    down: (p) => ({ start: p, window: { ...state.window }, moved: false }),
    move(g, p) {
      const dx = p.x - g.start.x;
      const dy = p.y - g.start.y;
      if (Math.abs(dx) + Math.abs(dy) > 2) g.moved = true;
      if (g.moved) app.setWindow(g.window.center + dy * HU_PER_PX, g.window.width + dx * HU_PER_PX, "custom");
    },
    // A click without a drag selects the mark under the pointer (or nothing).
    up(g, p) {
      if (g.moved) return;
      const hit = overlay.hitTest(p.x, p.y);
      app.select(hit ? { kind: hit.kind, id: hit.id } : null);
    },
  };

  const pan = {
    down: (p) => ({ start: p, panX: state.panX, panY: state.panY }),
    move(g, p) {
      state.panX = g.panX + p.x - g.start.x;
      state.panY = g.panY + p.y - g.start.y;
      view.apply();
    },
    up() {},
  };

  // Zoom about the point under the pointer, as Ctrl+wheel does, so the lesion stays where the reader looks.
  const zoom = {
    down: (p) => ({ start: p, zoom: state.zoom, anchor: p.pos }),
    move(g, p) {
      state.zoom = Math.max(0.25, Math.min(16, g.zoom * Math.exp(-(p.y - g.start.y) * 0.01)));
      view.pinImagePoint(g.anchor, g.start.x, g.start.y);
      view.apply();
    },
    up() {},
  };

  // Drags a handle of the selected lesion, or (on its outline) the whole mark; saved on release.
  const move = {
    down(p) {
      const handle = overlay.handleAt(p.x, p.y);
      const lesion = handle ? handle.lesion : marks.selectedLesion();
      if (!lesion) return null;
      state.dragging = handle
        ? { lesionId: lesion.id, index: handle.index, recist: handle.recist, start: lesion.current, geometry: lesion.current }
        : { lesionId: lesion.id, whole: true, from: p.pos, start: lesion.current, geometry: lesion.current };
      return {};
    },
    move(g, p) {
      if (!state.dragging) return;
      state.dragging.geometry = state.dragging.whole ? moveWhole(state.dragging, p.pos) : moveHandle(state.dragging, p.pos);
      redraw();
    },
    up() {
      const drag = state.dragging;
      state.dragging = null;
      if (!drag) return;
      const lesion = marks.findLesion(drag.lesionId);
      if (lesion && JSON.stringify(drag.geometry) !== JSON.stringify(drag.start)) app.edits.updateGeometry(lesion, drag.geometry);
      else redraw();
    },
  };

  // The default tool: on a handle or the selected mark's outline it moves; elsewhere it windows and selects.
  const pointer = {
    pick(p) {
      if (overlay.handleAt(p.x, p.y)) return move;
      const hit = overlay.hitTest(p.x, p.y);
      const selected = marks.selectedLesion();
      if (hit && selected && hit.kind === "lesion" && hit.id === selected.id && marks.lesionSlice(selected) === state.current) return move;
      return wl;
    },
  };

  // RECIST: drag the long axis, release, then drag across it for the short axis (kept perpendicular).
  const recist = {
    down(p) {
      const d = state.drawing;
      if (d && d.kind === "recist" && d.phase === 2) {
        const { l, u, n } = axes(d.p1, d.p2);
        const off = dot(sub(p.pos, d.p1), n);
        d.short = { t: Math.max(0, Math.min(1, dot(sub(p.pos, d.p1), u) / l)), d1: off, d2: off };
        d.shortDragging = true;
      } else {
        state.drawing = { kind: "recist", phase: 1, p1: p.pos, p2: p.pos };
      }
      return {};
    },
    move(g, p) {
      const d = state.drawing;
      if (!d) return;
      if (d.phase === 1) d.p2 = p.pos;
      else if (d.shortDragging) d.short.d2 = dot(sub(p.pos, d.p1), axes(d.p1, d.p2).n);
      redraw();
    },
    up() {
      const d = state.drawing;
      if (!d) return;
      if (d.phase === 1) {
        if (len(sub(d.p2, d.p1)) < MIN_DRAW_PX) state.drawing = null;
        else {
          d.phase = 2;
          app.setMessage("Now drag across the lesion for the short axis (Esc cancels).");
        }
        redraw();
        return;
      }
      if (!d.shortDragging) return;
      d.shortDragging = false;
      const shortLen = Math.abs(d.short.d2 - d.short.d1);
      if (shortLen < MIN_DRAW_PX) { redraw(); return; }
      let pts = compose(d.p1, d.p2, d.short);
      // RECIST lists the longer axis first; swap when the user drew the short one longer.
      if (shortLen > len(sub(d.p2, d.p1))) pts = [pts[2], pts[3], pts[0], pts[1]];
      state.drawing = null;
      const target = state.measureTarget ? marks.findLesion(state.measureTarget) : null;
      state.measureTarget = null;
      if (target && !target.current.recist && marks.lesionSlice(target) === state.current) {
        // A box-only lesion (an accepted prediction, say) gets its RECIST measurement; it stays the same lesion.
        app.edits.updateGeometry(target, { ...target.current, recist: pointsToRecist(pts), box: boxOfPoints(pts, BOX_PADDING_PX) });
        app.setTool("pointer");
        return;
      }
      app.edits.addLesion({ recist: pointsToRecist(pts) }, "add RECIST mark");
    },
  };

  // A rubber-band rectangle in image space; `finish(box)` gets it when it is big enough.
  function rectangleDrag(kind, extra, minPx, finish) {
    return {
      down(p) { state.drawing = { kind, ...extra, p1: p.pos, p2: p.pos }; return {}; },
      move(g, p) { if (state.drawing) { state.drawing.p2 = p.pos; redraw(); } },
      up() {
        const d = state.drawing;
        state.drawing = null;
        if (!d) return;
        const box = normBox([d.p1.x, d.p1.y, d.p2.x, d.p2.y]);
        if (box[2] - box[0] < minPx || box[3] - box[1] < minPx) { redraw(); return; }
        finish(box);
      },
    };
  }

  const box = rectangleDrag("box", {}, MIN_DRAW_PX, (b) => app.edits.addLesion({ box: b }, "add box"));
  const roi = (shape) => rectangleDrag("roi", { shape }, 1, (b) => app.addMeasure({ kind: shape, box: b }));

  // A segment tool (length, arrow): drag from p1 to p2. The arrow's head is at p1, where the drag began, and
  // its text label at p2, as in OHIF.
  function segment(kind) {
    return {
      down(p) { state.drawing = { kind: "line", line: kind, p1: p.pos, p2: p.pos }; return {}; },
      move(g, p) { if (state.drawing) { state.drawing.p2 = p.pos; redraw(); } },
      up() {
        const d = state.drawing;
        state.drawing = null;
        if (!d || len(sub(d.p2, d.p1)) < 1) { redraw(); return; }
        if (kind === "length") { app.addMeasure({ kind, p1: d.p1, p2: d.p2 }); return; }
        const text = window.prompt("Label for the arrow", "") ?? "";
        app.addMeasure({ kind, p1: d.p1, p2: d.p2, text: text.trim() });
      },
    };
  }

  const probe = { down: () => ({}), move() {}, up(g, p) { app.addMeasure({ kind: "probe", point: p.pos }); } };

  return {
    pointer, wl, move, pan, zoom, recist, box, probe,
    ellipse: roi("ellipse"), rectangle: roi("rectangle"), length: segment("length"), arrow: segment("arrow"),
  };
}

// The pointer dispatcher: a press goes to the tool routeButton names (a tool with pick() chooses a concrete
// one), that tool gets the moves and the release; nothing else branches on buttons or phases.
export function wirePointer(viewport, { tools, activeTool, toImage, afterDown, onHover, onCancel }) {
  let gesture = null;
  const point = (e) => ({ x: e.clientX, y: e.clientY, pos: toImage(e.clientX, e.clientY) });

  viewport.addEventListener("contextmenu", (e) => e.preventDefault());
  viewport.addEventListener("pointerdown", (e) => {
    viewport.focus({ preventScroll: true });
    viewport.setPointerCapture(e.pointerId);
    const name = routeButton(e.button, e.shiftKey, activeTool());
    if (name === "pan") e.preventDefault();
    let tool = name && tools[name];
    const p = point(e);
    if (tool && tool.pick) tool = tool.pick(p);
    const g = tool ? tool.down(p) : null;
    gesture = g ? { tool, g } : null;
    afterDown();
  });
  viewport.addEventListener("pointermove", (e) => {
    const p = point(e);
    onHover(p, !gesture);
    if (gesture) gesture.tool.move(gesture.g, p);
  });
  viewport.addEventListener("pointerup", (e) => {
    const current = gesture;
    gesture = null;
    if (current) current.tool.up(current.g, point(e));
  });
  viewport.addEventListener("pointercancel", () => {
    gesture = null;
    onCancel();
  });
}
