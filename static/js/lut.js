// The viewer's window lookup table: pure, so a page test can import it and compare it with the server.

// Raw slices are int16; a table index is the value plus this, i.e. its uint16 bit pattern.
export const INT16_OFFSET = 32768;

// The HU shown black and white for a centre / width, computed as the server's Window.lo / Window.hi are.
export function windowBounds(center, width) {
  return [center - width / 2, center + width / 2];
}

// The server's rule, step for step (app/deeplesion/windowing.py window_reference): the same float64
// operations in the same order, then round half up, so both give the same grey for every HU.
export function windowGrey(hu, lo, hi) {
  const g = Math.floor(((hu - lo) / (hi - lo)) * 255 + 0.5);
  return g <= 0 ? 0 : g >= 255 ? 255 : g;
}

// One entry per possible int16 value (opaque grey RGBA as a little-endian Uint32), so a frame is one lookup per pixel.
export function buildLut(table, center, width, invert) {
  const [lo, hi] = windowBounds(center, width);
  for (let v = 0; v < 65536; v++) {
    let g = windowGrey(v - INT16_OFFSET, lo, hi);
    if (invert) g = 255 - g;
    table[v] = 0xff000000 | (g << 16) | (g << 8) | g;
  }
}
