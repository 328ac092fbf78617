"""Synthetic generator speed: 10 patients (< 60 s on 2 cores), the tests' fast path (< 5 s), metadata only."""

# Baseline measured in the same run: the CPU time of writing ready-made noisy 512x512 slices with the
# store's PNG writer, the floor any generator pays; the ratio says how much the rendering adds. CPU
# times are reported beside wall times because the machine is shared. Metadata-only target: < 10 s.

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from app.deeplesion.store import write_hu_png
from app.deeplesion.synth import generate_dataset, generate_metadata_only
from bench.common import machine


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _png_floor(n: int, folder: Path) -> float:
    """CPU seconds to write n noisy 512x512 HU slices as 16-bit PNGs (no rendering)."""
    rng = np.random.default_rng(0)
    hu = (rng.normal(0, 15, size=(512, 512)) - 200).astype(np.int16)
    hu[:100] = -1000
    start = time.process_time()
    for i in range(n):
        write_hu_png(folder / f"{i:03d}.png", hu)
    return time.process_time() - start


def main(argv: list[str]) -> int:
    """Run the three measurements and print one table row; 0 when every target is met."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        root = Path(tmp)
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        full = generate_dataset(
            root / "full", patients=args.patients, seed=0, workers=args.workers, progress=False
        )
        full_s, full_cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        t0 = time.perf_counter()
        tiny = generate_dataset(root / "tiny", patients=2, seed=1, max_studies=1, progress=False)
        tiny_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        meta = generate_metadata_only(root / "meta", lesions=32735, seed=0)
        meta_s = time.perf_counter() - t0
        floor_n = 100
        (root / "floor").mkdir()
        floor_s = _png_floor(floor_n, root / "floor")
    per_slice_ms = 1000 * full_cpu / max(1, full.slices_written)
    floor_ms = 1000 * floor_s / floor_n
    ok = full_s < 60 and tiny_s < 5 and meta_s < 10
    print(f"{args.patients} patients: {full.slices_written} slices, {full.lesions_annotated} CSV rows")
    print(f"  wall {full_s:.1f} s, CPU {full_cpu:.1f} s ({per_slice_ms:.1f} ms CPU per slice), target < 60 s")
    print(f"  PNG-write floor {floor_ms:.1f} ms/slice; generator / floor = {per_slice_ms / floor_ms:.1f}x")
    print(f"fast path (2 patients, max_studies=1): {tiny.slices_written} slices in {tiny_s:.1f} s (< 5 s)")
    print(f"metadata only: {meta.lesions_annotated} rows in {meta_s:.1f} s, target < 10 s")
    print(
        f"| {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} | {machine()} | {full.slices_written} | "
        f"{full_s:.1f} | {full_cpu:.1f} | {per_slice_ms:.1f} | {floor_ms:.1f} | {tiny_s:.1f} | "
        f"{meta_s:.1f} | {'PASS' if ok else 'FAIL'} |"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
