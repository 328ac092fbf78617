"""The denormalised work-list summary of a key slice, recomputed after every change."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import KeySlice, Lesion, Prediction
from app.deeplesion.geometry import HIT_IOU, box_iou, matches_any

LESION_TYPE_MIN = -1
# The hit criterion's one home is app.deeplesion.geometry (shared with the FROC); these names stay importable.
MATCH_IOU = HIT_IOU
iou = box_iou
__all__ = [
    "MATCH_IOU",
    "iou",
    "key_slice_boxes",
    "matches_any",
    "refresh_summary",
    "type_bit",
    "type_mask",
    "types_from_mask",
]


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
