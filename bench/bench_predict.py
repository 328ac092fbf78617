"""End-to-end latency of one detector prediction on CPU (3 slices, preprocess, infer, decode) vs naive."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine, record

TARGET_P50_MS = 100.0
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PERFORMANCE_MD = PROJECT_ROOT / "docs" / "performance.md"
HEADING = "## Detector prediction (bench/bench_predict.py, H4)"


def build_dataset(root: Path) -> list[tuple[str, tuple[float, float, float]]]:
    """A small synthetic dataset from H2's generator; returns (key slice, spacing) pairs."""
    from app.deeplesion.csvio import read_dl_info
    from app.deeplesion.synth import generate_dataset

    generate_dataset(root, patients=2, seed=1, max_studies=1, progress=False)
    seen: dict[str, tuple[float, float, float]] = {}
    for rec in read_dl_info(root / "DL_info.csv"):
        seen.setdefault(rec.file_name, rec.spacing_mm)
    return list(seen.items())


def naive_predict(
    session: Any, root: Path, file_name: str, spacing: Sequence[float]
) -> list[tuple[list[float], float]]:
    """Baseline: Pillow PNG reads every time, float64 numpy preprocessing, default-threaded ORT session."""
    from PIL import Image

    from app.detection.preprocess import INPUT_SIZE, PIXEL_MEAN, TARGET_SPACING_MM

    series, _, idx = file_name.rpartition("_")
    key = int(idx[:-4])
    dz = spacing[2] if spacing[2] > 0 else None
    step = 2.0 / dz if dz else 0.0

    def read(i: int) -> np.ndarray:
        path = root / "Images_png" / series / f"{i:03d}.png"
        if not path.exists():
            path = root / "Images_png" / series / f"{key:03d}.png"
        return np.asarray(Image.open(path), dtype=np.float64) - 32768.0

    def at(pos: float) -> np.ndarray:
        lo = int(np.floor(pos))
        frac = pos - lo
        a = read(lo)
        return a if frac == 0 else (1 - frac) * a + frac * read(lo + 1)

    ctx = np.stack([at(key - step), read(key), at(key + step)])
    win = np.clip((ctx + 1024.0) / 4095.0 * 255.0, 0, 255) - PIXEL_MEAN
    h, w = win.shape[1:]
    scale = min(spacing[0] / TARGET_SPACING_MM, INPUT_SIZE / max(h, w))
    nw, nh = round(w * scale), round(h * scale)
    x = np.full((1, 3, INPUT_SIZE, INPUT_SIZE), -PIXEL_MEAN)
    for c in range(3):
        img = Image.fromarray(win[c].astype(np.float32), mode="F").resize((nw, nh), Image.Resampling.BILINEAR)
        x[0, c, :nh, :nw] = np.asarray(img, dtype=np.float64)
    rows = session.run(None, {"image": x.astype(np.float32)})[0][0]
    out = []
    for r in rows:
        if r[4] >= 0.05:
            b = (np.asarray(r[:4], dtype=np.float64) + 0.5) / (nw / w) - 0.5
            out.append((b.tolist(), float(r[4])))
    return out


