"""Serving many distinct slices: the server's memory levels off at its byte-bounded caches."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.memory_probe import build_many_slices, serve_many_slices

DECODED_MB, ENCODED_MB = 8, 4
# Beyond the caches: allocator slack and the memo of paths (bench/bench_memory.py runs the full size).
SLACK_MB = 24


@pytest.mark.slow
def test_memory_levels_off_once_the_caches_are_full(tmp_path: Path) -> None:
    # 256 x 256 int16 = 128 KB decoded: 8 MB of decoded cache is full after 64 slices, long before 300.
    names = build_many_slices(tmp_path, 800, 256)
    result = serve_many_slices(
        tmp_path,
        names,
        checkpoints=[300, 800],
        missing=1000,
        decoded_cache_mb=DECODED_MB,
        encoded_cache_mb=ENCODED_MB,
    )
    assert result.errors == 0
    growth = result.growth_mb(300)
    print(f"resident MB after N slices: {result.rss_mb}, peak {result.peak_mb:.0f}")
    assert growth < SLACK_MB, f"memory kept growing after the caches were full: {result.rss_mb}"
