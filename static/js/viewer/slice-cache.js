// Slice cache and prefetch: raw int16 slices by index, fetched once, the key slice's neighbours first.
// The scroll path is the series' stored slices only, so no request is ever made for a slice that is not stored.

const PREFETCH_CONCURRENCY = 4;

async function fetchSlice(name) {
  const response = await fetch(`/api/slices/${name}.raw`, { credentials: "same-origin" });
  if (response.status === 404) return { status: "missing" };
  if (!response.ok) {
    let detail = `HTTP ${response.status}`;
    try { detail = (await response.json()).detail || detail; } catch { /* not JSON */ }
    return { status: "error", error: detail };
  }
  const w = parseInt(response.headers.get("X-Width"), 10);
  const h = parseInt(response.headers.get("X-Height"), 10);
  const buffer = await response.arrayBuffer();
  const data = new Int16Array(buffer);
  if (!w || !h || data.length !== w * h) return { status: "error", error: `bad raw slice (${data.length} values for ${w}x${h})` };
  return { status: "ok", data, w, h };
}

// `state.ks` (the key slice, once loaded) says which slices are stored; `keyStored` says it before that.
// `onLoaded(index)` runs when a slice arrives.
export function createSliceCache({ seriesFolder, keyIndex, keyStored, state, onLoaded }) {
  const cache = new Map(); // index -> {status: "ok", data, w, h} | {status: "missing"} | {status: "error", error}
  const inflight = new Map(); // index -> Promise
  let prefetchQueue = [];
  let prefetchActive = 0;
  let listCache = { ks: null, list: [keyIndex] };

  const sliceName = (index) => `${seriesFolder}_${String(index).padStart(3, "0")}`;

  // The stored slices of the series and the key slice (shown as missing when it is not stored), in order.
  function sliceList() {
    if (!state.ks) return [keyIndex];
    if (listCache.ks !== state.ks) {
      const list = [...new Set([...(state.ks.stored_slices || []), keyIndex])].sort((a, b) => a - b);
      listCache = { ks: state.ks, list };
    }
    return listCache.list;
  }

  function sliceRange() {
    const list = sliceList();
    return [list[0], list[list.length - 1]];
  }

  // The stored slice nearest to `index` (ties go to the lower one).
  function nearestListed(index) {
    let best = keyIndex;
    for (const i of sliceList()) if (Math.abs(i - index) < Math.abs(best - index)) best = i;
    return best;
  }

  function isStored(index) {
    if (!state.ks) return index !== keyIndex || keyStored;
    return (state.ks.stored_slices || []).includes(index);
  }

  function loadSlice(index) {
    if (cache.has(index)) return Promise.resolve(cache.get(index));
    if (inflight.has(index)) return inflight.get(index);
    if (!isStored(index)) {
      const entry = { status: "missing" };
      cache.set(index, entry);
      return Promise.resolve(entry);
    }
    const promise = fetchSlice(sliceName(index))
      .catch((err) => ({ status: "error", error: String(err.message || err), transient: true }))
      .then((entry) => {
        inflight.delete(index);
        // A dropped connection should be retried on the next visit, not remembered as broken.
        if (!entry.transient) cache.set(index, entry);
        onLoaded(index);
        return entry;
      });
    inflight.set(index, promise);
    return promise;
  }

  // Nearest slices first, so scrolling away from `current` finds its neighbours already decoded.
  function schedulePrefetch(current) {
    if (!state.prefetch) return;
    const wanted = sliceList().filter((i) => isStored(i) && !cache.has(i) && !inflight.has(i));
    wanted.sort((a, b) => Math.abs(a - current) - Math.abs(b - current));
    prefetchQueue = wanted;
    pump();
  }

  function pump() {
    while (prefetchActive < PREFETCH_CONCURRENCY && prefetchQueue.length) {
      const index = prefetchQueue.shift();
      if (cache.has(index) || inflight.has(index)) continue;
      prefetchActive++;
      loadSlice(index).finally(() => {
        prefetchActive--;
        pump();
      });
    }
  }

  // The decoded pixels of a slice, or null while it is loading, missing or failed.
  function decoded(index) {
    const entry = cache.get(index);
    return entry && entry.status === "ok" ? entry : null;
  }

  return {
    cache, loadSlice, schedulePrefetch, sliceList, sliceRange, nearestListed, isStored, decoded,
    clearPrefetch: () => { prefetchQueue = []; },
  };
}
