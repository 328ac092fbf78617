// Region statistics on raw HU: the one pixel-membership rule of the ROI tools, and the numbers from it.
// No DOM, importable in tests.
//
// Membership rule: pixel (column i, row j) covers [i, i+1) x [j, j+1) in image coordinates, so its centre is
// (i + 0.5, j + 0.5). A pixel belongs to a region when its centre lies inside it, edges included:
// - rectangle [x0, x1] x [y0, y1]: x0 <= i + 0.5 <= x1 and y0 <= j + 0.5 <= y1;
// - ellipse inscribed in that rectangle (centre c, semi-axes r): ((i + 0.5 - cx) / rx)^2 + ((j + 0.5 - cy) / ry)^2 <= 1.
// Mean and SD are over the member pixels (SD with divisor n, numpy's default); area = n x pixel area in mm2.

export const ROI_SHAPES = ["ellipse", "rectangle"];

export function contains(shape, box, px, py) {
  const [x0, y0, x1, y1] = box;
  if (shape === "rectangle") return px >= x0 && px <= x1 && py >= y0 && py <= y1;
  const rx = (x1 - x0) / 2;
  const ry = (y1 - y0) / 2;
  if (rx <= 0 || ry <= 0) return false;
  const dx = (px - (x0 + rx)) / rx;
  const dy = (py - (y0 + ry)) / ry;
  return dx * dx + dy * dy <= 1;
}

// Statistics of the HU values `data` (row-major, width w, height h) inside the region; null when it holds no pixel.
export function roiStats(data, w, h, shape, box, spacing = null) {
  const [x0, y0, x1, y1] = box;
  const i0 = Math.max(0, Math.floor(x0 - 0.5));
  const i1 = Math.min(w - 1, Math.ceil(x1 - 0.5));
  const j0 = Math.max(0, Math.floor(y0 - 0.5));
  const j1 = Math.min(h - 1, Math.ceil(y1 - 0.5));
  let n = 0;
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let j = j0; j <= j1; j++) {
    for (let i = i0; i <= i1; i++) {
      if (!contains(shape, box, i + 0.5, j + 0.5)) continue;
      const v = data[j * w + i];
      n++;
      sum += v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  if (!n) return null;
  const mean = sum / n;
  let sq = 0;
  for (let j = j0; j <= j1; j++) {
    for (let i = i0; i <= i1; i++) {
      if (contains(shape, box, i + 0.5, j + 0.5)) sq += (data[j * w + i] - mean) ** 2;
    }
  }
  const pixelArea = spacing ? spacing[0] * spacing[1] : null;
  return { n, mean, sd: Math.sqrt(sq / n), min, max, areaMm2: pixelArea ? n * pixelArea : null };
}
