"""Browser/server parity in Chromium: the JS window LUT and the overlay palette agree with the server's."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.deeplesion.windowing import Window, apply_window
from tests.e2e.conftest import open_viewer
from tests.e2e.live import LiveServer

EVERY_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)

# The browser LUT, built by the viewer's own module, as the grey level of each int16 value (in table order).
JS_LUT = """async ([center, width, invert]) => {
  const { buildLut } = await import("/static/js/lut.js");
  const table = new Uint32Array(65536);
  buildLut(table, center, width, invert);
  return Array.from(table, (rgba) => rgba & 0xff);
}"""


@pytest.mark.parametrize(
    "window",
    [Window.preset("soft_tissue"), Window.preset("lung"), Window.from_min_max(-177.5, 307.5)],
    ids=["soft_tissue", "lung", "odd_dicom"],
)
def test_js_lut_equals_the_server_window_for_every_int16_value(
    page: Any, server: LiveServer, window: Window
) -> None:
    page.goto("/login")
    server_grey = apply_window(EVERY_INT16, window).astype(int)
    for invert in (False, True):
        browser_grey = np.array(page.evaluate(JS_LUT, [window.center, window.width, invert]))
        expected = 255 - server_grey if invert else server_grey
        differ = np.flatnonzero(browser_grey != expected)
        assert differ.size == 0, (
            f"{differ.size} of 65536 int16 values differ (invert={invert}), e.g. HU "
            f"{(differ[:5] - 32768).tolist()}: browser {browser_grey[differ[:5]].tolist()} "
            f"vs server {expected[differ[:5]].tolist()}"
        )


def _rgb(css: str) -> tuple[int, int, int]:
    """'rgb(r, g, b)' as computed by the browser -> (r, g, b)."""
    r, g, b = (int(v) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    return r, g, b


def _overlay_rgb(context: Any, file_name: str, overlay: bool) -> np.ndarray:
    """The server's PNG of a key slice (soft tissue window), with or without its burnt-in lesions."""
    query = "preset=soft_tissue" + ("&overlay=1" if overlay else "")
    response = context.request.get(f"/api/slices/{file_name[:-4]}.png?{query}")
    assert response.ok, response.text()
    with Image.open(io.BytesIO(response.body())) as img:
        return np.asarray(img.convert("RGB")).astype(int)


def _mark_colour(context: Any, file_name: str, box: tuple[float, ...]) -> tuple[int, int, int]:
    """The most common colour the overlay burnt into `box` (x1, y1, x2, y2, with a margin for the label)."""
    plain, marked = _overlay_rgb(context, file_name, False), _overlay_rgb(context, file_name, True)
    x1, y1, x2, y2 = (int(v) for v in box)
    region = (slice(max(0, y1 - 20), y2 + 3), slice(max(0, x1 - 3), x2 + 3))
    changed = np.any(plain[region] != marked[region], axis=-1)
    colours, counts = np.unique(marked[region][changed], axis=0, return_counts=True)
    assert counts.size, f"nothing drawn in {box}"
    r, g, b = (int(v) for v in colours[counts.argmax()])
    return r, g, b


def _legend_colours(page: Any) -> dict[str, tuple[int, int, int]]:
    """The swatch colour of each layer in the viewer's legend, as Chromium paints it."""
    found = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll("#legend input[data-layer]")].map((box) => [
             box.dataset.layer, getComputedStyle(box.parentElement.querySelector(".swatch")).backgroundColor,
           ]))"""
    )
    return {layer: _rgb(css) for layer, css in found.items()}


def _recist_box(recist: list[float]) -> tuple[float, float, float, float]:
    return min(recist[0::2]), min(recist[1::2]), max(recist[0::2]), max(recist[1::2])


def _far_recist(avoid: tuple[float, ...], size: tuple[int, int], shift: int) -> list[float]:
    """A small RECIST mark in the image quarter farthest from `avoid`, moved down by `shift` pixels."""
    w, h = size
    cx = w * 0.25 if (avoid[0] + avoid[2]) / 2 > w / 2 else w * 0.75
    cy = h * 0.25 + shift if (avoid[1] + avoid[3]) / 2 > h / 2 else h * 0.6 + shift
    return [cx - 15, cy, cx + 15, cy, cx, cy - 8, cx, cy + 8]


def test_server_overlay_colours_equal_the_viewer_legend_for_each_layer(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    file_name = server.key_slices[2]
    context = page.context
    csrf = {"X-CSRF-Token": signed_in["csrf_token"]}
    ks = context.request.get(f"/api/key-slices/{file_name}").json()
    lesions = [le for le in ks["lesions"] if le["review"] != "deleted"]
    assert len(lesions) == 1, "the test needs a key slice with one untouched lesion"
    lesion = lesions[0]
    original_box = _recist_box(lesion["current"]["recist"])
    size = tuple(ks["image_size"])
    drawn = {"original": _mark_colour(context, file_name, original_box)}

    added = _far_recist(original_box, size, 0)
    r = context.request.post(
        f"/api/key-slices/{file_name}/lesions",
        data={"recist": added, "lesion_type": lesion["current"]["lesion_type"]},
        headers=csrf,
    )
    assert r.ok, r.text()
    drawn["added"] = _mark_colour(context, file_name, _recist_box(added))

    moved = _far_recist(original_box, size, 40)
    r = context.request.put(
        f"/api/lesions/{lesion['id']}/geometry",
        data={"version": lesion["version"], "recist": moved},
        headers=csrf,
    )
    assert r.ok, r.text()
    drawn["corrected"] = _mark_colour(context, file_name, _recist_box(moved))

    open_viewer(page, file_name)
    legend = _legend_colours(page)
    assert {layer: legend.get(layer) for layer in drawn} == drawn
