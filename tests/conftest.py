"""Shared pytest setup: the loud banner for skipped components."""

from __future__ import annotations

from tests.components import REQUIRE_ALL, SKIPPED_COMPONENTS


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """Say loudly which components were not tested."""
    if not SKIPPED_COMPONENTS:
        return
    bar = "!" * 78
    tr = terminalreporter
    tr.write_line(bar, red=True, bold=True)
    title = "SKIPPED COMPONENTS: these parts of Lesion Review were NOT tested in this run:"
    tr.write_line(title, red=True, bold=True)
    for name, why in sorted(SKIPPED_COMPONENTS.items()):
        tr.write_line(f"  - {name}: {why}", red=True, bold=True)
    if not REQUIRE_ALL:
        tr.write_line("Set LESION_REVIEW_REQUIRE_ALL=1 (as .ci/run does) to make these failures.", red=True)
    tr.write_line(bar, red=True, bold=True)
