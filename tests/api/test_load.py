"""A short load run against a real server: reviewers with think time, then a burst of signed-in requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.deeplesion.schema import LesionRecord
from tests.api.conftest import PASSWORD, add_user
from tests.e2e.live import free_port
from tests.load_probe import TABLE_HEADER, burst, reviewers, sign_in, stored_key_slices
from tests.server_process import start_server, stop_server

REVIEWERS, SECONDS, BURST = 8, 5.0, 120  # bench/bench_load.py: 50 reviewers for 60 s


@pytest.mark.slow
def test_reviewers_and_a_burst_get_no_errors(
    review_dataset: tuple[Path, list[LesionRecord]], database_url: str
) -> None:
    data_dir, records = review_dataset
    key_slices = sorted({r.file_name for r in records})
    # SQLite: one process, as docs/deployment.md says; PostgreSQL: several worker processes.
    workers = 1 if database_url.startswith("sqlite") else 2
    for n in range(REVIEWERS):
        add_user(database_url, f"load{n}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(data_dir, database_url, port, workers=workers)
    try:
        sessions = [sign_in(base, f"load{n}", PASSWORD) for n in range(REVIEWERS)]
        steady = reviewers(base, sessions, key_slices, seconds=SECONDS, think_s=(0.05, 0.3), pages=1)
        peak = burst(base, sessions, stored_key_slices(data_dir, key_slices), BURST)
    finally:
        stop_server(proc)
    print("\n".join(["", *TABLE_HEADER, *steady.table(), *peak.table()]))
    assert steady.requests >= REVIEWERS * 5, f"only {steady.requests} requests in {SECONDS} s"
    assert steady.errors == 0, steady.problems
    assert {"PUT status", "GET slice png", "GET work list"} <= steady.endpoints.keys()
    assert peak.requests == BURST and peak.errors == 0, peak.problems
