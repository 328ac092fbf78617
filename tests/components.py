"""Optional test components (PostgreSQL, Chromium, torch): skip loudly on a laptop, fail in CI."""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("LESION_REVIEW_REQUIRE_ALL", "") not in ("", "0", "false", "no")

# Filled while the run goes; printed as a banner at the end of the run.
SKIPPED_COMPONENTS: dict[str, str] = {}


def require_component(name: str, available: bool, why: str) -> None:
    """Skip (laptop) or fail (LESION_REVIEW_REQUIRE_ALL=1) the calling test when a component is absent."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{name} is required (LESION_REVIEW_REQUIRE_ALL=1) but unavailable: {why}", pytrace=False)
    SKIPPED_COMPONENTS[name] = why
    pytest.skip(f"{name} unavailable: {why}")
