"""Rotation and flips in Chromium (OHIF's R / L / H / V), the OHIF key map, and the toolbar's width.

Under every view the screen must agree with the image: the pixel drawn at a point is the window of the HU
the app reads there (numpy, from the PNG), the HU readout names that pixel, a click selects the mark drawn
under it, ROI statistics are those of the pixels inside the drawn region, and the orientation labels turn.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import drag, image_point, open_viewer, viewer_eval
from tests.e2e.live import LiveServer

# OHIF v3's default hotkeys for actions this viewer also has: key -> the start of our command's `what`.
OHIF_DEFAULTS = {
    "c": "Cine",
    "r": "Rotate right",
    "l": "Rotate left",
    "h": "Flip horizontally",
    "v": "Flip vertically",
    "i": "Invert",
    " ": "Reset view",
    "+": "Zoom",
    "-": "Zoom",
    "=": "Fit",
    "arrowup": "Previous / next",
    "arrowdown": "Previous / next",
    "home": "First / last",
    "end": "First / last",
    "escape": "Cancel",
}
# Keys OHIF binds by default to something this viewer does not do: none of ours may take them.
OHIF_OTHER = {"z", "arrowleft", "arrowright", "pageup", "pagedown"}


def hu_slice(server: LiveServer, ks: dict[str, Any]) -> np.ndarray:
    """The key slice's HU as the app reads it (PNG - 32768)."""
    from app.deeplesion.store import SliceStore

    store = SliceStore(server.data_dir)
    return store.read_hu_slice(ks["series_folder"], ks["key_slice_index"]).astype(np.int64)


def window_grey(hu: int, center: float, width: float) -> int:
    """The server's window rule (app/deeplesion/windowing.py), as lut.js applies it."""
    lo, hi = center - width / 2, center + width / 2
    return int(min(255, max(0, np.floor((hu - lo) / (hi - lo) * 255 + 0.5))))


def screen_grey(page: Any, points: list[tuple[float, float]]) -> list[int]:
    """The red channel the screen shows at client points, with the overlay canvas hidden."""
    page.evaluate("document.getElementById('overlay-canvas').style.visibility = 'hidden'")
    png = page.screenshot()
    page.evaluate("document.getElementById('overlay-canvas').style.visibility = ''")
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return [image.getpixel((int(x), int(y)))[0] for x, y in points]


def labels(page: Any) -> dict[str, str]:
    """The orientation label at each viewport edge."""
    return {edge: page.inner_text(f"#orient-{edge[0]}") for edge in ("left", "right", "top", "bottom")}


VIEWS = [
    # (keys pressed from the reset view, data-view, labels left/right/top/bottom)
    ([], "0,0,0", ("R", "L", "A", "P")),
    (["r"], "1,0,0", ("P", "A", "R", "L")),
    (["r", "r"], "2,0,0", ("L", "R", "P", "A")),
    (["l"], "3,0,0", ("A", "P", "L", "R")),
    (["h"], "0,1,0", ("L", "R", "A", "P")),
    (["v"], "0,0,1", ("R", "L", "P", "A")),
    (["r", "h"], "1,1,0", ("A", "P", "R", "L")),
]


