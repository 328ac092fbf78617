"""Memory at full size: a real server serves 10,000 distinct 512 x 512 slices; its RSS must level off."""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

from bench.common import RELIABILITY_MD, machine, record

SLICES = 10_000
MISSING = 20_000
SIZE = 512
DECODED_MB, ENCODED_MB = 256, 192  # the defaults (Settings.decoded_cache_mb, encoded_cache_mb)
# The documented ceiling (docs/reliability.md "Memory"): the two caches plus 350 MB, that is the process
# itself (~110 MB) and the allocator's overhead once the caches churn (160-220 MB measured).
CEILING_MB = DECODED_MB + ENCODED_MB + 350
BASELINE_AT = 2_000  # both caches are full by then (256 MB holds 512 decoded slices, 192 MB ~1,300 PNGs)


def main(argv: list[str]) -> int:
    """Serve the slices, print RSS per checkpoint and the end/baseline ratio, record, 1 above the ceiling."""
    from tests.memory_probe import build_many_slices, serve_many_slices

    root = Path(tempfile.mkdtemp(prefix="lr-memory-"))
    started = time.perf_counter()
    try:
        names = build_many_slices(root, SLICES, SIZE)
        result = serve_many_slices(
            root,
            names,
            checkpoints=[1_000, BASELINE_AT, 5_000, SLICES],
            missing=MISSING,
            decoded_cache_mb=DECODED_MB,
            encoded_cache_mb=ENCODED_MB,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    end = result.rss_mb[max(result.rss_mb)]
    ratio = end / result.rss_mb[BASELINE_AT]
    points = ", ".join(f"{n:,}: {mb:.0f}" for n, mb in sorted(result.rss_mb.items()))
    line = (
        f"{SLICES:,} distinct {SIZE} x {SIZE} slices then {MISSING:,} missing names: resident MB after N "
        f"requests {points}; peak {result.peak_mb:.0f} MB (ceiling {CEILING_MB}); end/after-{BASELINE_AT:,} "
        f"ratio {ratio:.3f}; errors {result.errors}"
    )
    print(line)
    record(
        "## Memory",
        "`python -m bench bench_memory`: a real `lesion-review serve` (SQLite, one process, default caches) "
        "answers one request for each of 10,000 distinct slices, then 20,000 well-formed names that are not "
        "stored; resident memory must level off once the byte-bounded caches are full.\n",
        f"- {date.today().isoformat()}, {machine()}, {time.perf_counter() - started:.0f} s: {line}",
        doc=RELIABILITY_MD,
    )
    return 1 if result.errors or result.peak_mb > CEILING_MB else 0
