// The browser benchmark's helpers (bench/bench_browser.py): loaded by the viewer only for ?bench=1, so a
// reader's page never carries them. `viewer` is window.__viewer; `internals` what the timings need.
import { windowBounds, windowGrey } from "./lut.js";

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// `huPerPx` is the W/L drag's HU per pixel, so the timed frames vary as a drag's do.
export function installBench(viewer, { render, windowInto, sliceList, frame, clearPrefetch, huPerPx }) {
  const { state, cache, setSlice } = viewer;

  // The baseline the benchmark compares against: per-pixel arithmetic, four byte writes, no table.
  function windowIntoNaive(data) {
    const { ctx, imageData } = frame();
    const px = imageData.data;
    const [lo, hi] = windowBounds(state.window.center, state.window.width);
    for (let i = 0; i < data.length; i++) {
      let g = windowGrey(data[i], lo, hi);
      if (state.invert) g = 255 - g;
      px[i * 4] = g;
      px[i * 4 + 1] = g;
      px[i * 4 + 2] = g;
      px[i * 4 + 3] = 255;
    }
    ctx.putImageData(imageData, 0, 0);
  }

  Object.assign(viewer, {
    // Times `frames` synchronous W/L frames of the current slice, as a drag would produce them.
    benchWindowLevel(frames = 200, naive = false) {
      const entry = cache.get(state.current);
      if (!entry || entry.status !== "ok") return null;
      const times = [];
      const base = { ...state.window };
      for (let i = 0; i < frames; i++) {
        state.window = { center: base.center + (i % 50) * huPerPx, width: Math.max(1, base.width + (i % 37) * huPerPx) };
        const t0 = performance.now();
        if (naive) windowIntoNaive(entry.data);
        else windowInto(entry.data);
        times.push(performance.now() - t0);
      }
      state.window = base;
      render();
      return { frames, median: percentile(times, 50), p95: percentile(times, 95), width: entry.w, height: entry.h };
    },
    clearCache() {
      cache.clear();
      clearPrefetch();
    },
    // Scroll along the stored slices at `rate` slices/s; counts frames where the slice was not yet decoded.
    async benchScroll(rate = 30, steps = 60) {
      const list = sliceList();
      let at = 0;
      let dir = 1;
      let blank = 0;
      setSlice(list[0]);
      const t0 = performance.now();
      for (let i = 0; i < steps; i++) {
        if (list.length > 1) {
          at += dir;
          if (at >= list.length || at < 0) { dir = -dir; at += 2 * dir; }
        }
        const index = list[Math.max(0, Math.min(list.length - 1, at))];
        setSlice(index);
        if (!cache.has(index)) blank++;
        render();
        await new Promise((r) => setTimeout(r, rate > 0 ? 1000 / rate : 0));
      }
      const seconds = (performance.now() - t0) / 1000;
      return { steps, blank, seconds, slicesPerSecond: steps / seconds, range: [list[0], list[list.length - 1]] };
    },
    // Fastest possible scroll over decoded slices: render-bound throughput.
    maxScrollRate(steps = 200) {
      const ready = [...cache.entries()].filter(([, e]) => e.status === "ok").map(([i]) => i).sort((a, b) => a - b);
      if (!ready.length) return null;
      const t0 = performance.now();
      for (let i = 0; i < steps; i++) {
        state.current = ready[i % ready.length];
        render();
      }
      return { steps, slicesPerSecond: steps / ((performance.now() - t0) / 1000) };
    },
  });
}
