// Cine plays the stored slices of the series only (never an index between them, so nothing unstored is
// requested), looping, at the rate of the fps input (its min and max in the template are the allowed range).
// Frames are timed on animation frames, one slice at most per frame, so a busy machine slows cine down
// rather than skipping slices.
export function createCine({ state, root, button, fpsInput, fpsOutput, setSlice, setMessage, beforeStart }) {
  let raf = null;
  let last = 0;

  function fps() {
    const value = parseInt(fpsInput.value, 10);
    const min = parseInt(fpsInput.min, 10);
    return Math.max(min, Math.min(parseInt(fpsInput.max, 10), Number.isFinite(value) ? value : min));
  }

  function frame(now) {
    const period = 1000 / fps();
    if (now - last >= period) {
      // Keeps the average rate, but never owes more than one frame after a stall.
      last = Math.max(last + period, now - period);
      const frames = state.ks.stored_slices;
      setSlice(frames[(frames.indexOf(state.current) + 1) % frames.length]);
    }
    raf = requestAnimationFrame(frame);
  }

  function show(playing) {
    root.dataset.cine = playing ? "playing" : "paused";
    button.setAttribute("aria-pressed", String(playing));
    button.textContent = playing ? "❚❚" : "▶";
  }

  function start() {
    const frames = (state.ks && state.ks.stored_slices) || [];
    if (frames.length < 2) return setMessage("Cine needs at least two stored slices in this series.");
    beforeStart();
    if (raf === null) {
      last = performance.now();
      raf = requestAnimationFrame(frame);
    }
    show(true);
    return undefined;
  }

  // True when it was playing.
  function stop() {
    if (raf === null) return false;
    cancelAnimationFrame(raf);
    raf = null;
    show(false);
    return true;
  }

  return {
    fps, start, stop,
    toggle: () => (raf === null ? start() : stop()),
    // The rate is read on every animation frame, so a new one applies at once while playing.
    showFps: () => { fpsOutput.textContent = `${fps()} fps`; },
    step(direction) {
      fpsInput.stepUp(direction);
      fpsOutput.textContent = `${fps()} fps`;
    },
  };
}
