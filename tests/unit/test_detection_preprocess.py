"""Detector preprocessing: window, 0.8 mm rescale, padding, and the box round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.deeplesion.store import SliceStore
from app.detection.preprocess import (
    INPUT_SHAPE,
    PAD_VALUE,
    Transform,
    prepare_input,
    preprocess_key_slice,
    scale_for,
    window_hu,
)


def test_window_maps_detector_range_to_0_255_minus_mean() -> None:
    hu = np.array([-2000.0, -1024.0, 1023.5, 3071.0, 5000.0])
    out = window_hu(hu)
    expected = np.clip((hu + 1024.0) / 4095.0 * 255.0, 0, 255) - 50.0
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert out[0] == out[1] == -50.0 and out[-1] == out[-2] == 205.0


@pytest.mark.parametrize(
    ("spacing", "width", "height", "expected"),
    [
        (0.8, 512, 512, 1.0),
        (0.4, 512, 512, 0.5),
        (0.6, 512, 400, 0.75),
        (1.0, 512, 512, 1.0),
        (0.8, 1024, 1024, 0.5),
    ],
)
def test_scale_makes_pixel_0_8mm_and_caps_longest_side_at_512(
    spacing: float, width: int, height: int, expected: float
) -> None:
    assert scale_for(spacing, width, height) == pytest.approx(expected)


@pytest.mark.parametrize("spacing", [0.0, -1.0, float("nan")])
def test_scale_rejects_impossible_spacing(spacing: float) -> None:
    with pytest.raises(ValueError, match="spacing"):
        scale_for(spacing, 512, 512)


def test_transform_round_trip_is_identity_inside_the_image() -> None:
    t = Transform(scale_x=0.5, scale_y=0.75, width=512, height=400)
    boxes = np.array([[10.0, 20.0, 100.0, 300.0], [0.0, 0.0, 511.0, 399.0]])
    np.testing.assert_allclose(t.to_original(t.to_input(boxes)), boxes, atol=1e-9)


def test_to_original_clips_boxes_to_the_image() -> None:
    t = Transform(scale_x=1.0, scale_y=1.0, width=100, height=50)
    out = t.to_original(np.array([[-10.0, -5.0, 150.0, 80.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.0, 99.0, 49.0]])


def test_prepare_input_pads_with_air_and_puts_a_lesion_where_the_transform_says() -> None:
    ctx = np.full((3, 512, 512), -1000.0, dtype=np.float32)
    ctx[:, 200:240, 300:360] = 40.0  # rows y 200..239, columns x 300..359
    x, t = prepare_input(ctx, spacing_mm=0.4)  # 0.4 mm -> half size
    assert x.shape == INPUT_SHAPE and x.dtype == np.float32
    assert t.scale_x == pytest.approx(0.5) and t.scale_y == pytest.approx(0.5)
    assert np.all(x[0, :, 256:, :] == PAD_VALUE) and np.all(x[0, :, :, 256:] == PAD_VALUE)
    x1, y1, x2, y2 = t.to_input(np.array([[300.0, 200.0, 359.0, 239.0]]))[0]
    # One pixel of margin: the bilinear filter blends the edge pixel with the background.
    inside = x[0, 1, int(np.ceil(y1)) + 1 : int(y2), int(np.ceil(x1)) + 1 : int(x2)]
    expected = (40.0 + 1024.0) / 4095.0 * 255.0 - 50.0
    np.testing.assert_allclose(inside, expected, atol=0.5)
    bright = np.argwhere(x[0, 1] > 0)
    assert bright[:, 1].min() >= np.floor(x1) and bright[:, 1].max() <= np.ceil(x2)


@pytest.mark.parametrize("shape", [(512, 512), (2, 64, 64), (3, 0, 10)])
def test_prepare_input_rejects_wrong_context_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shape"):
        prepare_input(np.zeros(shape, dtype=np.float32), 0.8)


def test_preprocess_key_slice_stacks_slices_2mm_apart(tmp_path: Path) -> None:
    store = SliceStore(tmp_path)
    for index in range(8, 13):  # 1 mm apart: neighbours 2 mm away are slices 8 and 12
        store.write_hu(f"000001_01_01_{index:03d}.png", np.full((64, 64), index * 100, dtype=np.int16))
    x, t = preprocess_key_slice(store, "000001_01_01_010.png", (0.8, 0.8, 1.0))
    expected = [window_hu(np.array([v * 100.0]))[0] for v in (8, 10, 12)]
    np.testing.assert_allclose(x[0, :, 10, 10], expected, atol=1e-4)
    assert (t.width, t.height) == (64, 64)
