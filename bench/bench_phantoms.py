"""Phantom generator speed against the previous generator (extracted from git) in the same run."""

# The previous generator is read from a git revision (default: the last commit before the confusers and
# acquisition variety) into a temporary package, so both run in this process on the same machine and load.
# CPU time (process_time, one process) is compared, not wall time: the machine is shared.

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from bench.common import PROJECT_ROOT, machine

OLD_REV = "b0a0081"
SYNTH = "app/deeplesion/synth"
MODULES = ("raster", "anatomy", "lesions", "generator")


def _old_package(rev: str, tmp: Path) -> dict[str, ModuleType]:
    """The synth modules of `rev` as an importable package `old_synth` (imports rewritten)."""
    pkg = tmp / "old_synth"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in MODULES:
        src = subprocess.run(
            ["git", "show", f"{rev}:{SYNTH}/{name}.py"],
            cwd=PROJECT_ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (pkg / f"{name}.py").write_text(src.replace("app.deeplesion.synth", "old_synth"))
    sys.path.insert(0, str(tmp))
    return {name: importlib.import_module(f"old_synth.{name}") for name in MODULES}


def _render_cpu(phantom_cls: Any, grid_cls: Any, patients: int, zs: list[float], **kw: Any) -> float:
    """CPU ms per 512x512 slice: `patients` random bodies, one slice at each reference z, with noise."""
    grid = grid_cls.centred(512, 0.8, (256.0, 240.0))
    n = 0
    start = time.process_time()
    for p in range(patients):
        ph = phantom_cls.random(np.random.default_rng(1000 + p), "MF"[p % 2])
        for i, z in enumerate(zs):
            ph.render(z * ph.z_scale, grid, rng=np.random.default_rng([p, i]), noise_sd=14.0, **kw)
            n += 1
    return 1000.0 * (time.process_time() - start) / n


def _dataset_cpu(generate: Any, root: Path) -> tuple[int, float]:
    """Slices and CPU seconds of the tests' small fixture (2 patients, one study), in one process."""
    start = time.process_time()
    summary = generate(root, patients=2, seed=1, max_studies=1, progress=False, workers=1)
    return summary.slices_written, time.process_time() - start


def main(argv: list[str]) -> int:
    """Print render and small-fixture CPU times of both generators and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rev", default=OLD_REV, help="git revision of the previous generator")
    parser.add_argument("--patients", type=int, default=3)
    args = parser.parse_args(argv)
    from app.deeplesion.synth import anatomy, generator, raster

    zs = [float(z) for z in range(40, 640, 40)]
    with tempfile.TemporaryDirectory(prefix="bench_phantoms_") as tmp:
        old = _old_package(args.rev, Path(tmp))
        old_ms = _render_cpu(old["anatomy"].Phantom, old["raster"].Grid, args.patients, zs)
        new_ms = _render_cpu(anatomy.Phantom, raster.Grid, args.patients, zs)
        new_art_ms = _render_cpu(
            anatomy.Phantom, raster.Grid, args.patients, zs, kernel="sharp", artefacts=1.0
        )
        old_n, old_s = _dataset_cpu(old["generator"].generate_dataset, Path(tmp) / "old")
        new_n, new_s = _dataset_cpu(generator.generate_dataset, Path(tmp) / "new")
    print(f"{machine()}; previous generator = {args.rev} ({old['generator'].GENERATOR_VERSION})")
    print(f"render, {args.patients} patients x {len(zs)} slices, 512 px, CPU ms/slice:")
    print(f"  previous {old_ms:.1f}, now {new_ms:.1f} (ratio {new_ms / old_ms:.2f}x)")
    print(f"  now with sharp kernel + full artefacts {new_art_ms:.1f} ({new_art_ms / old_ms:.2f}x)")
    print("tests' small fixture (2 patients, max_studies=1, 1 process), CPU:")
    print(f"  previous {old_n} slices in {old_s:.1f} s ({old_n / old_s:.1f} slices/s)")
    print(f"  now {new_n} slices in {new_s:.1f} s ({new_n / new_s:.1f} slices/s); ratio of s/slice "
          f"{(new_s / new_n) / (old_s / old_n):.2f}x")  # fmt: skip
    print(
        f"| {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} | {machine()} | {old_ms:.1f} | {new_ms:.1f} | "
        f"{new_ms / old_ms:.2f}x | {old_n} / {old_s:.1f} | {new_n} / {new_s:.1f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
