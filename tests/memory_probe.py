"""Memory probe: a real server serves many distinct slices; its resident memory must level off at its caches.

Used by tests/api/test_memory.py (small) and bench/bench_memory.py (10,000 slices of 512 x 512).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from app.deeplesion.store import write_hu_png
from tests.e2e.live import free_port
from tests.server_process import start_server, stop_server

SLICES_PER_SERIES = 100


@dataclass
class MemoryResult:
    """Resident memory (MB) of the server after each checkpoint of distinct slices served."""

    slices: int
    missing: int
    rss_mb: dict[int, float] = field(default_factory=dict)
    peak_mb: float = 0.0
    errors: int = 0

    def growth_mb(self, start: int) -> float:
        """How much resident memory grew from the checkpoint `start` to the end."""
        return self.rss_mb[max(self.rss_mb)] - self.rss_mb[start]


def build_many_slices(root: Path, count: int, size: int) -> list[str]:
    """`count` distinct slice names under root/Images_png: hard links to a few real 16-bit PNGs."""
    rng = np.random.default_rng(0)
    bases = []
    for i in range(4):
        hu = (rng.normal(40, 300, (size, size))).clip(-1024, 3000).astype(np.int16)
        bases.append(write_hu_png(root / "bases" / f"{i}.png", hu))
    names = []
    for n in range(count):
        patient, index = 1 + n // SLICES_PER_SERIES, 1 + n % SLICES_PER_SERIES
        target = root / "Images_png" / f"{patient:06d}_01_01" / f"{index:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(bases[n % len(bases)], target)
        names.append(f"{patient:06d}_01_01_{index:03d}")
    return names


def _rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for process {pid}")


def serve_many_slices(
    data_dir: Path,
    names: list[str],
    *,
    checkpoints: list[int],
    missing: int = 0,
    decoded_cache_mb: int,
    encoded_cache_mb: int,
    env: dict[str, str] | None = None,
) -> MemoryResult:
    """Start a server (SQLite, automatic local sign-in), GET every slice once in order, sample its RSS."""
    subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "migrate", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    env = {
        "LESION_REVIEW_DECODED_CACHE_MB": str(decoded_cache_mb),
        "LESION_REVIEW_ENCODED_CACHE_MB": str(encoded_cache_mb),
        **(env or {}),
    }
    proc = start_server(data_dir, f"sqlite:///{data_dir / 'lesion_review.db'}", port, env=env)
    result = MemoryResult(slices=len(names), missing=missing)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            result.rss_mb[0] = _rss_mb(proc.pid)
            for n, name in enumerate(names, start=1):
                if c.get(f"/api/slices/{name}.png").status_code != 200:
                    result.errors += 1
                if n in checkpoints:
                    result.rss_mb[n] = _rss_mb(proc.pid)
            # Names a scanner might try: well-formed, never stored; each must be a cheap 404.
            for n in range(missing):
                if c.get(f"/api/slices/{900000 + n // 1000:06d}_01_01_{n % 1000:03d}.png").status_code != 404:
                    result.errors += 1
            result.rss_mb[len(names) + missing] = _rss_mb(proc.pid)
            result.peak_mb = _rss_mb(proc.pid, "VmHWM")
    finally:
        stop_server(proc)
    return result
