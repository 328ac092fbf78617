"""Crash safety at full size: 10 SIGKILLs while 20 clients write, on SQLite and PostgreSQL when set."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

from bench.common import RELIABILITY_MD, imported_database, machine, record

ROUNDS = 10
POSTGRES_ENV = "LESION_REVIEW_TEST_POSTGRES_URL"


def _run(kind: str, server: str | None) -> tuple[int, int, int]:
    from tests.api.conftest import PASSWORD, add_user
    from tests.api.review_data import build_review_dataset
    from tests.crash_probe import kill_round

    root = Path(tempfile.mkdtemp(prefix=f"lr-crash-{kind}-"))
    try:
        build_review_dataset(root)
        url = imported_database(root, server, "crash")
        users = [(f"crash{i}", PASSWORD) for i in range(4)]
        for name, _ in users:
            add_user(url, name, "reviewer")
        acked = lost = bad = 0
        for n in range(ROUNDS):
            result = kill_round(root, url, users)
            acked += result.acknowledged
            lost += len(result.missing) + len(result.without_audit)
            bad += result.integrity != "ok"
            print(f"{kind} round {n + 1}: {result.acknowledged} acknowledged, {len(result.missing)} lost")
        return acked, lost, bad
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Run the rounds; record the totals in docs/reliability.md; exit 1 if anything acknowledged was lost."""
    lines = []
    failed = False
    started = time.perf_counter()
    backends = [("sqlite", None)]
    if os.environ.get(POSTGRES_ENV):
        backends.append(("postgresql", os.environ[POSTGRES_ENV]))
    for kind, server in backends:
        acked, lost, bad = _run(kind, server)
        failed |= bool(lost or bad)
        # The baseline is what the clients were told: every acknowledged write must be there (ratio 1.0).
        kept = (acked - lost) / acked if acked else float("nan")
        lines.append(
            f"- {kind}: {ROUNDS} SIGKILLs, {acked} acknowledged lesion adds, {lost} lost or unaudited, "
            f"integrity failures {bad}; kept/acknowledged ratio {kept:.3f}"
        )
        print(lines[-1])
    entry = f"{date.today().isoformat()}, {machine()}, {time.perf_counter() - started:.0f} s:\n" + "\n".join(
        lines
    )
    record(
        "## Crash safety",
        "`python -m bench bench_crash`: a real `lesion-review serve` is SIGKILLed while 20 clients add "
        "lesions, "
        "then restarted; every write it acknowledged (201) must be there with its audit entry.\n",
        entry,
        doc=RELIABILITY_MD,
    )
    return 1 if failed else 0
