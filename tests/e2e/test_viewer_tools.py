"""More tools in Chromium: length, arrow with a label, moving a whole mark, measuring a box-only lesion."""

from __future__ import annotations

import math
from typing import Any

from tests.e2e.conftest import drag, image_point, open_viewer, viewer_eval
from tests.e2e.live import LiveServer


def key_slice(context: Any, file_name: str) -> dict[str, Any]:
    response = context.request.get(f"/api/key-slices/{file_name}")
    assert response.ok, response.text()
    body: dict[str, Any] = response.json()
    return body


def add_box(page: Any, csrf: str, name: str, box: list[float]) -> int:
    """A box-only lesion added through the API (as an accepted prediction would be); returns its id."""
    r = page.context.request.post(
        f"/api/key-slices/{name}/lesions", data={"lesion_type": 2, "box": box}, headers={"X-CSRF-Token": csrf}
    )
    assert r.ok, r.text()
    lesion_id: int = r.json()["lesion_id"]
    return lesion_id


def test_length_and_arrow_measurements(page: Any, server: LiveServer, signed_in: dict[str, Any]) -> None:
    name = server.key_slices[0]
    sx, sy, _ = key_slice(page.context, name)["spacing_mm"]
    open_viewer(page, name)
    page.keyboard.press("t")
    drag(page, image_point(page, 100, 100), image_point(page, 160, 180))
    page.wait_for_selector("#measure-list li[data-measure-id]")
    m = viewer_eval(page, "v.state.measures[0]")
    expected = math.hypot((m["p2"]["x"] - m["p1"]["x"]) * sx, (m["p2"]["y"] - m["p1"]["y"]) * sy)
    assert abs(m["p2"]["x"] - m["p1"]["x"] - 60) < 1.5 and abs(m["p2"]["y"] - m["p1"]["y"] - 80) < 1.5
    assert viewer_eval(page, "v.measureValues(v.state.measures[0]).mm") == expected
    assert f"{expected:.1f} mm" in page.inner_text("#measure-list")

    page.once("dialog", lambda d: d.accept("calcified node"))
    page.keyboard.press("a")
    drag(page, image_point(page, 200, 200), image_point(page, 240, 170))
    page.wait_for_function("window.__viewer.state.measures.length === 2")
    assert viewer_eval(page, "v.state.measures[1].text") == "calcified node"
    assert "arrow" in page.inner_text("#measure-list") and "calcified node" in page.inner_text(
        "#measure-list"
    )
    # Measurements are the reader's own: nothing was written.
    assert len(key_slice(page.context, name)["lesions"]) == viewer_eval(page, "v.state.ks.lesions.length")


def test_drag_moves_a_whole_selected_mark_and_m_measures_a_box_only_lesion(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[0]
    lesion_id = add_box(page, signed_in["csrf_token"], name, [300.0, 300.0, 340.0, 330.0])
    count = len(key_slice(page.context, name)["lesions"])
    open_viewer(page, name)
    page.click(f"#lesion-list li[data-lesion-id='{lesion_id}'] button")
    assert viewer_eval(page, "v.state.selected") == {"kind": "lesion", "id": lesion_id}
    # Grab the box by its bottom edge (not a corner handle) and drag it 12 px right, 8 px down.
    start = image_point(page, 320, 330)
    end = image_point(page, 332, 338)
    drag(page, start, end)
    box_of = f"window.__viewer.state.ks.lesions.find(l => l.id === {lesion_id}).current.box"
    page.wait_for_function(f"{box_of}[0] !== 300")
    moved = next(x for x in key_slice(page.context, name)["lesions"] if x["id"] == lesion_id)["current"][
        "box"
    ]
    dx, dy = moved[0] - 300, moved[1] - 300
    assert abs(dx - 12) < 1.5 and abs(dy - 8) < 1.5, moved
    assert abs((moved[2] - moved[0]) - 40) < 1e-6 and abs((moved[3] - moved[1]) - 30) < 1e-6  # same size

    # M: the next RECIST drawing measures this lesion instead of adding one.
    assert page.is_enabled("#measure-lesion")
    page.click("#measure-lesion")
    x0, y0 = moved[0] + 5, moved[1] + 15
    drag(page, image_point(page, x0, y0), image_point(page, x0 + 30, y0))
    drag(page, image_point(page, x0 + 15, y0 - 8), image_point(page, x0 + 15, y0 + 8))
    page.wait_for_function(
        f"window.__viewer.state.ks.lesions.find(l => l.id === {lesion_id}).current.recist !== null"
    )
    after = key_slice(page.context, name)["lesions"]
    assert len(after) == count
    measured = next(x for x in after if x["id"] == lesion_id)
    r = measured["current"]["recist"]
    assert (
        abs(math.hypot(r[2] - r[0], r[3] - r[1]) - 30) < 2
        and abs(math.hypot(r[6] - r[4], r[7] - r[5]) - 16) < 2
    )
    assert measured["current"]["diameters_mm"] is not None
    assert viewer_eval(page, "v.state.tool") == "pointer"
