"""Cine in Chromium: stored slices only, at about the chosen rate; pause, Esc or a tool stops it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.conftest import open_viewer
from tests.e2e.live import LiveServer

RAW_RE = re.compile(r"/api/slices/(\d{6}_\d{2}_\d{2})_(\d{3,4})\.raw")

# Every change of the shown slice, with its time, recorded in the page (no polling gaps).
RECORD = """() => {
  window.__shownLog = [];
  new MutationObserver(() => {
    const d = document.getElementById('viewer').dataset;
    window.__shownLog.push([parseInt(d.shownSlice, 10), performance.now()]);
  }).observe(document.getElementById('viewer'), {attributes: true, attributeFilter: ['data-shown-slice']});
}"""


def shown_log(page: Any) -> list[tuple[int, float]]:
    """The (slice, ms) changes recorded so far, consecutive repeats dropped."""
    log: list[tuple[int, float]] = []
    for index, t in page.evaluate("window.__shownLog"):
        if not log or log[-1][0] != index:
            log.append((index, t))
    return log


def raw_requests(page: Any) -> list[tuple[str, int]]:
    """Records (series, index) of every raw slice request from now on."""
    seen: list[tuple[str, int]] = []

    def on_request(request: Any) -> None:
        m = RAW_RE.search(request.url)
        if m:
            seen.append((m.group(1), int(m.group(2))))

    page.on("request", on_request)
    return seen


@pytest.mark.parametrize("fps", [8, 20])
def test_cine_plays_stored_slices_only_at_the_chosen_rate_and_pause_stops_it(
    page: Any, server: LiveServer, signed_in: dict[str, Any], fps: int
) -> None:
    name = server.key_slices[0]
    ks = page.context.request.get(f"/api/key-slices/{name}").json()
    stored = ks["stored_slices"]
    gaps = [(a, b) for a, b in zip(stored, stored[1:], strict=False) if b - a > 1]
    assert len(stored) >= 3 and gaps, "the series should store slices with unstored indices between them"
    requests = raw_requests(page)
    # Prefetch off: every slice request comes from cine itself.
    open_viewer(page, name, "?prefetch=0")
    page.evaluate(RECORD)
    page.fill("#cine-fps", str(fps))
    page.dispatch_event("#cine-fps", "input")
    assert page.inner_text("#cine-fps-value") == f"{fps} fps"
    # The slider keeps the keys while focused (as every input does): the reader goes back to the image.
    page.focus("#viewport")
    page.keyboard.press("c")
    assert page.get_attribute("#viewer", "data-cine") == "playing"
    page.wait_for_timeout(2500)
    page.keyboard.press("c")
    assert page.get_attribute("#viewer", "data-cine") == "paused"
    # A slice cine asked for just before the pause may still be loading; once the slice on screen is the
    # current one, nothing may change any more.
    page.wait_for_function(
        "window.__viewer.state.current === parseInt(document.querySelector('#viewer').dataset.shownSlice, 10)"
    )
    log = shown_log(page)
    page.wait_for_timeout(600)
    assert shown_log(page) == log, "pause stops cine"

    indices = [i for i, _ in log]
    assert set(indices) <= set(stored)
    # Each frame is the next stored slice, wrapping at the end: an unstored index is never shown.
    for a, b in zip(indices, indices[1:], strict=False):
        assert b == stored[(stored.index(a) + 1) % len(stored)], (a, b)
    assert len(set(indices)) > 2
    # The rate: frames per second between the first and last change, within a loaded machine's slack.
    elapsed_s = (log[-1][1] - log[0][1]) / 1000
    rate = (len(log) - 1) / elapsed_s
    assert 0.6 * fps <= rate <= 1.15 * fps, (rate, fps)
    series_requests = {index for series, index in requests if series == ks["series_folder"]}
    assert series_requests <= set(stored), sorted(series_requests - set(stored))
    assert series_requests >= set(indices) - {ks["key_slice_index"]}


def test_cine_stops_on_esc_and_on_a_drawing_tool_and_is_in_the_key_map(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    open_viewer(page, server.key_slices[0])
    page.click("#cine")
    assert page.get_attribute("#viewer", "data-cine") == "playing"
    page.keyboard.press("Escape")
    assert page.get_attribute("#viewer", "data-cine") == "paused"
    page.keyboard.press("c")
    assert page.get_attribute("#cine", "aria-pressed") == "true"
    page.keyboard.press("x")
    assert page.get_attribute("#viewer", "data-cine") == "paused"
    assert page.get_attribute("#cine", "aria-pressed") == "false"
    page.keyboard.press("Escape")
    page.click("#cine")
    page.click(".tool[data-tool='box']")
    assert page.get_attribute("#viewer", "data-cine") == "paused"
    # The key map dialog lists the cine key: C, as in OHIF.
    page.keyboard.press("Escape")
    page.keyboard.press("?")
    row = page.locator("#keymap-rows tr", has_text="Cine: play")
    assert row.locator("kbd").inner_text() == "C"
    page.keyboard.press("Escape")
    # [ and ] change the rate within the control's range.
    page.fill("#cine-fps", "29")
    page.dispatch_event("#cine-fps", "input")
    page.focus("#viewport")
    page.keyboard.press("]")
    page.keyboard.press("]")
    assert page.inner_text("#cine-fps-value") == "30 fps"
