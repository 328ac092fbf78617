"""The test suite's optional components: finding a local PostgreSQL, and the summary printed last."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import components

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """No remembered answer, no POSTGRES_ENV."""
    components.postgres_server.cache_clear()
    monkeypatch.delenv(components.POSTGRES_ENV, raising=False)
    yield
    components.postgres_server.cache_clear()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_named_server_is_used_as_given(fresh_probe: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(components.POSTGRES_ENV, "postgresql+psycopg://ada@db.example:5433/x")
    assert components.postgres_server()[0] == "postgresql+psycopg://ada@db.example:5433/x"


def test_off_skips_postgresql(fresh_probe: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(components.POSTGRES_ENV, "off")
    assert components.postgres_server() == (None, f"{components.POSTGRES_ENV}=off")


def test_without_a_local_server_the_reason_names_what_was_tried(
    fresh_probe: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/postgres"
    monkeypatch.setattr(components, "LOCAL_POSTGRES_URLS", (url,))
    start = time.perf_counter()
    server, why = components.postgres_server()
    assert server is None
    assert url in why and components.POSTGRES_ENV in why
    assert time.perf_counter() - start < components.PROBE_TIMEOUT_S + 1


def test_a_local_server_that_answers_is_used(fresh_probe: None) -> None:
    candidate = components.LOCAL_POSTGRES_URLS[0]
    if components._can_create_databases(candidate) is not None:
        pytest.skip(f"no PostgreSQL at {candidate} on this machine")
    assert components.postgres_server()[0] == candidate


CHILD_CONFTEST = """
from tests.conftest import (  # noqa: F401
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_testnodedown,
    pytest_unconfigure,
)
"""
CHILD_TESTS = """
import pytest
from tests.components import require_component

@pytest.mark.parametrize("i", range(3))
def test_needs_thing(i):
    require_component("thing", False, "thing is not installed here")

def test_other_skip():
    pytest.skip("only on Tuesdays")

def test_runs():
    from tests.components import TESTED_COMPONENTS
    TESTED_COMPONENTS["gizmo"] = "the gizmo on port 1"
"""


def run_child(tmp_path: Path, require_all: bool, workers: int = 0) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CHILD_CONFTEST)
    (tmp_path / "test_child.py").write_text(CHILD_TESTS)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LESION_REVIEW_REQUIRE_ALL": "1" if require_all else ""}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers), "test_child.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "xdist-2-workers"])
def test_skip_summary_is_the_last_thing_pytest_prints(tmp_path: Path, workers: int) -> None:
    # With xdist the components are found in the workers; the controller prints the summary.
    out = run_child(tmp_path, require_all=False, workers=workers).stdout.strip().splitlines()
    stats = next(i for i, line in enumerate(out) if "1 passed, 4 skipped" in line)
    tail = out[stats + 1 :]
    assert tail[0] == "Tested with gizmo: the gizmo on port 1", out
    assert tail[1].startswith("!!!") and tail[-1].startswith("!!!"), out
    assert "SKIPPED: 4 tests did NOT run in this run." in tail
    assert "  - thing (3 tests): thing is not installed here" in tail
    assert "  - 1 test: only on Tuesdays" in tail


def test_require_all_turns_missing_components_into_failures(tmp_path: Path) -> None:
    result = run_child(tmp_path, require_all=True)
    assert result.returncode == 1
    assert "3 failed, 1 passed, 1 skipped" in result.stdout
    assert "thing (" not in result.stdout  # failed, not listed as skipped