def test_screen_pixels_hu_readout_and_labels_follow_rotation_and_flips(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[0]
    ks = page.context.request.get(f"/api/key-slices/{name}").json()
    hu = hu_slice(server, ks)
    h, w = hu.shape
    open_viewer(page, name)
    page.evaluate("window.__viewer.setWindow(40, 400, 'test')")
    page.focus("#viewport")
    rng = np.random.default_rng(3)
    # Pixels around the centre that differ from their mirror and turned images, so a wrong mapping shows.
    low, high = [w // 2 - 30, h // 2 - 30], [w // 2 + 30, h // 2 + 30]
    picks = [(int(x), int(y)) for x, y in rng.integers(low, high, (12, 2))]
    expected = [window_grey(int(hu[y, x]), 40, 400) for x, y in picks]
    assert len(set(expected)) > 3, "the chosen pixels should differ in grey"
    seen_transforms = set()
    for keys, view, edge_labels in VIEWS:
        page.keyboard.press(" ")
        # 1.25^7 = 4.8x: several screen pixels per image pixel, drawn as blocks.
        for key in ("+",) * 7 + tuple(keys):
            page.keyboard.press(key)
        page.wait_for_function(f"document.getElementById('viewer').dataset.view === '{view}'")
        page.evaluate("window.__viewer.setWindow(40, 400, 'test')")
        page.wait_for_function("document.getElementById('viewer').dataset.window === '40,400'")
        page.wait_for_timeout(100)
        assert labels(page) == dict(zip(("left", "right", "top", "bottom"), edge_labels, strict=True)), keys
        seen_transforms.add(page.eval_on_selector("#image-canvas", "c => c.style.transform"))
        points = [image_point(page, x + 0.5, y + 0.5) for x, y in picks]
        got = screen_grey(page, points)
        assert all(abs(g - e) <= 1 for g, e in zip(got, expected, strict=True)), (keys, got, expected)
        # The canvas's own CSS matrix maps the same point to the same pixel the viewer computes.
        for (x, y), (cx, cy) in list(zip(picks, points, strict=True))[:3]:
            back = page.evaluate(
                """([cx, cy]) => {
                    const c = document.getElementById('image-canvas');
                    const r = document.getElementById('viewport').getBoundingClientRect();
                    const m = new DOMMatrix(getComputedStyle(c).transform).inverse();
                    const p = m.transformPoint(new DOMPoint(cx - r.left, cy - r.top));
                    return [p.x, p.y];
                }""",
                [cx, cy],
            )
            assert back == pytest.approx([x + 0.5, y + 0.5], abs=1e-3)
        # The HU readout under a still pointer names the pixel drawn there.
        x, y = picks[0]
        page.mouse.move(*points[0])
        readout = f"{ks['key_slice_index']},{x},{y},{hu[y, x]}"
        page.wait_for_function(f"document.getElementById('viewer').dataset.hu === '{readout}'")
    assert len(seen_transforms) == len(VIEWS)
    page.keyboard.press(" ")
    assert page.get_attribute("#viewer", "data-view") == "0,0,0"
    assert labels(page) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}


def test_marks_selection_and_roi_statistics_are_right_when_rotated_and_flipped(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[0]
    ks = page.context.request.get(f"/api/key-slices/{name}").json()
    hu = hu_slice(server, ks).astype(np.float64)
    h, w = hu.shape
    lesion = next(lesion for lesion in ks["lesions"] if lesion["current"]["recist"])
    open_viewer(page, name)
    page.focus("#viewport")
    for key in ("r", "h"):
        page.keyboard.press(key)
    page.wait_for_function("document.getElementById('viewer').dataset.view === '1,1,0'")
    # A click on the long axis's middle selects the lesion drawn there.
    r = lesion["current"]["recist"]
    page.mouse.click(*image_point(page, (r[0] + r[2]) / 2, (r[1] + r[3]) / 2))
    assert viewer_eval(page, "v.state.selected") == {"kind": "lesion", "id": lesion["id"]}
    # A rectangle ROI dragged between two image points measures exactly the pixels between them.
    page.keyboard.press("g")
    x0, y0, x1, y1 = w * 0.31 + 0.3, h * 0.42 + 0.7, w * 0.47 + 0.2, h * 0.55 + 0.9
    drag(page, image_point(page, x0, y0), image_point(page, x1, y1))
    page.wait_for_selector("#measure-list li[data-measure-id]")
    box = viewer_eval(page, "v.state.measures[0].box")
    # The corners the drag meant (to the mouse's rounding), in image order whatever the screen order.
    assert box == pytest.approx([x0, y0, x1, y1], abs=0.01)
    cx, cy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    values = hu[(cx >= box[0]) & (cx <= box[2]) & (cy >= box[1]) & (cy <= box[3])]
    item = page.locator("#measure-list li[data-measure-id]").first
    assert float(item.get_attribute("data-n")) == values.size
    assert float(item.get_attribute("data-mean")) == pytest.approx(values.mean(), abs=1e-6)
    assert float(item.get_attribute("data-min")) == values.min()
    # The probe pins the HU of the pixel under the click.
    page.keyboard.press("o")
    px, py = int(w * 0.6), int(h * 0.4)
    page.mouse.click(*image_point(page, px + 0.5, py + 0.5))
    probe = viewer_eval(page, "v.measureValues(v.state.measures[1])")
    assert probe == {"hu": hu[py, px], "x": px, "y": py}


def test_key_map_uses_ohif_defaults_for_shared_actions_and_the_dialog_lists_them(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    open_viewer(page, server.key_slices[0])
    bound = page.evaluate(
        """() => Object.fromEntries(window.__viewer.commands.flatMap(c => (c.keys || []).map(k =>
            [k === 'Space' ? ' ' : k.toLowerCase(), c.what || ''])))"""
    )
    for key, action in OHIF_DEFAULTS.items():
        assert bound.get(key, "").startswith(action), (key, bound.get(key))
    assert not OHIF_OTHER & set(bound), OHIF_OTHER & set(bound)
    assert bound["y"].startswith("Confirm") and bound["x"].startswith("RECIST")
    page.keyboard.press("?")
    rows = {tr.locator("kbd").inner_text(): tr.inner_text() for tr in page.locator("#keymap-rows tr").all()}
    for key in ("C", "R", "L", "H", "V", "Y", "X"):
        assert key in rows, key
    assert "Rotate right" in rows["R"] and "Confirm" in rows["Y"] and "RECIST" in rows["X"]
    page.keyboard.press("Escape")
    # R rotates, it no longer takes the RECIST tool; X does.
    page.focus("#viewport")
    page.keyboard.press("r")
    assert page.get_attribute("#viewer", "data-view") == "1,0,0"
    assert page.get_attribute("#viewport", "data-tool") in (None, "pointer")
    page.keyboard.press("x")
    assert page.get_attribute("#viewport", "data-tool") == "recist"


def toolbar_rows(page: Any) -> dict[str, Any]:
    """The toolbar's height, its distinct item rows, and whether every control lies inside the window."""
    result: dict[str, Any] = page.evaluate(
        """() => {
            const bar = document.querySelector('.toolbar');
            const items = [...bar.querySelectorAll('button, a.button, select, input, output')];
            // A row starts at an item wholly below every item of the row before it.
            const boxes = items.map(el => el.getBoundingClientRect()).sort((p, q) => p.top - q.top);
            let rows = 0;
            let bottom = -Infinity;
            for (const r of boxes) {
                if (r.top >= bottom - 1) rows++;
                bottom = r.top >= bottom - 1 ? r.bottom : Math.max(bottom, r.bottom);
            }
            const button = bar.querySelector('button').getBoundingClientRect().height;
            return {
                height: bar.getBoundingClientRect().height, button, rows,
                outside: items.filter(el => el.getBoundingClientRect().right > innerWidth)
                    .map(el => el.id || el.textContent),
                viewport: document.getElementById('viewport').getBoundingClientRect().height,
            };
        }"""
    )
    return result


def test_toolbar_is_one_row_at_1280_and_usable_at_1024(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    open_viewer(page, server.key_slices[0])
    at_1280 = toolbar_rows(page)
    assert at_1280["rows"] == 1, at_1280
    assert at_1280["height"] < 2 * at_1280["button"], at_1280
    assert not at_1280["outside"], at_1280
    page.set_viewport_size({"width": 1024, "height": 768})
    page.wait_for_timeout(200)
    at_1024 = toolbar_rows(page)
    assert not at_1024["outside"], at_1024
    assert at_1024["rows"] <= 2 and at_1024["viewport"] >= 450, at_1024
    # Every control still answers a click at 1024 px.
    page.click("#rotate-right")
    assert page.get_attribute("#viewer", "data-view") == "1,0,0"
    page.click("#help")
    assert page.locator("#keymap-dialog[open], dialog[open]").count() == 1


def test_viewer_parts_import_alone_and_the_dispatcher_routes_buttons_as_documented(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    # The work list carries no viewer: the modules must load without one and do nothing on import.
    page.goto("/")
    page.wait_for_load_state("networkidle")
    got = page.evaluate(
        """async () => {
            const vp = await import('/static/js/viewer/viewport.js');
            const tools = await import('/static/js/viewer/tools.js');
            const rest = ['slice-cache', 'annotations', 'overlay', 'edits', 'panels', 'cine', 'controls',
                'commands'];
            for (const m of rest) {
                await import(`/static/js/viewer/${m}.js`);
            }
            const view = {
                w: 512, h: 400, vw: 800, vh: 600, zoom: 2, panX: 5, panY: -3, rotation: 1, flipH: true,
            };
            const m = vp.viewMatrix(view);
            const s = vp.imageToScreen(m, 10.25, 20.5);
            return {
                back: vp.screenToImage(m, s.x, s.y), labels: vp.orientationLabels(view), scale: m.s,
                routes: [[2, false], [1, false], [0, true], [0, false], [3, false]]
                    .map(([b, shift]) => tools.routeButton(b, shift, 'ellipse')),
                viewer: !!window.__viewer,
            };
        }"""
    )
    assert got["back"] == pytest.approx({"x": 10.25, "y": 20.5})
    # A quarter turn clockwise then a mirror: the patient's right (image left) is at the top.
    assert got["labels"] == {"left": "A", "right": "P", "top": "R", "bottom": "L"}
    assert got["scale"] == pytest.approx(2 * min(800 / 400, 600 / 512))
    assert got["routes"] == ["zoom", "pan", "pan", "ellipse", None]
    assert got["viewer"] is False
