// Pure 2-D geometry of marks in image pixels: RECIST end points, boxes, distances. No DOM, importable in tests.

export const sub = (a, b) => ({ x: a.x - b.x, y: a.y - b.y });
export const dot = (a, b) => a.x * b.x + a.y * b.y;
export const len = (a) => Math.hypot(a.x, a.y);

export function recistPoints(r) {
  return [{ x: r[0], y: r[1] }, { x: r[2], y: r[3] }, { x: r[4], y: r[5] }, { x: r[6], y: r[7] }];
}

export function pointsToRecist(p) {
  return [p[0].x, p[0].y, p[1].x, p[1].y, p[2].x, p[2].y, p[3].x, p[3].y];
}

// Short axis described relative to the long one: position t along it and signed offsets d1, d2.
export function decompose(p) {
  const L = sub(p[1], p[0]);
  const l = len(L) || 1;
  const u = { x: L.x / l, y: L.y / l };
  const n = { x: -u.y, y: u.x };
  const mid = { x: (p[2].x + p[3].x) / 2, y: (p[2].y + p[3].y) / 2 };
  return { t: dot(sub(mid, p[0]), u) / l, d1: dot(sub(p[2], p[0]), n), d2: dot(sub(p[3], p[0]), n) };
}

export function compose(p1, p2, { t, d1, d2 }) {
  const L = sub(p2, p1);
  const l = len(L) || 1;
  const u = { x: L.x / l, y: L.y / l };
  const n = { x: -u.y, y: u.x };
  const f = { x: p1.x + t * L.x, y: p1.y + t * L.y };
  return [p1, p2, { x: f.x + d1 * n.x, y: f.y + d1 * n.y }, { x: f.x + d2 * n.x, y: f.y + d2 * n.y }];
}

export function segmentDistance(p, a, b) {
  const ab = sub(b, a);
  const l2 = dot(ab, ab) || 1;
  const t = Math.max(0, Math.min(1, dot(sub(p, a), ab) / l2));
  return len(sub(p, { x: a.x + t * ab.x, y: a.y + t * ab.y }));
}

export function boxCorners(b) {
  return [{ x: b[0], y: b[1] }, { x: b[2], y: b[1] }, { x: b[2], y: b[3] }, { x: b[0], y: b[3] }];
}

export function normBox(b) {
  return [Math.min(b[0], b[2]), Math.min(b[1], b[3]), Math.max(b[0], b[2]), Math.max(b[1], b[3])];
}

// The dataset's box rule (app/deeplesion/geometry.py box_from_recist); the server recomputes it on save.
export function boxOfPoints(points, pad) {
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  return [Math.min(...xs) - pad, Math.min(...ys) - pad, Math.max(...xs) + pad, Math.max(...ys) + pad];
}
