"""Volume candidates in Chromium: open one from the list on its slice with its box, add it; dismiss one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.db.models import Series
from app.db.session import make_engine, make_session_factory
from app.deeplesion.errors import SliceNotFoundError
from app.detection.decode import Detection
from app.review.volume import run_volume_screen
from tests.e2e.conftest import DEFAULT_TIMEOUT_MS, api_login, shoot
from tests.e2e.live import REVIEWER, LiveServer, live_server

DOC_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
CORNER_A = (70.0, 170.0, 110.0, 210.0)  # outside the body: matches no marked lesion
CORNER_B = (440.0, 430.0, 480.0, 470.0)


class CornerDetector:
    """Two made-up lesions: A on three slices of the first series (widest on the middle one), B on two."""

    model_version = "e2e-volume"
    provider = "fake"

    def __init__(self, a_slices: Sequence[int], b_slices: Sequence[int], folder: str) -> None:
        self.a, self.b, self.folder = list(a_slices), list(b_slices), folder

    def predict(
        self, file_name: str, store: Any, *, spacing_mm: Any, threshold: float = 0.05
    ) -> list[Detection]:
        """The corner boxes on their slices of the first series."""
        if not store.exists(file_name):
            raise SliceNotFoundError(file_name)
        folder, _, rest = file_name.rpartition("_")
        index = int(rest[:-4])
        out = []
        if folder == self.folder and index in self.a:
            grow = 4.0 if index == self.a[1] else 0.0
            x1, y1, x2, y2 = CORNER_A
            out.append(Detection((x1 - grow, y1 - grow, x2 + grow, y2 + grow), 0.9))
        if folder == self.folder and index in self.b:
            out.append(Detection(CORNER_B, 0.6))
        return out


@pytest.fixture(scope="module")
def volume_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, Any]]]:
    """A server of its own (adding a candidate adds a lesion), screened by CornerDetector."""
    with live_server(
        tmp_path_factory.mktemp("e2e-volume"), patients=1, max_studies=1, with_model=False
    ) as live:
        engine = make_engine(live.database_url)
        with make_session_factory(engine)() as s:
            folder, stored = s.execute(
                select(Series.folder, Series.stored_slices).order_by(Series.folder)
            ).first()  # type: ignore[misc]
        engine.dispose()
        stored = sorted(stored)
        # Off the middle (often a key slice): a candidate on a slice that is not a key slice.
        i = len(stored) // 2 + 5
        mid = stored[i]
        detector = CornerDetector([stored[i - 1], mid, stored[i + 1]], [stored[0], stored[1]], folder)
        run_volume_screen(
            database_url=live.database_url, data_dir=live.data_dir, detector=detector, progress=False
        )
        yield live, {"a_slice": mid, "b_slice": stored[0]}


def test_a_reviewer_adds_one_candidate_on_its_slice_and_dismisses_another(
    browser: Any, volume_server: tuple[LiveServer, dict[str, Any]]
) -> None:
    live, where = volume_server
    ctx = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
    uncaught: list[str] = []
    api_login(ctx, REVIEWER)
    page = ctx.new_page()
    page.on("pageerror", lambda exc: uncaught.append(str(exc)))
    page.goto("/volume")
    page.wait_for_selector("body[data-ready='1']")
    assert page.get_attribute("body", "data-candidates") == "2"
    assert "Last screen: job" in page.inner_text("#volume-last")
    rows = page.locator("#candidates tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("td").nth(3).inner_text() == str(where["a_slice"])  # best first, largest slice
    shot(page, "ui_volume_candidates")

    # Open the best one: the viewer is on its largest slice with its box drawn.
    rows.nth(0).get_by_role("link").click()
    page.wait_for_selector("#viewer[data-candidate]")
    page.wait_for_function(f"document.getElementById('viewer').dataset.shownSlice === '{where['a_slice']}'")
    assert page.inner_text("#candidate-status").startswith("Status: to review")
    assert page.evaluate("window.__viewer.state.ks.key_slice_index") != where["a_slice"]
    shot(page, "ui_volume_viewer")
    page.select_option("#new-type", "3")
    page.click("#candidate-add")
    page.wait_for_selector("#viewer[data-candidate-status='added']")
    lesions = page.evaluate(
        "window.__viewer.state.ks.lesions.map((l) => [l.current.slice_index, l.current.box, l.current.lesion_type])"  # noqa: E501
    )
    x1, y1, x2, y2 = CORNER_A
    assert [where["a_slice"], [x1 - 4, y1 - 4, x2 + 4, y2 + 4], 3] in lesions
    # The viewer draws the lesions of the slice it shows: the new one is drawn on this slice.
    assert page.evaluate("window.__viewer.state.current") == where["a_slice"]
    assert f"by {REVIEWER[0]}" in page.inner_text("#candidate-status")
    shot(page, "ui_volume_added")
    assert page.is_disabled("#candidate-add")
    # Undo in the viewer removes the lesion: the panel follows (the candidate is to review again), and redo.
    page.click("#undo")
    page.wait_for_selector("#viewer[data-candidate-status='pending']")
    assert page.inner_text("#candidate-status").startswith("Status: to review")
    assert not page.is_disabled("#candidate-add")
    page.click("#redo")
    page.wait_for_selector("#viewer[data-candidate-status='added']")
    assert page.is_disabled("#candidate-add")

    # Back to the list: the other one, dismissed.
    page.click("#candidate-back")
    page.wait_for_selector("body[data-ready='1']")
    assert page.get_attribute("body", "data-candidates") == "1"
    page.locator("#candidates tbody tr").nth(0).get_by_role("link").click()
    page.wait_for_selector("#viewer[data-candidate]")
    page.click("#candidate-dismiss")
    page.wait_for_selector("#viewer[data-candidate-status='dismissed']")
    page.goto("/volume")
    page.wait_for_selector("body[data-ready='1']")
    assert page.get_attribute("body", "data-candidates") == "0"
    page.select_option("#candidate-status-filter", "dismissed")
    page.wait_for_function("document.querySelectorAll('#candidates tbody tr').length === 1")
    assert REVIEWER[0] in page.inner_text("#candidates tbody")
    ctx.close()
    assert not uncaught, uncaught


def shot(page: Any, name: str) -> None:
    """A screenshot in test-artifacts, copied to docs/images (the README shows them)."""
    path = shoot(page, name)
    DOC_IMAGES.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, DOC_IMAGES / f"{name}.png")
