"""Overlay drawing: RECIST axes, boxes and labels burnt into an RGB image at the right pixels."""

from __future__ import annotations

import numpy as np
import pytest

from app.deeplesion.render import OverlayMark, draw_overlays
from app.review.vocabulary import palette_rgb

ORIGINAL, CORRECTED, ADDED, PREDICTION = (
    palette_rgb(k) for k in ("original", "corrected", "added", "predicted")
)


def _gray(h: int = 64, w: int = 80) -> np.ndarray:
    return np.full((h, w), 40, dtype=np.uint8)


def test_recist_axes_are_drawn_in_the_mark_colour_on_their_pixels() -> None:
    mark = OverlayMark(recist=(10, 30, 50, 30, 30, 20, 30, 40), box=None, label="", color=ORIGINAL)
    out = np.asarray(draw_overlays(_gray(), [mark]))
    assert out.shape == (64, 80, 3)
    assert tuple(out[30, 20]) == ORIGINAL  # on the long axis
    assert tuple(out[25, 30]) == ORIGINAL  # on the short axis
    assert tuple(out[10, 10]) == (40, 40, 40)  # background untouched


def test_box_outline_is_drawn_and_its_inside_left_alone() -> None:
    mark = OverlayMark(recist=None, box=(20, 10, 60, 50), label="", color=PREDICTION)
    out = np.asarray(draw_overlays(_gray(), [mark]))
    assert tuple(out[10, 40]) == PREDICTION and tuple(out[50, 40]) == PREDICTION
    assert tuple(out[30, 20]) == PREDICTION and tuple(out[30, 60]) == PREDICTION
    assert tuple(out[30, 40]) == (40, 40, 40)


def test_scale_enlarges_the_image_and_moves_marks_with_it() -> None:
    mark = OverlayMark(recist=None, box=(20, 10, 60, 50), label="", color=CORRECTED)
    out = np.asarray(draw_overlays(_gray(), [mark], scale=2.0))
    assert out.shape == (128, 160, 3)
    # Pixel 40 spans [39.5, 40.5] at scale 1, so its centre maps to 2 * 40.5 - 0.5 = 80.5 at scale 2.
    assert tuple(out[20, 80]) == CORRECTED or tuple(out[21, 80]) == CORRECTED
    assert tuple(out[60, 80]) == (40, 40, 40)


def test_label_text_is_drawn_near_the_mark() -> None:
    mark = OverlayMark(recist=None, box=(20, 30, 60, 50), label="12.3 x 8.1 mm", color=ADDED)
    plain = np.asarray(draw_overlays(_gray(), [OverlayMark(None, (20, 30, 60, 50), "", ADDED)]))
    labelled = np.asarray(draw_overlays(_gray(), [mark]))
    changed = np.argwhere(np.any(plain != labelled, axis=2))
    assert len(changed) > 10
    assert changed[:, 0].max() < 30  # above the box


def test_colours_are_distinct() -> None:
    assert len({ORIGINAL, CORRECTED, ADDED, PREDICTION}) == 4


@pytest.mark.parametrize(
    ("gray", "mark", "scale"),
    [
        (np.zeros((4, 4), dtype=np.float32), None, 1.0),
        (np.zeros((4, 4, 3), dtype=np.uint8), None, 1.0),
        (np.zeros((4, 4), dtype=np.uint8), OverlayMark((1, 2, 3), None, "", ORIGINAL), 1.0),
        (np.zeros((4, 4), dtype=np.uint8), OverlayMark(None, (1, 2, 3), "", ORIGINAL), 1.0),
        (np.zeros((4, 4), dtype=np.uint8), None, 0.0),
    ],
)
def test_bad_input_is_a_clear_value_error(gray: np.ndarray, mark: OverlayMark | None, scale: float) -> None:
    with pytest.raises(ValueError):
        draw_overlays(gray, [mark] if mark else [], scale=scale)
