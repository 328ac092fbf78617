"""One hit criterion: the review side (summary.matches_any) decides exactly as the FROC does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.detection.froc import GtLesion, ImageCase, froc_curve
from app.review.summary import MATCH_IOU, iou, matches_any

# A prediction [0,0,2,27] on a lesion [0,0,2,13]: 3x28 and 3x14 pixels inclusive, IoU exactly 0.5
# (a hit for the FROC); half-open pixels give 26/54 = 0.481.
PRED = (0.0, 0.0, 2.0, 27.0)
LESION = (0.0, 0.0, 2.0, 13.0)


Box = tuple[float, float, float, float]


def _froc_hits(box: Box, lesions: list[Box]) -> bool:
    """Whether the FROC counts one detection `box` on an image with `lesions` as a hit."""
    case = ImageCase(
        "k",
        [GtLesion(b) for b in lesions],
        np.array([box], dtype=float),
        np.array([0.9]),
    )
    return froc_curve([case]).sensitivity[-1] > 0


def test_the_review_iou_uses_the_froc_inclusive_pixels() -> None:
    assert iou(PRED, LESION) == pytest.approx(0.5)


def test_a_prediction_the_froc_counts_as_a_hit_matches_its_lesion_in_review() -> None:
    assert _froc_hits(PRED, [LESION])
    assert matches_any(PRED, [LESION])


def test_match_iou_is_the_froc_threshold() -> None:
    from app.detection.froc import IOU_THRESHOLD

    assert MATCH_IOU == IOU_THRESHOLD


# Half pixels too: stored boxes are floats, and 0.5 steps reach IoU values exactly at the threshold.
_coord = st.integers(min_value=0, max_value=120).map(lambda v: v / 2)


@st.composite
def _boxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    x1, y1 = draw(_coord), draw(_coord)
    w = draw(st.integers(min_value=0, max_value=80)) / 2
    h = draw(st.integers(min_value=0, max_value=80)) / 2
    return (x1, y1, x1 + w, y1 + h)


@settings(max_examples=300, deadline=None)
@given(box=_boxes(), lesions=st.lists(_boxes(), min_size=1, max_size=4))
def test_review_match_and_froc_hit_agree_on_every_box(
    box: tuple[float, float, float, float], lesions: list[tuple[float, float, float, float]]
) -> None:
    assert matches_any(box, lesions) == _froc_hits(box, lesions)
