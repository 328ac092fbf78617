"""HU windowing: presets, Window validation, the lookup-table fast path and request resolution."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.deeplesion.errors import InvalidWindowError
from app.deeplesion.windowing import (
    DETECTOR_WINDOW,
    PRESETS,
    Window,
    apply_window,
    resolve_window,
    window_reference,
)

EVERY_HU = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


def test_presets_are_the_ohif_defaults_in_menu_order() -> None:
    assert list(PRESETS.items()) == [
        ("soft_tissue", (40.0, 400.0)),
        ("lung", (-600.0, 1500.0)),
        ("liver", (90.0, 150.0)),
        ("bone", (480.0, 2500.0)),
        ("brain", (40.0, 80.0)),
    ]
    assert DETECTOR_WINDOW == (-1024.0, 3071.0)


def test_window_bounds_from_centre_and_width() -> None:
    w = Window(40, 400)
    assert (w.lo, w.hi) == (-160.0, 240.0)
    assert Window.from_min_max(-1024, 3071) == Window(1023.5, 4095)


@pytest.mark.parametrize(
    ("hu", "expected"),
    [(-1000, 0), (-160, 0), (240, 255), (3000, 255), (40, 128), (-159, 1), (239, 254), (0, 102)],
)
def test_reference_formula_on_hand_computed_values(hu: int, expected: int) -> None:
    # soft tissue: (hu + 160) / 400 * 255, halves rounded up: 40 -> 127.5 -> 128, 0 -> 102.0.
    assert int(window_reference(np.array([hu]), Window(40, 400))[0]) == expected


@pytest.mark.parametrize(
    "window",
    [
        *(Window(c, w) for c, w in PRESETS.values()),
        Window.from_min_max(*DETECTOR_WINDOW),
        Window.from_min_max(-177.5, 307.5),
        Window(0.5, 1),
        Window(-32768, 1),
        Window(0, 65535),
        Window(12.3, 7.7),
    ],
)
def test_lookup_table_equals_the_reference_for_every_int16_value(window: Window) -> None:
    fast = apply_window(EVERY_HU, window)
    assert fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, window_reference(EVERY_HU, window))


def test_apply_window_keeps_the_image_shape_and_is_monotonic() -> None:
    hu = np.linspace(-2000, 2000, 512 * 512).astype(np.int16).reshape(512, 512)
    out = apply_window(hu, Window(-600, 1500))
    assert out.shape == (512, 512)
    assert np.all(np.diff(out.ravel().astype(np.int16)) >= 0)
    assert out[0, 0] == 0 and out[-1, -1] == 255


def test_apply_window_accepts_wider_ints_in_range_and_refuses_out_of_range() -> None:
    hu32 = np.array([[-1000, 40, 500]], dtype=np.int32)
    soft = Window(40, 400)
    np.testing.assert_array_equal(apply_window(hu32, soft), window_reference(hu32, soft))
    with pytest.raises(InvalidWindowError):
        apply_window(np.array([40000], dtype=np.int32), Window(40, 400))


@pytest.mark.parametrize(
    ("center", "width"),
    [(40, 0), (40, 0.5), (40, 70000), (math.nan, 400), (40, math.inf), (1e9, 400)],
)
def test_invalid_windows_are_refused(center: float, width: float) -> None:
    with pytest.raises(InvalidWindowError):
        Window(center, width)


def test_min_must_be_below_max() -> None:
    with pytest.raises(InvalidWindowError, match="max must be greater than min"):
        Window.from_min_max(100, 100)


def test_resolve_window_by_preset_centre_width_and_min_max() -> None:
    assert resolve_window(preset="lung") == Window(-600, 1500)
    assert resolve_window(preset="detector") == Window.from_min_max(-1024, 3071)
    assert resolve_window(center=50, width=350) == Window(50, 350)
    assert resolve_window(lo=-100, hi=300) == Window(100, 400)
    assert resolve_window(preset="dicom", dicom_window=(-175, 275)) == Window(50, 450)


def test_default_is_the_dicom_window_else_soft_tissue() -> None:
    assert resolve_window(dicom_window=(-1500, 500)) == Window(-500, 2000)
    assert resolve_window() == Window(40, 400)
    # A broken DICOM window in the CSV must not stop the slice from showing.
    assert resolve_window(dicom_window=(300, 100)) == Window(40, 400)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "lung", "center": 40, "width": 400}, "give only one of"),
        ({"center": 40, "width": 400, "lo": 0, "hi": 10}, "give only one of"),
        ({"center": 40}, "center and width must be given together"),
        ({"hi": 40}, "min and max must be given together"),
        ({"preset": "abdomen"}, "unknown window preset 'abdomen'"),
        ({"preset": "dicom"}, "no DICOM window"),
        ({"center": "abc", "width": 400}, "center must be a number"),
        ({"center": math.nan, "width": 400}, "center must be finite"),
        ({"lo": 10, "hi": 5}, "max must be greater than min"),
        ({"center": 40, "width": 0}, "width must be between 1 and 65535"),
    ],
)
def test_conflicting_or_incomplete_parameters_give_clear_errors(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidWindowError, match=message):
        resolve_window(**kwargs)  # type: ignore[arg-type]


def test_unknown_preset_error_lists_the_valid_names() -> None:
    with pytest.raises(InvalidWindowError) as info:
        resolve_window(preset="abdomen")
    for name in ("soft_tissue", "lung", "liver", "bone", "brain", "dicom", "detector"):
        assert name in str(info.value)
