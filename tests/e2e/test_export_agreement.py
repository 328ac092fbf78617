"""A reviewer's whole session in the viewer reaches the corrected exports exactly as the viewer shows it."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import (
    DEFAULT_TIMEOUT_MS,
    api_login,
    drag,
    image_point,
    open_viewer,
    shoot,
    viewer_eval,
)
from tests.e2e.live import ADMIN, REVIEWER, LiveServer, live_server

KS_STATE = "v.state.ks"


@pytest.fixture(scope="module")
def session_server(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of its own: this session's edits, flags and predictions would change what other tests find."""
    with live_server(tmp_path_factory.mktemp("e2e-export-agreement")) as live:
        yield live


@pytest.fixture
def context(browser: Any, session_server: LiveServer) -> Iterator[Any]:
    """A fresh browser profile on this module's own server."""
    ctx = browser.new_context(base_url=session_server.url, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(DEFAULT_TIMEOUT_MS)
    yield ctx
    ctx.close()


def _wait_version_above(page: Any, version: int) -> int:
    page.wait_for_function(f"window.__viewer.state.ks.version > {version}")
    return int(viewer_eval(page, f"{KS_STATE}.version"))


def _floats(cell: str) -> list[float]:
    return [float(v) for v in cell.split(",")]


def _csv(values: list[float]) -> list[float]:
    """The file counts pixels from 1 and keeps 6 decimals (docs/api.md, Coordinates)."""
    return [round(v + 1, 6) for v in values]


def test_edit_confirm_flag_context_add_accept_reject_undo_redo_reach_the_exports_as_shown(
    page: Any, session_server: LiveServer, browser: Any
) -> None:
    api_login(page.context, REVIEWER)
    page.on("dialog", lambda dialog: dialog.accept())  # a duplicate warning, should the model hit a lesion
    server = session_server
    name = server.key_slices[0]
    open_viewer(page, name)
    ks = viewer_eval(page, KS_STATE)
    key = ks["key_slice_index"]
    version = ks["version"]
    target = next(le for le in ks["lesions"] if le["origin"] == "csv" and le["current"]["recist"])

    # Edit: move the long axis end point; then confirm (Y) and flag (F) with a reason and a note.
    r = target["current"]["recist"]
    page.click(f"#lesion-list li[data-lesion-id='{target['id']}'] button")
    drag(page, image_point(page, r[2], r[3]), image_point(page, r[2] + 6, r[3] + 4))
    version = _wait_version_above(page, version)
    page.focus("#viewport")
    page.keyboard.press("y")
    version = _wait_version_above(page, version)
    page.keyboard.press("f")
    page.wait_for_selector("#flag-dialog[open]")
    page.check("input[name='reason'][value='other']")
    page.fill("#flag-text", "rim, not the lesion")
    page.click("#flag-ok")
    version = _wait_version_above(page, version)

    # Add a box on a context slice two below the key slice.
    page.focus("#viewport")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"window.__viewer.state.current === {key + 2}")
    page.keyboard.press("b")
    drag(page, image_point(page, 30, 30), image_point(page, 70, 64))
    version = _wait_version_above(page, version)
    page.keyboard.press("k")
    # A box drawn on the key slice and deleted again must not reach the export.
    drag(page, image_point(page, 20, 90), image_point(page, 44, 110))
    version = _wait_version_above(page, version)
    page.keyboard.press("Escape")
    page.keyboard.press("Delete")
    version = _wait_version_above(page, version)

    # Predict; accept the selected prediction (Enter), reject another (Delete); undo the reject, redo it.
    page.fill("#threshold", "0.05")
    page.dispatch_event("#threshold", "input")
    page.click("#predict")
    page.wait_for_selector("#viewer[data-predicted='1']")
    pending = viewer_eval(page, f"{KS_STATE}.predictions.filter(p => p.status === 'pending').length")
    assert pending >= 2, viewer_eval(page, f"{KS_STATE}.predictions")
    page.locator("#prediction-list li[data-prediction-id] button").first.click()
    page.focus("#viewport")
    page.keyboard.press("Enter")
    version = _wait_version_above(page, version)
    page.locator("#prediction-list li[data-prediction-id] button").first.click()
    rejected = viewer_eval(page, "v.state.selected.id")
    page.focus("#viewport")
    page.keyboard.press("Delete")  # Delete rejects a selected prediction; Esc only cancels (OHIF's habit)
    version = _wait_version_above(page, version)
    page.keyboard.press("Control+z")
    version = _wait_version_above(page, version)
    status = f"{KS_STATE}.predictions.find(p => p.id === {rejected}).status"
    assert viewer_eval(page, status) == "pending"
    page.keyboard.press("Control+y")
    version = _wait_version_above(page, version)
    assert viewer_eval(page, status) == "rejected"
    shoot(page, "viewer-session-before-export")

    shown = viewer_eval(page, f"{KS_STATE}.lesions")
    flagged = next(le for le in shown if le["id"] == target["id"])
    assert flagged["flag"]["note"] == "rim, not the lesion" and flagged["edited"] and flagged["confirmed"]
    assert flagged["layer"] == "corrected"
    assert any(le["current"]["slice_index"] == key + 2 for le in shown)
    # Accepting keeps the prediction's RECIST proposal: the lesion is measured (and exported so below).
    accepted = [le for le in shown if le["origin"] == "prediction"]
    proposals = {p["id"]: p["recist"] for p in viewer_eval(page, f"{KS_STATE}.predictions")}
    assert accepted and all(
        le["measured"] and le["current"]["recist"] == proposals[le["prediction"]["id"]] for le in accepted
    )

    # The admin downloads the exports; every lesion the viewer shows is there, exactly as shown.
    admin = browser.new_context(base_url=server.url)
    try:
        api_login(admin, ADMIN)
        text = admin.request.get("/api/exports/dl_info.csv?state=corrected&extras=1").text()
        coco = json.loads(admin.request.get("/api/exports/coco.json?state=corrected").text())
    finally:
        admin.close()
    rows = {int(row["Lesion_id"]): row for row in csv.DictReader(io.StringIO(text))}
    anns = {a["attributes"]["lesion_id"]: a for a in coco["annotations"]}
    images = {i["id"]: i for i in coco["images"]}
    folder = name.rsplit("_", 1)[0]
    for le in shown:
        row, ann, g = rows[le["id"]], anns[le["id"]], le["current"]
        on_slice = f"{folder}_{g['slice_index']:03d}.png"
        assert row["File_name"] == on_slice and int(row["Key_slice_index"]) == g["slice_index"]
        assert _floats(row["Bounding_boxes"]) == _csv(g["box"])
        recist = _floats(row["Measurement_coordinates"])
        if g["recist"] is None:
            assert all(math.isnan(v) for v in recist) and ann["num_keypoints"] == 0
        else:
            assert recist == _csv(g["recist"]) and ann["recist"] == g["recist"]
        assert int(row["Possibly_noisy"]) == (le["flag"] is not None) == ann["attributes"]["possibly_noisy"]
        assert row["Flag_reason"] == (le["flag"]["reason"] if le["flag"] else "")
        assert row["Flag_note"] == (le["flag"]["note"] if le["flag"] else "")
        assert row["Review_state"] == le["review"] and row["Origin"] == le["origin"]
        assert int(row["Coarse_lesion_type"]) == g["lesion_type"]
        x1, y1, x2, y2 = g["box"]
        assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
        assert images[ann["image_id"]]["file_name"] == f"Images_png/{folder}/{g['slice_index']:03d}.png"
    # Nothing of this key slice is exported that the viewer does not show (deleted lesions, say).
    history = page.context.request.get(f"/api/key-slices/{name}/history").json()
    touched = {e["lesion_id"] for e in history if e["lesion_id"] is not None}
    assert touched - {le["id"] for le in shown}, "the deleted box should be in the history"
    assert not (touched - {le["id"] for le in shown}) & set(rows)
