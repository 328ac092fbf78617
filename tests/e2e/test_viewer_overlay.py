"""The viewer's overlay in Chromium: lesion extent over Slice_range, scale bar, orientation, z position."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import image_point, open_viewer, viewer_eval
from tests.e2e.live import LiveServer

OVERLAY_ALPHA = """([x, y]) => {
  const c = document.getElementById('overlay-canvas');
  const r = c.getBoundingClientRect();
  const k = c.width / r.width;
  const px = [Math.round((x - r.left) * k), Math.round((y - r.top) * k)];
  return c.getContext('2d').getImageData(px[0], px[1], 1, 1).data[3];
}"""


def shown(page: Any, index: int) -> None:
    page.wait_for_function(f"document.getElementById('viewer').dataset.shownSlice === '{index}'")


def test_key_slice_lesions_show_as_extent_only_within_slice_range(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[0]
    ks = page.context.request.get(f"/api/key-slices/{name}").json()
    key = ks["key_slice_index"]
    first, last = ks["slice_range"]
    stored = ks["stored_slices"]
    inside = next(i for i in stored if first <= i <= last and i != key)
    outside = next(i for i in stored if not first <= i <= last)
    on_key = [x for x in ks["lesions"] if x["current"]["slice_index"] == key]
    assert on_key
    box = on_key[0]["current"]["box"]
    open_viewer(page, name)
    extent = "document.getElementById('viewer').dataset.extent"
    assert page.evaluate(extent) == ""
    viewer_eval(page, f"v.setSlice({inside})")
    shown(page, inside)
    page.wait_for_function(f"{extent} === '{','.join(str(x['id']) for x in on_key)}'")
    # The dashed outline is really drawn on the box edge (a dash starts at its corner)...
    corner = image_point(page, box[0], box[1])
    assert page.evaluate(OVERLAY_ALPHA, list(corner)) > 0
    # ...and not on a stored slice outside the lesion's Slice_range.
    viewer_eval(page, f"v.setSlice({outside})")
    shown(page, outside)
    page.wait_for_function(f"{extent} === ''")
    assert page.evaluate(OVERLAY_ALPHA, list(image_point(page, box[0], box[1]))) == 0


def test_scale_bar_orientation_and_slice_position(
    page: Any, server: LiveServer, signed_in: dict[str, Any]
) -> None:
    name = server.key_slices[0]
    ks = page.context.request.get(f"/api/key-slices/{name}").json()
    sx, _sy, dz = ks["spacing_mm"]
    open_viewer(page, name)
    for element, text in (("#orient-l", "R"), ("#orient-r", "L"), ("#orient-t", "A"), ("#orient-b", "P")):
        assert page.inner_text(element) == text and page.is_visible(element)
    for _ in range(2):
        bar = viewer_eval(page, "v.scaleBar()")
        # The bar's length on screen is the length of `mm` millimetres of image, measured by the transform.
        a = image_point(page, 100, 100)
        b = image_point(page, 100 + bar["mm"] / sx, 100)
        assert abs((b[0] - a[0]) - bar["px"]) < 0.01
        assert 0 < bar["px"] <= 160
        page.focus("#viewport")
        page.keyboard.press("+")
        page.keyboard.press("+")
    assert "z 0" in page.inner_text("#info-tl")
    page.keyboard.press("ArrowDown")
    nxt = ks["stored_slices"][ks["stored_slices"].index(ks["key_slice_index"]) + 1]
    shown(page, nxt)
    mm = (nxt - ks["key_slice_index"]) * dz
    assert f"z +{mm:.1f} mm" in page.inner_text("#info-tl")
    assert f"z +{mm:.1f} mm" in page.inner_text("#sb-slice")
