"""The denormalised work-list summary of a key slice, recomputed after every change."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import KeySlice, Lesion, Prediction

LESION_TYPE_MIN = -1
# A prediction overlapping a current lesion this much is that lesion (the dataset's hit criterion).
MATCH_IOU = 0.5


def type_bit(lesion_type: int) -> int:
    """The bit of one lesion type in KeySlice.lesion_type_mask."""
    return 1 << (int(lesion_type) - LESION_TYPE_MIN)


def type_mask(types: Iterable[int]) -> int:
    """Bit mask of a set of lesion types."""
    mask = 0
    for t in types:
        mask |= type_bit(t)
    return mask


def types_from_mask(mask: int) -> list[int]:
    """Lesion types set in a mask, ascending."""
    return [t for t in range(LESION_TYPE_MIN, 9) if mask & type_bit(t)]


def refresh_summary(*, session: Session, key_slice: KeySlice) -> None:
    """Recompute lesion and prediction summary columns of one key slice from its current rows."""
    lesions = (
        session.execute(select(Lesion).where(Lesion.key_slice_id == key_slice.id, Lesion.is_current))
        .scalars()
        .all()
    )
    key_slice.lesion_count = len(lesions)
    key_slice.max_size_mm = max((le.size_mm for le in lesions), default=0.0)  # long axes
    key_slice.lesion_type_mask = type_mask(le.lesion_type for le in lesions)
    key_slice.noisy = any(le.is_noisy for le in lesions)
    preds = session.execute(select(Prediction).where(Prediction.key_slice_id == key_slice.id)).scalars().all()
    key_slice.prediction_count = len(preds)
    pending = [p for p in preds if p.status == "pending"]
    key_slice.unreviewed_predictions = len(pending)
    # Matched against the lesions as they are now, so a lesion added or edited by hand takes its
    # prediction out of the screening queue (the stored flag records the match at prediction time).
    boxes = key_slice_boxes(lesions, key_slice.key_slice_index)
    unmatched = [p.score for p in pending if not matches_any(p.box, boxes)]
    key_slice.missed_score = max(unmatched) if unmatched else None


def key_slice_boxes(lesions: Iterable[Lesion], key_slice_index: int) -> list[list[float]]:
    """Boxes of the lesions that lie on the key slice itself: the only ones a key-slice prediction can hit."""
    return [le.box for le in lesions if le.slice_index == key_slice_index]


def matches_any(box: Sequence[float], lesion_boxes: Iterable[Sequence[float]]) -> bool:
    """True when the box is one of these lesions by the dataset's hit criterion (IoU >= MATCH_IOU)."""
    return any(iou(box, b) >= MATCH_IOU for b in lesion_boxes)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
