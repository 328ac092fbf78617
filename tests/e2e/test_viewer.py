"""The slice viewer in Chromium: windowing from raw HU, context scrolling, drawing, flagging, predictions."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import drag, image_point, open_viewer, shoot, viewer_eval
from tests.e2e.live import LiveServer


def key_slice(context: Any, file_name: str) -> dict[str, Any]:
    """The key slice as the API sees it now."""
    response = context.request.get(f"/api/key-slices/{file_name}")
    assert response.ok, response.text()
    body: dict[str, Any] = response.json()
    return body


def live_lesions(ks: dict[str, Any]) -> list[dict[str, Any]]:
    """The key slice's lesions; the API leaves deleted ones out, and nothing may say "deleted"."""
    assert all(lesion["review"] != "deleted" for lesion in ks["lesions"]), ks["lesions"]
    return list(ks["lesions"])


def test_window_preset_and_left_drag_change_canvas_pixels(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    open_viewer(page, server.key_slices[0])
    first = viewer_eval(page, "v.pixelChecksum()")
    renders = viewer_eval(page, "v.stats.renders")

    page.keyboard.press("2")  # lung window
    page.wait_for_function(f"window.__viewer.stats.renders > {renders}")
    assert viewer_eval(page, "v.state.window") == {"center": -600, "width": 1500}
    lung = viewer_eval(page, "v.pixelChecksum()")
    assert lung != first

    page.click("button[data-preset='4']")  # bone, by mouse
    page.wait_for_function("window.__viewer.state.window.width === 2500")
    bone = viewer_eval(page, "v.pixelChecksum()")
    assert bone not in (first, lung)

    # Left drag: horizontal widens the window, vertical raises the centre (about 4 HU per pixel).
    x, y = image_point(page, 200, 200)
    drag(page, (x, y), (x + 50, y + 25))
    window = viewer_eval(page, "v.state.window")
    assert window["width"] > 2500 + 100
    assert window["center"] > 480 + 50
    page.wait_for_function(f"window.__viewer.pixelChecksum() !== {bone}")
    assert "W" in page.inner_text("#sb-wl")
    shoot(page, "viewer-window-drag")

    page.keyboard.press("0")  # the slice's own DICOM window from the CSV
    ks = key_slice(page.context, server.key_slices[0])
    lo, hi = ks["dicom_window"]
    assert viewer_eval(page, "v.state.window") == {"center": (lo + hi) / 2, "width": hi - lo}


def test_wheel_and_keys_scroll_context_slices_and_k_returns_to_key(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[0]
    ks = key_slice(page.context, name)
    stored = sorted(ks["stored_slices"])
    key = ks["key_slice_index"]
    assert len(stored) > 1, "the synthetic series should store context slices"
    open_viewer(page, name)
    key_pixels = viewer_eval(page, "v.pixelChecksum()")

    page.hover("#viewport")
    direction = 1 if key < stored[-1] else -1
    page.mouse.wheel(0, 120 * direction)
    page.wait_for_function(f"document.getElementById('viewer').dataset.shownSlice === '{key + direction}'")
    page.wait_for_function("document.getElementById('viewer').dataset.shownStatus === 'ok'")
    assert viewer_eval(page, "v.pixelChecksum()") != key_pixels
    assert f"slice {key + direction}" in page.inner_text("#sb-slice")

    page.keyboard.press("End")
    page.wait_for_function(f"document.getElementById('viewer').dataset.shownSlice === '{stored[-1]}'")
    page.keyboard.press("Home")
    page.wait_for_function(f"document.getElementById('viewer').dataset.shownSlice === '{stored[0]}'")
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"document.getElementById('viewer').dataset.shownSlice === '{stored[0] + 1}'")
    page.keyboard.press("k")
    page.wait_for_function(f"document.getElementById('viewer').dataset.shownSlice === '{key}'")
    page.wait_for_function(f"window.__viewer.pixelChecksum() === {key_pixels}")


def test_slice_missing_on_disk_is_shown_as_missing_not_an_error(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[-1]
    ks = key_slice(page.context, name)
    others = [i for i in ks["stored_slices"] if i != ks["key_slice_index"]]
    victim = max(others)
    series = name.rsplit("_", 1)[0]
    (server.data_dir / "Images_png" / series / f"{victim:03d}.png").unlink()
    open_viewer(page, name)
    viewer_eval(page, f"v.setSlice({victim})")
    page.wait_for_function(f"document.getElementById('viewer').dataset.shownSlice === '{victim}'")
    page.wait_for_function("document.getElementById('viewer').dataset.shownStatus === 'missing'")
    assert page.is_visible("#missing")
    assert "missing" in page.inner_text("#missing")
    assert page.is_hidden("#error-banner")
    shoot(page, "viewer-missing-slice")


def test_drawn_recist_mark_is_saved_and_found_again_after_reload(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[0]
    before = live_lesions(key_slice(page.context, name))
    open_viewer(page, name)
    page.keyboard.press("x")
    # Long axis left to right, then the short axis dragged across it.
    drag(page, image_point(page, 60, 60), image_point(page, 100, 60))
    drag(page, image_point(page, 80, 50), image_point(page, 80, 72))
    page.wait_for_function(f"window.__viewer.state.ks.lesions.length === {len(before) + 1}")

    after = live_lesions(key_slice(page.context, name))
    added = [lesion for lesion in after if lesion["id"] not in {b["id"] for b in before}]
    assert len(added) == 1
    recist = added[0]["current"]["recist"]
    assert recist is not None
    long_len = ((recist[2] - recist[0]) ** 2 + (recist[3] - recist[1]) ** 2) ** 0.5
    short_len = ((recist[6] - recist[4]) ** 2 + (recist[7] - recist[5]) ** 2) ** 0.5
    assert abs(long_len - 40) < 2.5
    assert abs(short_len - 22) < 2.5
    # The short axis was constrained perpendicular to the long one.
    dot = (recist[2] - recist[0]) * (recist[6] - recist[4]) + (recist[3] - recist[1]) * (
        recist[7] - recist[5]
    )
    assert abs(dot) / (long_len * short_len) < 0.02

    page.reload()
    page.wait_for_selector("#viewer[data-ready='1']")
    item = page.locator(f"#lesion-list li[data-lesion-id='{added[0]['id']}']")
    assert item.is_visible()
    assert "mm" in item.inner_text()
    shoot(page, "viewer-recist-after-reload")

    # Clean up through the UI: select it in the list and delete it with the keyboard.
    item.locator("button").click()
    page.focus("#viewport")
    page.keyboard.press("Delete")
    page.wait_for_function(f"window.__viewer.state.ks.lesions.length === {len(before)}")


def test_flag_noisy_with_reason_and_note_is_saved(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[0]
    ks = key_slice(page.context, name)
    target = next(
        lesion for lesion in live_lesions(ks) if lesion["origin"] == "csv" and lesion["flag"] is None
    )
    open_viewer(page, name)
    page.click(f"#lesion-list li[data-lesion-id='{target['id']}'] button")
    page.focus("#viewport")
    page.keyboard.press("f")
    page.wait_for_selector("#flag-dialog[open]")
    page.check("input[name='reason'][value='wrong_measurement']")
    page.fill("#flag-text", "long axis misses the rim")
    shoot(page, "viewer-flag-dialog")
    page.click("#flag-ok")
    page.wait_for_function(
        f"window.__viewer.state.ks.lesions.find(l => l.id === {target['id']}).review === 'flagged'"
    )
    saved = next(
        lesion for lesion in key_slice(page.context, name)["lesions"] if lesion["id"] == target["id"]
    )
    assert saved["review"] == "flagged"
    assert saved["flag"]["reason"] == "wrong_measurement"
    assert saved["flag"]["note"] == "long axis misses the rim" and saved["flag"]["by"] == "alice"
    assert "noisy" in page.inner_text(f"#lesion-list li[data-lesion-id='{target['id']}']")

    page.keyboard.press("u")
    page.wait_for_function(
        f"window.__viewer.state.ks.lesions.find(l => l.id === {target['id']}).review !== 'flagged'"
    )


def test_predict_shows_scored_boxes_and_enter_accepts_one_as_lesion(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[-1]
    before = live_lesions(key_slice(page.context, name))
    open_viewer(page, name)
    page.fill("#threshold", "0.05")
    page.dispatch_event("#threshold", "input")
    page.click("#predict")
    page.wait_for_selector("#viewer[data-predicted='1']")
    timing = page.inner_text("#predict-time")
    assert " ms" in timing
    assert "ExecutionProvider" in timing
    assert "ExecutionProvider" in page.inner_text("#sb-provider")
    items = page.locator("#prediction-list li[data-prediction-id]")
    assert items.count() >= 1, (timing, viewer_eval(page, "v.state.ks.predictions"))
    assert "score" in items.first.inner_text()
    shoot(page, "viewer-predictions")

    # The slider hides low scores in the browser, without a round trip.
    scores = viewer_eval(page, "v.state.ks.predictions.filter(p => p.status === 'pending').map(p => p.score)")
    page.fill("#threshold", "0.99")
    page.dispatch_event("#threshold", "input")
    assert page.locator("#prediction-list li[data-prediction-id]").count() == sum(
        1 for s in scores if s >= 0.99
    )
    page.fill("#threshold", "0.05")
    page.dispatch_event("#threshold", "input")

    page.locator("#prediction-list li[data-prediction-id] button").first.click()
    selected = viewer_eval(page, "v.state.selected")
    assert selected["kind"] == "prediction"
    page.focus("#viewport")
    page.keyboard.press("Enter")
    page.wait_for_function(f"window.__viewer.state.ks.lesions.length === {len(before) + 1}")
    lesions = live_lesions(key_slice(page.context, name))
    accepted = [lesion for lesion in lesions if lesion["origin"] == "prediction"]
    assert [lesion["prediction"]["id"] for lesion in accepted] == [selected["id"]], lesions
    prediction = next(p for p in key_slice(page.context, name)["predictions"] if p["id"] == selected["id"])
    assert prediction["status"] == "accepted" and prediction["lesion_id"] == accepted[0]["id"]


LIVE_COUNT = "window.__viewer.state.ks.lesions.length"


def test_drawn_box_is_undone_with_ctrl_z_and_redone_with_ctrl_y(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[-1]
    count = len(live_lesions(key_slice(page.context, name)))
    open_viewer(page, name)
    page.keyboard.press("b")
    drag(page, image_point(page, 40, 400), image_point(page, 90, 440))
    page.wait_for_function(f"{LIVE_COUNT} === {count + 1}")
    added = [x for x in live_lesions(key_slice(page.context, name)) if x["origin"] == "drawn"][-1]
    assert added["current"]["box"] == [
        pytest.approx(40, abs=1.5),
        pytest.approx(400, abs=1.5),
        pytest.approx(90, abs=1.5),
        pytest.approx(440, abs=1.5),
    ]
    page.keyboard.press("Escape")  # back to the pointer tool
    page.keyboard.press("Control+z")
    page.wait_for_function(f"{LIVE_COUNT} === {count}")
    assert len(live_lesions(key_slice(page.context, name))) == count
    page.keyboard.press("Control+y")
    page.wait_for_function(f"{LIVE_COUNT} === {count + 1}")
    page.keyboard.press("Control+Shift+Z")  # nothing left to redo: stays as it is
    page.wait_for_function("document.getElementById('viewer').dataset.undoCount === '3'")
    assert len(live_lesions(key_slice(page.context, name))) == count + 1
    page.keyboard.press("Control+z")
    page.wait_for_function(f"{LIVE_COUNT} === {count}")


def test_network_failure_keeps_the_drawing_and_retry_saves_it(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[-1]
    count = len(live_lesions(key_slice(page.context, name)))
    open_viewer(page, name)
    page.route("**/api/key-slices/*/lesions", lambda route: route.abort("internetdisconnected"))
    page.keyboard.press("b")
    drag(page, image_point(page, 300, 60), image_point(page, 340, 90))
    page.wait_for_selector("#error-banner:not([hidden])")
    assert "kept" in page.inner_text("#error-text")
    assert viewer_eval(page, "v.state.pending && v.state.pending.newGeometry.box.length") == 4
    assert len(live_lesions(key_slice(page.context, name))) == count
    shoot(page, "viewer-network-error")

    page.unroute("**/api/key-slices/*/lesions")
    page.click("#error-retry")
    page.wait_for_function(f"{LIVE_COUNT} === {count + 1}")
    assert viewer_eval(page, "v.state.pending") is None
    assert page.is_hidden("#error-banner")
    added = [x for x in live_lesions(key_slice(page.context, name)) if x["origin"] == "drawn"][-1]
    page.keyboard.press("Escape")
    viewer_eval(page, f"v.state.selected = {{kind: 'lesion', id: {added['id']}}}")
    page.keyboard.press("Backspace")
    page.wait_for_function(f"{LIVE_COUNT} === {count}")


def test_moving_a_long_axis_end_point_saves_a_correction_with_the_short_axis_still_perpendicular(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[1]
    lesion = next(x for x in live_lesions(key_slice(page.context, name)) if x["current"]["recist"])
    r = lesion["current"]["recist"]
    open_viewer(page, name)
    page.click(f"#lesion-list li[data-lesion-id='{lesion['id']}'] button")
    drag(page, image_point(page, r[2], r[3]), image_point(page, r[2] + 8, r[3] + 5))
    page.wait_for_function(
        f"window.__viewer.state.ks.lesions.find(l => l.id === {lesion['id']}).review === 'edited'"
    )
    saved = next(x for x in key_slice(page.context, name)["lesions"] if x["id"] == lesion["id"])
    new = saved["current"]["recist"]
    assert new[0:2] == pytest.approx(r[0:2], abs=0.01)
    assert new[2:4] == pytest.approx([r[2] + 8, r[3] + 5], abs=1.5)
    assert saved["original"]["recist"] == r  # the original stays beside the correction
    dot = (new[2] - new[0]) * (new[6] - new[4]) + (new[3] - new[1]) * (new[7] - new[5])
    long_len = ((new[2] - new[0]) ** 2 + (new[3] - new[1]) ** 2) ** 0.5
    short_len = ((new[6] - new[4]) ** 2 + (new[7] - new[5]) ** 2) ** 0.5
    assert abs(dot) / (long_len * short_len) < 0.02
    assert "edited" in page.inner_text(f"#lesion-list li[data-lesion-id='{lesion['id']}']")
    shoot(page, "viewer-corrected")
    page.keyboard.press("Control+z")
    page.wait_for_function(
        f"window.__viewer.state.ks.lesions.find(l => l.id === {lesion['id']}).review !== 'edited'"
    )


def test_escape_never_rejects_and_delete_rejects_only_the_selected_prediction(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[1]
    open_viewer(page, name)
    unnamed = page.evaluate(
        "[...document.querySelectorAll('button')]"
        ".filter(b => !(b.getAttribute('aria-label') || b.textContent.trim())).map(b => b.outerHTML)"
    )
    assert unnamed == []
    page.fill("#threshold", "0")
    page.dispatch_event("#threshold", "input")
    page.click("#predict")
    page.wait_for_selector("#viewer[data-predicted='1']")
    pending = "window.__viewer.state.ks.predictions.filter(p => p.status === 'pending').length"
    before = page.evaluate(pending)
    rejected_before = set(
        page.evaluate(
            "window.__viewer.state.ks.predictions.filter(p => p.status === 'rejected').map(p => p.id)"
        )
    )
    assert before >= 2, "the tiny detector should leave at least two predictions at threshold 0"
    selected = viewer_eval(page, "v.state.selected")
    assert selected and selected["kind"] == "prediction"
    page.focus("#viewport")
    # OHIF habit: Esc cancels. Two Escs deselect and decide nothing.
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")
    assert viewer_eval(page, "v.state.selected") is None
    stored = page.context.request.get(f"/api/key-slices/{name}/predictions?threshold=0").json()["predictions"]
    assert sum(1 for p in stored if p["status"] == "pending") == before

    # Delete rejects the selected prediction and leaves nothing selected: a second Delete rejects nothing.
    page.locator("#prediction-list li[data-prediction-id] button").first.click()
    target = viewer_eval(page, "v.state.selected")
    page.focus("#viewport")
    page.keyboard.press("Delete")
    page.wait_for_function(
        f"window.__viewer.state.ks.predictions.find(p => p.id === {target['id']}).status === 'rejected'"
    )
    assert viewer_eval(page, "v.state.selected") is None
    page.keyboard.press("Delete")
    page.keyboard.press("Escape")
    stored = page.context.request.get(f"/api/key-slices/{name}/predictions?threshold=0").json()["predictions"]
    assert {p["id"] for p in stored if p["status"] == "rejected"} - rejected_before == {target["id"]}
    assert sum(1 for p in stored if p["status"] == "pending") == before - 1


def test_invert_zoom_pan_and_space_reset_the_view(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    open_viewer(page, server.key_slices[1])
    start = viewer_eval(page, "v.pixelChecksum()")
    page.keyboard.press("i")
    page.wait_for_function(f"window.__viewer.pixelChecksum() !== {start}")
    assert page.get_attribute("#invert", "aria-pressed") == "true"

    x, y = image_point(page, 256, 256)
    drag(page, (x, y), (x, y - 80), button="right")  # right drag up zooms in
    zoom = viewer_eval(page, "v.state.zoom")
    assert zoom > 1.5
    page.keyboard.down("Shift")
    drag(page, (x, y), (x + 60, y + 30))  # shift + left drag pans
    page.keyboard.up("Shift")
    assert viewer_eval(page, "[v.state.panX, v.state.panY]") == [60, 30]
    page.hover("#viewport")
    page.keyboard.down("Control")
    page.mouse.wheel(0, 200)  # ctrl + wheel zooms out
    page.keyboard.up("Control")
    assert viewer_eval(page, "v.state.zoom") < zoom
    shoot(page, "viewer-zoomed-inverted")

    page.keyboard.press(" ")
    assert viewer_eval(page, "[v.state.zoom, v.state.panX, v.state.panY, v.state.invert]") == [1, 0, 0, False]
    page.wait_for_function(f"window.__viewer.pixelChecksum() === {start}")


def test_tab_selects_a_lesion_and_c_confirms_it(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[-1]
    open_viewer(page, name)
    page.focus("#viewport")
    # Not confirmed yet (earlier tests may have confirmed some) and not flagged (a 422 until unflagged).
    confirmable = (
        "v.state.selected && v.state.selected.kind === 'lesion' && "
        "(l => l.confirmed === null && l.flag === null)"
        "(v.state.ks.lesions.find(l => l.id === v.state.selected.id))"
    )
    for _ in range(8):
        page.keyboard.press("Tab")
        if viewer_eval(page, confirmable):
            break
    selected = viewer_eval(page, "v.state.selected")
    assert selected["kind"] == "lesion"
    assert viewer_eval(page, confirmable)
    assert page.locator(f"#lesion-list li.selected[data-lesion-id='{selected['id']}']").count() == 1
    page.keyboard.press("y")
    page.wait_for_function(
        f"window.__viewer.state.ks.lesions.find(l => l.id === {selected['id']}).confirmed !== null"
    )
    saved = next(x for x in key_slice(page.context, name)["lesions"] if x["id"] == selected["id"])
    assert saved["confirmed"]["by"] == "alice" and saved["review"] in ("confirmed", "edited")
    assert saved["updated_by"] == "alice"
    page.keyboard.press("Control+z")
    page.wait_for_function(
        f"window.__viewer.state.ks.lesions.find(l => l.id === {selected['id']}).confirmed === null"
    )


def test_changing_the_type_of_a_selected_lesion_saves_it(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[1]
    lesion = live_lesions(key_slice(page.context, name))[0]
    new_type = 4 if lesion["current"]["lesion_type"] != 4 else 5
    open_viewer(page, name)
    assert page.is_disabled("#lesion-type")
    page.click(f"#lesion-list li[data-lesion-id='{lesion['id']}'] button")
    assert page.input_value("#lesion-type") == str(lesion["current"]["lesion_type"])
    page.select_option("#lesion-type", str(new_type))
    current_type = f"window.__viewer.state.ks.lesions.find(l => l.id === {lesion['id']}).current.lesion_type"
    page.wait_for_function(f"{current_type} === {new_type}")
    saved = next(x for x in key_slice(page.context, name)["lesions"] if x["id"] == lesion["id"])
    assert saved["current"]["lesion_type"] == new_type
    assert saved["original"]["lesion_type"] == lesion["original"]["lesion_type"]
    page.focus("#viewport")
    page.keyboard.press("Control+z")
    page.wait_for_function(f"{current_type} === {lesion['current']['lesion_type']}")