def _time(fn: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def run(model: Path, runs: int) -> dict[str, Any]:
    """Measure our path and the naive one on the same slices, interleaved, in one process."""
    import onnxruntime as ort

    from app.deeplesion.store import SliceStore
    from app.detection.decode import decode_output
    from app.detection.preprocess import load_context, prepare_input
    from app.detection.runtime import Detector

    det = Detector.load(model, device="cpu")
    naive_session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        items = build_dataset(root)
        ours: list[float] = []
        naive: list[float] = []
        stages: dict[str, list[float]] = {"load": [], "preprocess": [], "infer": [], "decode": []}
        for i in range(runs + 3):
            fn, spacing = items[i % len(items)]
            # A store with no decoded-slice cache: every prediction reads its 3 PNGs from disk.
            store = SliceStore(root, cache_bytes=0)

            def ours_once(fn: str = fn, sp: Sequence[float] = spacing, st: SliceStore = store) -> object:
                return det.predict(fn, st, spacing_mm=sp)

            def naive_once(fn: str = fn, sp: Sequence[float] = spacing) -> object:
                return naive_predict(naive_session, root, fn, sp)

            t_ours = _time(ours_once, 1)[0]
            t_naive = _time(naive_once, 1)[0]
            t0 = time.perf_counter()
            ctx = load_context(store, fn, spacing[2])
            t1 = time.perf_counter()
            x, tr = prepare_input(ctx, spacing[0])
            t2 = time.perf_counter()
            raw = det.infer(x)
            t3 = time.perf_counter()
            decode_output(raw, tr, 0.05)
            t4 = time.perf_counter()
            if i < 3:
                continue  # warm-up
            ours.append(t_ours)
            naive.append(t_naive)
            for k, (a, b) in zip(stages, ((t0, t1), (t1, t2), (t2, t3), (t3, t4)), strict=True):
                stages[k].append((b - a) * 1e3)
    return {
        "model_version": det.model_version,
        "provider": det.provider,
        "slices": len(items),
        "runs": runs,
        "p50_ms": _p(ours, 50),
        "p95_ms": _p(ours, 95),
        "naive_p50_ms": _p(naive, 50),
        "ratio": _p(naive, 50) / _p(ours, 50),
        "stages_p50_ms": {k: round(statistics.median(v), 2) for k, v in stages.items()},
    }


def record_row(res: dict[str, Any]) -> None:
    """Append one row to this benchmark's table in docs/performance.md."""
    import onnxruntime as ort

    intro = (
        "One prediction end to end on CPU through `Detector.predict`: read the key slice and its +-2 mm "
        "neighbours from PNG (no decoded-slice cache), window, rescale to 0.8 mm, pad, ONNX Runtime "
        "(2 intra-op threads), decode, map boxes back. Naive = Pillow reads + float64 numpy "
        "preprocessing + an ORT session with default options, same slices, interleaved in the same "
        "run. Target: p50 <= 100 ms on 2 cores.\n\n"
        "| date (UTC) | machine | model | provider | p50 ms | p95 ms | naive p50 ms | ratio | "
        "load / preprocess / infer / decode p50 ms |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    s = res["stages_p50_ms"]
    row = (
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} | {machine()}, ORT {ort.__version__} | "
        f"{res['model_version']} | {res['provider']} | "
        f"{res['p50_ms']:.1f} | {res['p95_ms']:.1f} | {res['naive_p50_ms']:.1f} | {res['ratio']:.2f}x | "
        f"{s['load']} / {s['preprocess']} / {s['infer']} / {s['decode']} |"
    )
    record(HEADING, intro, row + "\n")


def main(argv: list[str]) -> int:
    """Run the benchmark; exit 1 when p50 misses the target."""
    from app.config import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="python -m bench.bench_predict", description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--no-record", action="store_true", help="Do not append to docs/performance.md.")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"no model at {args.model}: train one (make train) or pass --model")
        return 1
    res = run(args.model, args.runs)
    s = res["stages_p50_ms"]
    print(
        f"{res['model_version']} on {res['provider']}, {res['runs']} predictions "
        f"over {res['slices']} key slices\n"
        f"ours : p50 {res['p50_ms']:.1f} ms, p95 {res['p95_ms']:.1f} ms "
        f"(load {s['load']}, preprocess {s['preprocess']}, infer {s['infer']}, decode {s['decode']} ms)\n"
        f"naive: p50 {res['naive_p50_ms']:.1f} ms -> ratio {res['ratio']:.2f}x; "
        f"target p50 <= {TARGET_P50_MS:.0f} ms"
    )
    if not args.no_record:
        record_row(res)
    return 0 if res["p50_ms"] <= TARGET_P50_MS else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
