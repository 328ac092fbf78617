// The stack viewport: view transform (zoom, pan, quarter-turn rotation, flips), image <-> screen mapping and
// the frame drawn through the window table. The transform math is pure (no DOM) and importable in tests.
import { INT16_OFFSET, buildLut } from "../lut.js";

// The orientation part of the view as a 2x2 matrix with entries in {-1, 0, 1}: `rotation` quarter turns
// clockwise, then flips along the screen's axes (H mirrors left-right on screen whatever the rotation, as in OHIF).
// screen.x = a x + c y, screen.y = b x + d y (the order of CSS matrix()).
// A clockwise quarter turn on a y-down screen takes (x, y) to (-y, x); k turns, as [r00, r01, r10, r11].
const TURNS = [[1, 0, 0, 1], [0, -1, 1, 0], [-1, 0, 0, -1], [0, 1, -1, 0]];

export function orientation({ rotation = 0, flipH = false, flipV = false }) {
  const [r00, r01, r10, r11] = TURNS[((rotation % 4) + 4) % 4];
  const fx = flipH ? -1 : 1;
  const fy = flipV ? -1 : 1;
  return { a: fx * r00, c: fx * r01, b: fy * r10, d: fy * r11 };
}

// view: {w, h (image pixels), vw, vh (viewport CSS pixels), zoom, panX, panY, rotation, flipH, flipV}.
// Zoom 1 fits the (turned) image in the viewport; the image centre sits at the viewport centre plus the pan.
export function viewMatrix(view) {
  const { w, h, vw, vh, zoom = 1, panX = 0, panY = 0 } = view;
  const q = orientation(view);
  const turned = q.a === 0;
  const s = Math.min(vw / (turned ? h : w), vh / (turned ? w : h)) * zoom;
  const a = s * q.a;
  const b = s * q.b;
  const c = s * q.c;
  const d = s * q.d;
  return { a, b, c, d, e: vw / 2 + panX - (a * w + c * h) / 2, f: vh / 2 + panY - (b * w + d * h) / 2, s };
}

export function imageToScreen(m, x, y) {
  return { x: m.a * x + m.c * y + m.e, y: m.b * x + m.d * y + m.f };
}

export function screenToImage(m, x, y) {
  const det = m.a * m.d - m.b * m.c;
  const dx = x - m.e;
  const dy = y - m.f;
  return { x: (m.d * dx - m.c * dy) / det, y: (-m.b * dx + m.a * dy) / det };
}

// Axial CT in the radiological convention DeepLesion's PNGs follow: image +x is the patient's left, +y posterior.
const IMAGE_DIRECTIONS = [
  { x: 1, y: 0, label: "L" }, { x: -1, y: 0, label: "R" }, { x: 0, y: 1, label: "P" }, { x: 0, y: -1, label: "A" },
];

// The patient direction shown at each edge of the viewport under the view's rotation and flips.
export function orientationLabels(view) {
  const q = orientation(view);
  const at = (sx, sy) => IMAGE_DIRECTIONS.find((v) => q.a * v.x + q.c * v.y === sx && q.b * v.x + q.d * v.y === sy).label;
  return { left: at(-1, 0), right: at(1, 0), top: at(0, -1), bottom: at(0, 1) };
}

const ORIENT_TITLES = { L: "patient left", R: "patient right", A: "anterior", P: "posterior" };

