"""ROI statistics and the HU probe in Chromium, checked against numpy on the same slice read by the app.

The expected numbers come from the PNG through the app's own reader (SliceStore: PNG - 32768 = HU) and the
membership rule documented in static/js/roi.js: a pixel belongs when its centre (i + 0.5, j + 0.5) is inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.conftest import drag, image_point, open_viewer, viewer_eval
from tests.e2e.live import LiveServer


def key_slice_json(page: Any, name: str) -> dict[str, Any]:
    """The key slice as the API sees it now."""
    body: dict[str, Any] = page.context.request.get(f"/api/key-slices/{name}").json()
    return body


def members(shape: str, box: list[float], h: int, w: int) -> np.ndarray:
    """The roi.js membership rule in numpy: pixel centres inside the rectangle or its inscribed ellipse."""
    x0, y0, x1, y1 = box
    cx, cy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    if shape == "rectangle":
        return (cx >= x0) & (cx <= x1) & (cy >= y0) & (cy <= y1)
    rx, ry = (x1 - x0) / 2, (y1 - y0) / 2
    return ((cx - (x0 + rx)) / rx) ** 2 + ((cy - (y0 + ry)) / ry) ** 2 <= 1


@pytest.mark.parametrize(("key", "shape"), [("e", "ellipse"), ("g", "rectangle")])
def test_roi_statistics_equal_numpy_on_the_same_slice(
    page: Any, server: LiveServer, signed_in: dict[str, Any], key: str, shape: str
) -> None:
    from app.deeplesion.store import SliceStore

    name = server.key_slices[0]
    ks = page.context.request.get(f"/api/key-slices/{name}").json()
    hu = (
        SliceStore(server.data_dir)
        .read_hu_slice(ks["series_folder"], ks["key_slice_index"])
        .astype(np.float64)
    )
    h, w = hu.shape
    open_viewer(page, name)
    page.keyboard.press(key)
    # Fractional corners on purpose: the rule decides the edge pixels, not the mouse's rounding.
    drag(
        page,
        image_point(page, w * 0.31 + 0.3, h * 0.42 + 0.7),
        image_point(page, w * 0.47 + 0.2, h * 0.55 + 0.9),
    )
    page.wait_for_selector("#measure-list li[data-measure-id]")
    measure = viewer_eval(page, "v.state.measures[0]")
    assert measure["kind"] == shape and measure["slice"] == ks["key_slice_index"]
    inside = members(shape, measure["box"], h, w)
    values = hu[inside]
    assert values.size > 100
    item = page.locator("#measure-list li[data-measure-id]").first
    got = {k: float(item.get_attribute(f"data-{k}")) for k in ("n", "mean", "sd", "min", "max", "area")}
    assert got["n"] == values.size
    assert got["min"] == values.min() and got["max"] == values.max()
    assert got["mean"] == pytest.approx(values.mean(), abs=1e-6)
    assert got["sd"] == pytest.approx(values.std(), abs=1e-6)
    sx, sy = ks["spacing_mm"][:2]
    assert got["area"] == pytest.approx(values.size * sx * sy, rel=1e-9)
    text = item.inner_text()
    assert f"mean {values.mean():.1f}" in text and f"{values.size * sx * sy:.1f} mm²" in text


def test_probe_shows_the_hu_of_the_clicked_pixel_and_stays_with_its_slice(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    from app.deeplesion.store import SliceStore

    name = server.key_slices[0]
    ks = page.context.request.get(f"/api/key-slices/{name}").json()
    hu = SliceStore(server.data_dir).read_hu_slice(ks["series_folder"], ks["key_slice_index"])
    open_viewer(page, name)
    page.keyboard.press("o")
    x, y = 201, 233
    page.mouse.click(*image_point(page, x + 0.5, y + 0.5))
    page.wait_for_selector("#measure-list li[data-measure-id]")
    assert f"HU {int(hu[y, x])} at ({x}, {y})" in page.inner_text("#measure-list")
    # Scrolling away keeps the probe's value: it belongs to the slice it was placed on.
    page.hover("#viewport")
    page.mouse.wheel(0, 120)
    page.wait_for_function(
        f"document.getElementById('viewer').dataset.shownSlice !== '{ks['key_slice_index']}'"
    )
    assert f"HU {int(hu[y, x])} at ({x}, {y})" in page.inner_text("#measure-list")
    page.click("#measure-list button")
    assert page.locator("#measures").is_hidden()


def test_measurement_panel_matches_the_api_centres_a_lesion_and_its_csv_matches_the_panel(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    import csv
    import io

    from app.deeplesion.schema import LESION_TYPES
    from app.review.vocabulary import ALL_FLAG_REASONS, REVIEW_STATES

    name = server.key_slices[0]
    ks = page.context.request.get(f"/api/key-slices/{name}").json()
    target = ks["lesions"][0]
    flagged_here = target["flag"] is None
    if flagged_here:  # a flagged lesion shows its reason and who flagged it
        r = page.context.request.post(
            f"/api/lesions/{target['id']}/flag",
            data={"version": target["version"], "reason": "other", "note": "panel check"},
            headers={"X-CSRF-Token": signed_in["csrf_token"]},
        )
        assert r.ok, r.text()
    ks = page.context.request.get(f"/api/key-slices/{name}").json()
    open_viewer(page, name)

    panel: dict[int, dict[str, str]] = {}
    for lesion in ks["lesions"]:
        item = page.locator(f"#lesion-list li[data-lesion-id='{lesion['id']}']")
        row = item.evaluate("e => ({...e.dataset})")
        panel[lesion["id"]] = row
        g = lesion["current"]
        assert row["type"] == LESION_TYPES[g["lesion_type"]]
        assert row["state"] == REVIEW_STATES[lesion["review"]]
        if g["diameters_mm"]:
            assert (
                float(row["longMm"]) == g["diameters_mm"][0] and float(row["shortMm"]) == g["diameters_mm"][1]
            )
            assert f"{g['diameters_mm'][0]:.1f} × {g['diameters_mm'][1]:.1f} mm" in item.inner_text()
        flag = lesion["flag"]
        assert row["flagReason"] == (ALL_FLAG_REASONS[flag["reason"]] if flag else "")
    flagged = panel[target["id"]]
    flag_write = ks["lesions"][0]
    assert flagged["by"] == "alice" and flagged["at"] in (flag_write["flag"]["at"], flag_write["updated_at"])
    assert "alice" in page.locator(f"#lesion-list li[data-lesion-id='{target['id']}']").inner_text()

    # Clicking a lesion out of view centres it (one in view stays where it is).
    b = target["current"]["box"]
    vp = page.locator("#viewport").bounding_box()
    centre = image_point(page, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    # Shift+drag the lesion's centre past the viewport's right edge: it is out of view now.
    page.keyboard.down("Shift")
    drag(page, centre, (vp["x"] + vp["width"] + 200, centre[1]))
    page.keyboard.up("Shift")
    assert image_point(page, b[0], b[1])[0] > vp["x"] + vp["width"]
    page.click(f"#lesion-list li[data-lesion-id='{target['id']}'] button")
    cx, cy = image_point(page, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    box = page.locator("#viewport").bounding_box()
    assert abs(cx - (box["x"] + box["width"] / 2)) < 1.5 and abs(cy - (box["y"] + box["height"] / 2)) < 1.5

    with page.expect_download() as info:
        page.click("#download-csv")
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8"))))
    assert [int(r["lesion_id"]) for r in rows] == [lesion["id"] for lesion in ks["lesions"]]
    for r in rows:
        shown = panel[int(r["lesion_id"])]
        assert r["file_name"] == name
        for column, key in (
            ("type", "type"),
            ("long_mm", "longMm"),
            ("short_mm", "shortMm"),
            ("state", "state"),
            ("flag_reason", "flagReason"),
            ("flag_note", "flagNote"),
            ("by", "by"),
            ("at", "at"),
        ):
            assert r[column] == shown[key], (column, r, shown)

    page.click("#show-history")
    page.wait_for_selector("#history-dialog[open]")
    history = page.context.request.get(f"/api/key-slices/{name}/history").json()
    assert page.locator("#history-rows tr").count() == len(history) > 0
    newest = history[-1]
    assert page.locator("#history-rows tr").first.get_attribute("data-entry-id") == str(newest["id"])
    assert newest["action"].replace("_", " ") in page.locator("#history-rows tr").first.inner_text()
    page.click("#history-close")
    if flagged_here:  # leave the shared server's key slice as found (other files look for unflagged lesions)
        now = next(x for x in key_slice_json(page, name)["lesions"] if x["id"] == target["id"])
        r = page.context.request.post(
            f"/api/lesions/{target['id']}/unflag",
            data={"version": now["version"]},
            headers={"X-CSRF-Token": signed_in["csrf_token"]},
        )
        assert r.ok, r.text()
