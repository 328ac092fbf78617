"""Shared pytest setup: the end-of-run summary of what was skipped and why, printed last."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pytest

from tests.components import REQUIRE_ALL, SKIPPED_COMPONENTS, TESTED_COMPONENTS, skip_reason

# Skip messages of this run's skipped tests, counted.
_SKIPS: Counter[str] = Counter()

# Starlette's TestClient sends `Host: testserver`; the app answers only loopback names by default (tests of
# that default pass allowed_hosts="" explicitly).
os.environ["LESION_REVIEW_ALLOWED_HOSTS"] = "testserver"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count each skipped test by its skip message."""
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _SKIPS[reason.removeprefix("Skipped: ")] += 1


# Under pytest-xdist each worker fills SKIPPED_COMPONENTS/TESTED_COMPONENTS in its own process; it hands
# them to the controller in workeroutput, which merges them before printing the summary.
_WORKER_KEY = "lesion_review_components"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On an xdist worker: send this worker's component findings to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_WORKER_KEY] = json.dumps({"tested": TESTED_COMPONENTS, "skipped": SKIPPED_COMPONENTS})


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the xdist controller: merge a finished worker's component findings into this process's."""
    found = json.loads(getattr(node, "workeroutput", {}).get(_WORKER_KEY, "{}"))
    TESTED_COMPONENTS.update(found.get("tested", {}))
    SKIPPED_COMPONENTS.update(found.get("skipped", {}))


def summary_lines() -> list[tuple[str, bool]]:
    """The end-of-run summary as (line, alarming) pairs; empty when there is nothing to say."""
    lines = [(f"Tested with {name}: {how}", False) for name, how in sorted(TESTED_COMPONENTS.items())]
    if not _SKIPS:
        return lines
    bar = "!" * 78
    lines += [(bar, True), (f"SKIPPED: {sum(_SKIPS.values())} tests did NOT run in this run.", True)]
    if SKIPPED_COMPONENTS:
        lines.append(("These parts of Lesion Review were NOT tested:", True))
    component_reasons = set()
    for name, why in sorted(SKIPPED_COMPONENTS.items()):
        reason = skip_reason(name, why)
        component_reasons.add(reason)
        lines.append((f"  - {name} ({_SKIPS[reason]} tests): {why}", True))
    others = [(reason, n) for reason, n in sorted(_SKIPS.items()) if reason not in component_reasons]
    if others:
        lines.append(("Other skips:", True))
        lines += [(f"  - {n} test{'s' if n > 1 else ''}: {reason}", True) for reason, n in others]
    if SKIPPED_COMPONENTS and not REQUIRE_ALL:
        lines.append(("Set LESION_REVIEW_REQUIRE_ALL=1 (as .ci/run does) to make these failures.", True))
    lines += [("Each skipped test: pytest -rs.", False), (bar, True)]
    return lines


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Print the summary after pytest's last line ("N passed, M skipped"): it is what stays on screen."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    lines = summary_lines()
    if reporter is None or not lines:
        return
    for line, alarming in lines:
        reporter.write_line(line, red=alarming, bold=alarming)