// The DOM half: the image canvas carries the view as a CSS matrix, so a frame is drawn once per slice or
// window, never per pan or zoom. `onChange` runs after every change of the view (overlay, readouts).
export function createViewport({ viewport, imageCanvas, overlayCanvas, labels, state, onChange }) {
  const imageCtx = imageCanvas.getContext("2d", { willReadFrequently: true });
  const lut = new Uint32Array(65536);
  let lutKey = "";
  let imageData = null;
  let imageData32 = null;
  let size = { vw: 1, vh: 1 };

  function view() {
    return {
      w: imageCanvas.width, h: imageCanvas.height, vw: size.vw, vh: size.vh, zoom: state.zoom, panX: state.panX,
      panY: state.panY, rotation: state.rotation, flipH: state.flipH, flipV: state.flipV,
    };
  }

  // The matrix is recomputed only when an input changed: the overlay maps dozens of points per frame.
  let memo = null;
  function matrix() {
    const v = memo && memo.view;
    const same = v && v.w === imageCanvas.width && v.h === imageCanvas.height && v.vw === size.vw && v.vh === size.vh &&
      v.zoom === state.zoom && v.panX === state.panX && v.panY === state.panY && v.rotation === state.rotation &&
      v.flipH === state.flipH && v.flipV === state.flipV;
    if (!same) {
      const current = view();
      memo = { view: current, m: viewMatrix(current) };
    }
    return memo.m;
  }

  function apply() {
    const m = matrix();
    imageCanvas.style.transform = `matrix(${m.a}, ${m.b}, ${m.c}, ${m.d}, ${m.e}, ${m.f})`;
    // Above 2x the pixels show as blocks (what a reader measures on) unless smooth interpolation is chosen.
    imageCanvas.classList.toggle("pixelated", m.s > 2 && !state.smooth);
    const names = orientationLabels(view());
    for (const [edge, el] of Object.entries(labels)) {
      el.textContent = names[edge];
      el.title = ORIENT_TITLES[names[edge]];
    }
    onChange();
  }

  function layout() {
    const rect = viewport.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    overlayCanvas.width = Math.max(1, Math.round(rect.width * dpr));
    overlayCanvas.height = Math.max(1, Math.round(rect.height * dpr));
    overlayCanvas.style.width = `${rect.width}px`;
    overlayCanvas.style.height = `${rect.height}px`;
    size = { vw: rect.width, vh: rect.height };
    apply();
  }

  function ensureImageSize(w, h) {
    if (imageCanvas.width !== w || imageCanvas.height !== h || !imageData) {
      imageCanvas.width = w;
      imageCanvas.height = h;
      imageData = imageCtx.createImageData(w, h);
      imageData32 = new Uint32Array(imageData.data.buffer);
      layout();
    }
  }

  // One table lookup per pixel; the table is rebuilt only when the window or inversion changes.
  function windowInto(data) {
    const key = `${state.window.center}|${state.window.width}|${state.invert}`;
    if (key !== lutKey) {
      buildLut(lut, state.window.center, state.window.width, state.invert);
      lutKey = key;
    }
    const out = imageData32;
    const n = data.length;
    for (let i = 0; i < n; i++) out[i] = lut[data[i] + INT16_OFFSET];
    imageCtx.putImageData(imageData, 0, 0);
  }

  function drawSlice(entry) {
    ensureImageSize(entry.w, entry.h);
    windowInto(entry.data);
  }

  // A plain grey frame: the words go in the #missing label only, so there is one message, never two on top.
  function drawPlaceholder(w, h) {
    ensureImageSize(w, h);
    imageCtx.fillStyle = "#3a3a3a";
    imageCtx.fillRect(0, 0, w, h);
  }

  // Client coordinates <-> image pixels, through the same matrix the canvas is drawn with.
  function toImage(clientX, clientY) {
    const rect = viewport.getBoundingClientRect();
    return screenToImage(matrix(), clientX - rect.left, clientY - rect.top);
  }

  const toScreen = (x, y) => imageToScreen(matrix(), x, y);

  function imageToClient(x, y) {
    const rect = viewport.getBoundingClientRect();
    const p = toScreen(x, y);
    return { x: rect.left + p.x, y: rect.top + p.y };
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
    apply();
  }

  // A quarter turn or a flip keeps the image point at the viewport centre where it is.
  function turn(change) {
    const rect = viewport.getBoundingClientRect();
    const cx = rect.left + rect.width / 2;
    const cy = rect.top + rect.height / 2;
    const centre = toImage(cx, cy);
    change();
    pinImagePoint(centre, cx, cy);
    apply();
  }

  return {
    view, matrix, apply, layout, drawSlice, drawPlaceholder, windowInto, toImage, toScreen, imageToClient,
    pinImagePoint, zoomAt, imageCtx, imageCanvas,
    scale: () => matrix().s,
    size: () => ({ ...size }),
    rotate: (quarters) => turn(() => { state.rotation = (((state.rotation + quarters) % 4) + 4) % 4; }),
    flip: (axis) => turn(() => { state[axis] = !state[axis]; }),
    frame: () => ({ ctx: imageCtx, imageData }),
    pixelChecksum() {
      const d = imageCtx.getImageData(0, 0, imageCanvas.width, imageCanvas.height).data;
      let sum = 0;
      for (let i = 0; i < d.length; i += 4) sum = (sum + d[i] * ((i >> 2) % 251 + 1)) % 1e9;
      return sum;
    },
  };
}
