"""SIGKILL a real server while 20 clients write: every acknowledged write survives with its audit entry."""

from __future__ import annotations

from pathlib import Path

from app.deeplesion.schema import LesionRecord
from tests.api.conftest import PASSWORD, add_user
from tests.crash_probe import kill_round

ROUNDS = 2  # repeated, on each backend; bench/bench_crash.py runs 10


def test_acknowledged_writes_survive_repeated_sigkills_with_their_audit_entries(
    review_dataset: tuple[Path, list[LesionRecord]], database_url: str
) -> None:
    users = [(f"crash{i}", PASSWORD) for i in range(4)]
    for name, _ in users:
        add_user(database_url, name, "reviewer")
    total = 0
    for round_no in range(ROUNDS):
        result = kill_round(review_dataset[0], database_url, users)
        total += result.acknowledged
        assert result.acknowledged > 0, f"round {round_no}: no write was acknowledged before the kill"
        assert result.missing == [], f"round {round_no}: acknowledged lesions lost: {result.missing}"
        assert result.without_audit == [], f"round {round_no}: no audit entry for {result.without_audit}"
        assert result.integrity == "ok", f"round {round_no}: {result.integrity}"
    assert total >= ROUNDS
