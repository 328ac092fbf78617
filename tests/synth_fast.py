"""Synthetic datasets without rendering: for tests that need only DL_info.csv, the truth and slice names."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def empty_slices(job: Any) -> int:
    """Write empty slice files instead of rendered CT (monkeypatch over generator._render_job)."""
    folder = Path(job.images_dir) / job.folder
    folder.mkdir(parents=True, exist_ok=True)
    for k in job.indices:
        (folder / f"{k:03d}.png").write_bytes(b"")
    return len(job.indices)
