"""Browser tests: one live server on synthetic data for the session, a fresh Chromium context per test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.components import require_component
from tests.e2e.live import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CONTEXT_OPTIONS,
    REVIEWER,
    LiveServer,
    chromium_available,
    live_server,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
DEFAULT_TIMEOUT_MS = 15_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder drives a real browser."""
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app on a tiny synthetic dataset, migrated SQLite, two reviewers and a tiny ONNX detector."""
    require_component("chromium", chromium_available(), f"{CHROMIUM} not found (apt-get install chromium)")
    with live_server(tmp_path_factory.mktemp("e2e")) as live:
        yield live


@pytest.fixture(scope="session")
def browser(server: LiveServer) -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        real_new_context = chromium.new_context

        def new_context(**kwargs: Any) -> Any:
            return real_new_context(**{**CONTEXT_OPTIONS, **kwargs})

        chromium.new_context = new_context
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Any, server: LiveServer) -> Iterator[Any]:
    """A fresh browser profile at 1280x800."""
    ctx = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A page whose uncaught script errors fail the test; a screenshot is saved when the test ends."""
    pg = context.new_page()
    # Failed requests (404, 409) are part of some tests and show up as console errors; exceptions never are.
    uncaught: list[str] = []
    pg.on("pageerror", lambda exc: uncaught.append(str(exc)))
    yield pg
    shoot(pg, f"{request.node.name}-end")
    assert not uncaught, uncaught


def shoot(page: Any, name: str) -> Path:
    """Save a screenshot under test-artifacts/e2e/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path))
    return path


def api_login(context: Any, user: tuple[str, str] = REVIEWER) -> dict[str, Any]:
    """Sign the browser context in through the API (shares the cookie jar with its pages)."""
    response = context.request.post("/api/auth/login", data={"username": user[0], "password": user[1]})
    assert response.ok, response.text()
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def signed_in(context: Any) -> dict[str, Any]:
    """The first reviewer, signed in; returns the login answer (user, csrf_token)."""
    return api_login(context)


def open_viewer(page: Any, file_name: str, query: str = "") -> None:
    """Open a key slice and wait until its first image is on the canvas."""
    page.goto(f"/viewer/{file_name}{query}")
    page.wait_for_selector("#viewer[data-ready='1']")
    page.wait_for_function("document.getElementById('viewer').dataset.shownSlice !== undefined")


def viewer_eval(page: Any, expression: str) -> Any:
    """Evaluate an expression against the viewer's test hook window.__viewer."""
    return page.evaluate(f"(() => {{ const v = window.__viewer; return {expression}; }})()")


def image_point(page: Any, x: float, y: float) -> tuple[float, float]:
    """Client coordinates of an image pixel position."""
    p = viewer_eval(page, f"v.imageToClient({x}, {y})")
    return p["x"], p["y"]


def drag(
    page: Any, start: tuple[float, float], end: tuple[float, float], *, button: str = "left", steps: int = 8
) -> None:
    """A real mouse drag between two client points."""
    page.mouse.move(*start)
    page.mouse.down(button=button)
    page.mouse.move(*end, steps=steps)
    page.mouse.up(button=button)
