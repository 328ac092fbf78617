"""Our FROC equals the dataset authors' (3DCE and MULAN, reimplemented in tests/froc_reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.detection.froc import FP_RATES, GtLesion, ImageCase, evaluate_cases, froc_curve
from tests.froc_reference import (
    FROC_3dce,
    FROC_mulan,
    authors_inputs,
    sens_at_FP_3dce,
    sens_at_FP_mulan,
)

IOU_TH = 0.5
# A few coarse score levels, so that ties (and their order) are exercised often.
_scores = st.integers(min_value=1, max_value=6).map(lambda v: v / 6)


@st.composite
def _box(draw: st.DrawFn) -> tuple[float, float, float, float]:
    x, y = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    return (float(x), float(y), float(x + draw(st.integers(1, 20))), float(y + draw(st.integers(1, 20))))


@st.composite
def _image(draw: st.DrawFn, key: str) -> ImageCase:
    lesions = [GtLesion(draw(_box()), noisy=draw(st.booleans())) for _ in range(draw(st.integers(0, 3)))]
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(draw(st.integers(0, 5))):
        if lesions and draw(st.booleans()):
            # Near a lesion: jitter its corners so some detections hit, some just miss.
            b = draw(st.sampled_from(lesions)).box
            d = [draw(st.integers(-3, 3)) for _ in range(4)]
            x1, y1 = b[0] + d[0], b[1] + d[1]
            boxes.append((x1, y1, max(x1 + 1, b[2] + d[2]), max(y1 + 1, b[3] + d[3])))
        else:
            boxes.append(draw(_box()))
    scores = [draw(_scores) for _ in boxes]
    return ImageCase(key, lesions, np.array(boxes, dtype=float).reshape(-1, 4), np.array(scores))


@st.composite
def _cases(draw: st.DrawFn) -> list[ImageCase]:
    n = draw(st.integers(1, 6))
    # Keys out of file-name order: the authors sort them, and the sort decides tied scores.
    keys = draw(st.permutations([f"{i:06d}_01_01_{i:03d}.png" for i in range(1, n + 1)]))
    return [draw(_image(k)) for k in keys]


def _authors_can_run(cases: list[ImageCase]) -> bool:
    """Their scripts need a slice with a clean lesion and at least one detection on such a slice."""
    boxes_all, gts_all = authors_inputs(cases)
    return bool(gts_all) and sum(len(b) for b in boxes_all) > 0


@settings(max_examples=400, deadline=None)
@given(cases=_cases())
def test_froc_curve_equals_the_authors_curve(cases: list[ImageCase]) -> None:
    assume(_authors_can_run(cases))
    boxes_all, gts_all = authors_inputs(cases)
    curve = froc_curve(cases)
    for reference in (FROC_3dce, FROC_mulan):
        sens, fp = reference(boxes_all, gts_all, IOU_TH)
        np.testing.assert_array_equal(curve.sensitivity, sens)
        np.testing.assert_array_equal(curve.fp_per_image, fp)
    assert curve.images == len(gts_all) and curve.lesions == len(np.vstack(gts_all))


@settings(max_examples=400, deadline=None)
@given(cases=_cases())
def test_the_default_reading_is_mulans_sens_at_fp(cases: list[ImageCase]) -> None:
    assume(_authors_can_run(cases))
    boxes_all, gts_all = authors_inputs(cases)
    ours = evaluate_cases(cases)["sensitivity"]
    curve = froc_curve(cases)
    assert isinstance(ours, list)
    for rate, got in zip(FP_RATES, ours, strict=True):
        try:
            expected = float(sens_at_FP_mulan(boxes_all, gts_all, [rate], IOU_TH)[0])
        except ValueError:
            # interp1d refuses a rate below the curve's first point; we read 0 there.
            assert rate < curve.fp_per_image[0] and got == 0.0
            continue
        assert got == pytest.approx(expected, abs=1e-12)


@settings(max_examples=400, deadline=None)
@given(cases=_cases())
def test_the_3dce_reading_is_3dces_sens_at_fp(cases: list[ImageCase]) -> None:
    assume(_authors_can_run(cases))
    boxes_all, gts_all = authors_inputs(cases)
    # interp1d divides by zero where two curve points share an FP count at the ends (nan or inf, kept).
    with np.errstate(all="ignore"):
        expected = np.asarray(sens_at_FP_3dce(boxes_all, gts_all, list(FP_RATES), IOU_TH), dtype=float)
    got = np.array(froc_curve(cases).sens_at(FP_RATES, reading="3dce"))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, equal_nan=True)


def test_the_two_readings_differ_on_a_small_set() -> None:
    # One slice: hit, FP, hit, FP. At 1 FP/image 3DCE reads the first point with 1 FP (1/2), MULAN the
    # last (2/2); so the reading is a real choice, recorded with every evaluation.
    lesions = [GtLesion((0, 0, 9, 9)), GtLesion((50, 50, 59, 59))]
    boxes = np.array([[0, 0, 9, 9], [100, 100, 109, 109], [50, 50, 59, 59], [200, 200, 209, 209]], float)
    case = ImageCase("a", lesions, boxes, np.array([0.9, 0.8, 0.7, 0.6]))
    curve = froc_curve([case])
    assert curve.sens_at([1.0], reading="3dce") == [0.5]
    assert curve.sens_at([1.0]) == [1.0]
    assert evaluate_cases([case])["froc_reading"] == "mulan"
