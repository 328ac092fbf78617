"""Load at full size: 50 reviewers with think time for 60 s, then a burst of 200, on SQLite and PostgreSQL.

The database holds the full-size synthetic DL_info.csv (32,735 lesions, metadata-only); the key slices the
reviewers open (and their neighbours) are stored as hard links to a few real 512 x 512 16-bit PNGs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from bench.common import RELIABILITY_MD, imported_database, machine, record

REVIEWERS, SECONDS, BURST = 50, 60.0, 200
THINK_S = (0.5, 2.0)
OPENED_KEY_SLICES = 400
POSTGRES_ENV = "LESION_REVIEW_TEST_POSTGRES_URL"
PG_WORKERS = int(os.environ.get("LESION_REVIEW_BENCH_WORKERS", "2"))


def _dataset(root: Path) -> list[str]:
    """Full-size metadata plus images for the key slices reviewers open; returns those key slices."""
    import numpy as np

    from app.deeplesion.csvio import read_dl_info
    from app.deeplesion.store import write_hu_png
    from app.deeplesion.synth import generate_metadata_only

    generate_metadata_only(root, lesions=32_735, seed=7)
    records = read_dl_info(root / "DL_info.csv")
    rng = np.random.default_rng(0)
    bases = [
        write_hu_png(
            root / "bases" / f"{i}.png", rng.normal(40, 300, (512, 512)).clip(-1024, 3000).astype(np.int16)
        )
        for i in range(4)
    ]
    opened = sorted({r.file_name for r in records})[
        :: max(1, len({r.file_name for r in records}) // OPENED_KEY_SLICES)
    ]
    for n, file_name in enumerate(opened):
        series, index = file_name.removesuffix(".png").rsplit("_", 1)
        for i in range(int(index) - 2, int(index) + 3):
            target = root / "Images_png" / series / f"{i:03d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(bases[(n + i) % len(bases)], target)
    return opened


def _run(
    root: Path, key_slices: list[str], kind: str, server: str | None, workers: int
) -> tuple[list[str], int]:
    from tests.api.conftest import PASSWORD, add_user
    from tests.e2e.live import free_port
    from tests.load_probe import TABLE_HEADER, burst, reviewers, sign_in
    from tests.server_process import start_server, stop_server

    url = imported_database(root, server, "load")
    for n in range(REVIEWERS):
        add_user(url, f"load{n}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(root, url, port, workers=workers)
    try:
        sessions = [sign_in(base, f"load{n}", PASSWORD) for n in range(REVIEWERS)]
        # The baseline, in the same run: one reviewer alone, no think time.
        alone = reviewers(base, sessions[:1], key_slices, seconds=10, think_s=(0, 0), pages=600, seed=1)
        steady = reviewers(base, sessions, key_slices, seconds=SECONDS, think_s=THINK_S, pages=600)
        peak = burst(base, sessions, key_slices, BURST)
    finally:
        stop_server(proc)
    errors = steady.errors + peak.errors
    title = (
        f"{kind}, {workers} worker process(es): {REVIEWERS} reviewers for {SECONDS:.0f} s, "
        f"{steady.requests} requests ({steady.requests / steady.seconds:.0f}/s), {steady.errors} errors; "
        f"burst of {BURST} simultaneous in {peak.seconds:.1f} s, {peak.errors} errors"
    )
    lines = [title, "", *TABLE_HEADER, *steady.table(alone), *peak.table(alone)]
    print("\n".join(lines), flush=True)
    for problem in (steady.problems + peak.problems)[:10]:
        print("  problem:", problem)
    return lines, errors


def main(argv: list[str]) -> int:
    """Run on SQLite (1 process) and PostgreSQL (PG_WORKERS processes) when set; record; 1 on any error."""
    root = Path(tempfile.mkdtemp(prefix="lr-load-"))
    started = time.perf_counter()
    sections: list[str] = []
    failed = False
    try:
        key_slices = _dataset(root)
        backends = [("SQLite", None, 1)]
        if os.environ.get(POSTGRES_ENV):
            backends.append(("PostgreSQL", os.environ[POSTGRES_ENV], PG_WORKERS))
        for kind, server, workers in backends:
            (root / "load.db").unlink(missing_ok=True)
            lines, errors = _run(root, key_slices, kind, server, workers)
            failed |= errors > 0
            sections.append("\n".join(["- " + lines[0], "", *lines[2:], ""]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    record(
        "## Load",
        "`python -m bench bench_load`: a real `lesion-review serve` with the full-size synthetic "
        "DL_info.csv (32,735 lesions); 50 signed-in reviewers each loop over a work-list page, a key slice, "
        "its neighbours, its images and one change (flag/unflag, status), thinking 0.5-2 s between key "
        "slices, for 60 s; then 200 requests released at once. Errors are answers other than 2xx and honest "
        "409 conflicts. The ratio column is p95 under load over one reviewer's p50 alone in the same run.\n",
        f"\n{date.today().isoformat()}, {machine()}, {time.perf_counter() - started:.0f} s:\n\n"
        + "\n".join(sections),
        doc=RELIABILITY_MD,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
