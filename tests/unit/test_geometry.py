"""RECIST geometry: boxes, diameters, validation, and the fixture's rows obeying the dataset's rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.deeplesion.csvio import read_dl_info
from app.deeplesion.errors import InvalidGeometryError
from app.deeplesion.geometry import (
    axes_angle_deg,
    box_from_recist,
    recist_diameters,
    validate_box,
    validate_recist,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# Long axis 40 px along x from (100, 200) to (140, 200); short axis 20 px along y through x = 120.
CROSS = (100.0, 200.0, 140.0, 200.0, 120.0, 190.0, 120.0, 210.0)


def test_box_is_the_padded_bounding_box_of_the_four_end_points() -> None:
    assert box_from_recist(CROSS) == (95.0, 185.0, 145.0, 215.0)
    assert box_from_recist(CROSS, pad=0) == (100.0, 190.0, 140.0, 210.0)


def test_diameters_are_the_lengths_of_the_two_axes() -> None:
    assert recist_diameters(CROSS) == (40.0, 20.0)
    # A 3-4-5 triangle for the long axis.
    assert recist_diameters((0, 0, 3, 4, 1, 1, 1, 2)) == (5.0, 1.0)


def test_fixture_rows_obey_the_dataset_rules() -> None:
    for record in read_dl_info(FIXTURES / "DL_info_small.csv"):
        assert box_from_recist(record.measurement_coordinates) == pytest.approx(record.bounding_box, abs=1e-3)
        # The real file rounds coordinates and diameters separately: agree to 0.01 px.
        assert recist_diameters(record.measurement_coordinates) == pytest.approx(
            record.lesion_diameters_px, abs=0.01
        )
        validate_recist(record.measurement_coordinates, record.image_size)
        validate_box(record.bounding_box, record.image_size)


def test_real_first_row_is_accepted_although_its_axes_are_twelve_degrees_off() -> None:
    recist = (233.537, 95.0204, 234.929, 107.941, 240.972, 102.363, 228.193, 101.037)
    assert 77 < axes_angle_deg(recist) < 79
    validate_recist(recist, (512, 512))


@pytest.mark.parametrize(
    ("recist", "message"),
    [
        ((1, 2, 3), "expected 8 numbers, got 3"),
        ((100, 200, 140, 200, 120, 190, 120, math.nan), "must be finite"),
        ((100, 200, 140, 200, 120, 190, 120, math.inf), "must be finite"),
        ((100, 200, 140, 200, 120, 190, "x", 210), "expected 8 numbers"),
        ((100, 200, 100, 200, 120, 190, 120, 210), "at least 0.5 px"),
        ((100, 200, 140, 200, 120, 200, 120, 200), "at least 0.5 px"),
        ((100, 200, 110, 200, 120, 190, 120, 210), "short axis (20 px) is longer than the long axis (10 px)"),
        ((100, 200, 140, 200, 110, 190, 130, 210), "perpendicular within 25 degrees, got 45.0 degrees"),
        ((500, 200, 540, 200, 520, 190, 520, 210), "point 2 (540, 200) lies outside the 512x512 image"),
        ((-1, 200, 39, 200, 20, 190, 20, 210), "recist point 1 (-1, 200) lies outside"),
    ],
)
def test_invalid_recist_is_refused_with_a_clear_message(recist: tuple[float, ...], message: str) -> None:
    with pytest.raises(InvalidGeometryError) as info:
        validate_recist(recist, (512, 512))
    assert message in str(info.value)


def test_skew_tolerance_can_be_tightened() -> None:
    skewed = (100, 200, 140, 200, 118, 190, 122, 210)  # about 11 degrees off
    validate_recist(skewed, (512, 512))
    with pytest.raises(InvalidGeometryError, match="within 5 degrees"):
        validate_recist(skewed, (512, 512), max_skew_deg=5)


def test_recist_on_a_768_image_may_use_the_whole_image() -> None:
    validate_recist((600, 700, 700, 700, 650, 690, 650, 710), (768, 768))
    with pytest.raises(InvalidGeometryError):
        validate_recist((600, 700, 700, 700, 650, 690, 650, 710), (512, 512))


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((10, 10, 10, 20), "x2 > x1 and y2 > y1"),
        ((10, 30, 20, 20), "x2 > x1 and y2 > y1"),
        ((10, 10, 20), "expected 4 numbers, got 3"),
        ((10, math.nan, 20, 20), "must be finite"),
        ((-6, 10, 20, 20), "lies outside the 512x512 image"),
        ((10, 10, 20, 518), "lies outside the 512x512 image"),
    ],
)
def test_invalid_box_is_refused_with_a_clear_message(box: tuple[float, ...], message: str) -> None:
    with pytest.raises(InvalidGeometryError) as info:
        validate_box(box, (512, 512))
    assert message in str(info.value)


def test_box_of_a_lesion_at_the_border_is_accepted_with_its_padding() -> None:
    recist = (0.0, 100.0, 30.0, 100.0, 15.0, 90.0, 15.0, 110.0)
    validate_recist(recist, (512, 512))
    validate_box(box_from_recist(recist), (512, 512))


def test_image_size_must_be_positive() -> None:
    with pytest.raises(InvalidGeometryError, match="image_size must be positive"):
        validate_box((1, 1, 2, 2), (0, 512))


@given(
    cx=st.floats(60, 450),
    cy=st.floats(60, 450),
    long_half=st.floats(2, 50),
    ratio=st.floats(0.15, 1.0),
    angle=st.floats(0, math.pi),
)
def test_any_perpendicular_cross_inside_the_image_is_valid_and_boxed_around_it(
    cx: float, cy: float, long_half: float, ratio: float, angle: float
) -> None:
    ux, uy = math.cos(angle), math.sin(angle)
    short_half = long_half * ratio
    recist = (
        cx - ux * long_half,
        cy - uy * long_half,
        cx + ux * long_half,
        cy + uy * long_half,
        cx + uy * short_half,
        cy - ux * short_half,
        cx - uy * short_half,
        cy + ux * short_half,
    )
    validate_recist(recist, (512, 512))
    long_d, short_d = recist_diameters(recist)
    assert long_d == pytest.approx(2 * long_half)
    assert short_d == pytest.approx(2 * short_half)
    x1, y1, x2, y2 = box_from_recist(recist)
    assert all(x1 + 5 - 1e-9 <= x <= x2 - 5 + 1e-9 for x in recist[0::2])
    assert all(y1 + 5 - 1e-9 <= y <= y2 - 5 + 1e-9 for y in recist[1::2])
    validate_box((x1, y1, x2, y2), (512, 512))
