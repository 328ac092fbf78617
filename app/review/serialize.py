"""JSON-ready dicts of lesions, predictions, audit entries and key slices, in the shapes of docs/api.md."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import (
    AuditEntry,
    KeySlice,
    KeySliceReview,
    Lesion,
    OriginalLesion,
    Prediction,
    Series,
    User,
)
from app.deeplesion.geometry import recist_diameters
from app.review.summary import matches_any

SPLIT_NAMES = {1: "train", 2: "val", 3: "test"}
SPLIT_IDS = {v: k for k, v in SPLIT_NAMES.items()}


def iso(at: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes that were stored as UTC."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.isoformat()


def _mm(px: list[float] | None, spacing_x: float) -> list[float] | None:
    return None if px is None else [round(v * spacing_x, 3) for v in px]


def original_geometry(orig: OriginalLesion, key_slice: KeySlice) -> dict[str, Any]:
    """The Geometry of an imported lesion, as in the CSV."""
    diam = [float(v) for v in orig.lesion_diameters_px]
    return {
        "recist": [float(v) for v in orig.measurement_coordinates],
        "box": [float(v) for v in orig.bounding_box],
        "diameters_px": diam,
        "diameters_mm": _mm(diam, key_slice.spacing_x),
        "lesion_type": orig.coarse_lesion_type,
        "noisy": bool(orig.possibly_noisy),
        "slice_index": key_slice.key_slice_index,
    }


def current_geometry(lesion: Lesion, key_slice: KeySlice, orig: OriginalLesion | None) -> dict[str, Any]:
    """The Geometry of a lesion as reviewed now."""
    recist = [float(v) for v in lesion.recist] if lesion.recist is not None else None
    diam: list[float] | None = None
    if recist is not None:
        if orig is not None and [float(v) for v in orig.measurement_coordinates] == recist:
            diam = [float(v) for v in orig.lesion_diameters_px]
        else:
            diam = [round(v, 3) for v in recist_diameters(recist)]
    return {
        "recist": recist,
        "box": [float(v) for v in lesion.box],
        "diameters_px": diam,
        "diameters_mm": _mm(diam, key_slice.spacing_x),
        "lesion_type": lesion.lesion_type,
        "noisy": bool(lesion.noisy or lesion.review == "flagged"),
        "slice_index": lesion.slice_index,
    }


def user_names(session: Session, ids: set[int | None]) -> dict[int, str]:
    """Names of users by id."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return dict(session.execute(select(User.id, User.name).where(User.id.in_(wanted))).all())


def lesion_dict(
    lesion: Lesion,
    key_slice: KeySlice,
    orig: OriginalLesion | None,
    updated_by: str | None,
) -> dict[str, Any]:
    """The API Lesion."""
    flag = None
    if lesion.review == "flagged":
        flag = {"reason": lesion.flag_reason, "text": lesion.flag_text or ""}
    return {
        "id": lesion.id,
        "key_slice": key_slice.file_name,
        "origin": lesion.origin,
        "source": lesion.source,
        "review": lesion.review,
        "version": lesion.version,
        "original": original_geometry(orig, key_slice) if orig is not None else None,
        "current": current_geometry(lesion, key_slice, orig),
        "flag": flag,
        "model_version": lesion.model_version,
        "score": lesion.score,
        "prediction_id": lesion.prediction_id,
        "updated_by": updated_by,
        "updated_at": iso(lesion.updated_at),
    }


def load_lesion_dict(session: Session, lesion: Lesion) -> dict[str, Any]:
    """The API Lesion, loading its key slice, original and editor."""
    key_slice = session.get_one(KeySlice, lesion.key_slice_id)
    orig = session.get(OriginalLesion, lesion.original_id) if lesion.original_id else None
    names = user_names(session, {lesion.updated_by_id})
    return lesion_dict(lesion, key_slice, orig, names.get(lesion.updated_by_id or -1))


def prediction_dict(
    pred: Prediction, lesion_boxes: Sequence[Sequence[float]] | None = None
) -> dict[str, Any]:
    """The API Prediction; matches_annotation against `lesion_boxes` (the current lesions) when given."""
    matches = bool(pred.matches_annotation) if lesion_boxes is None else matches_any(pred.box, lesion_boxes)
    return {
        "id": pred.id,
        "box": [float(v) for v in pred.box],
        "score": float(pred.score),
        "model_version": pred.model_version,
        "status": pred.status,
        "matches_annotation": matches,
        "lesion_id": pred.lesion_id,
        "version": pred.version,
        "created_at": iso(pred.created_at),
    }


def audit_dict(entry: AuditEntry) -> dict[str, Any]:
    """The API AuditEntry."""
    return {
        "id": entry.id,
        "at": iso(entry.at),
        "user": entry.user_name,
        "action": entry.action,
        "lesion_id": entry.lesion_id,
        "prediction_id": entry.prediction_id,
        "before": entry.before,
        "after": entry.after,
    }


def key_slice_dict(session: Session, key_slice: KeySlice, user_id: int | None) -> dict[str, Any]:
    """The API KeySlice detail: metadata, stored/missing context slices, merged lesions, predictions."""
    series = session.get_one(Series, key_slice.series_id)
    stored = sorted(int(s) for s in (series.stored_slices or []))
    stored_set = set(stored)
    wanted = range(key_slice.slice_first, key_slice.slice_last + 1)
    missing = [i for i in wanted if i not in stored_set]
    if key_slice.key_slice_index not in stored_set and key_slice.key_slice_index not in wanted:
        missing.append(key_slice.key_slice_index)
    lesions = (
        session.execute(select(Lesion).where(Lesion.key_slice_id == key_slice.id).order_by(Lesion.id))
        .scalars()
        .all()
    )
    orig_ids = [le.original_id for le in lesions if le.original_id is not None]
    originals = (
        {
            o.id: o
            for o in session.execute(select(OriginalLesion).where(OriginalLesion.id.in_(orig_ids))).scalars()
        }
        if orig_ids
        else {}
    )
    names = user_names(session, {le.updated_by_id for le in lesions})
    current_boxes = [le.box for le in lesions if le.review != "deleted"]
    preds = (
        session.execute(
            select(Prediction)
            .where(Prediction.key_slice_id == key_slice.id)
            .order_by(Prediction.score.desc())
        )
        .scalars()
        .all()
    )
    status, status_version = "unreviewed", 0
    if user_id is not None:
        review = session.execute(
            select(KeySliceReview).where(
                KeySliceReview.key_slice_id == key_slice.id, KeySliceReview.user_id == user_id
            )
        ).scalar_one_or_none()
        if review is not None:
            status, status_version = review.status, review.version
    return {
        "file_name": key_slice.file_name,
        "patient_index": key_slice.patient_index,
        "study_index": key_slice.study_index,
        "series_id": key_slice.series_index,
        "series_folder": series.folder,
        "key_slice_index": key_slice.key_slice_index,
        "split": SPLIT_NAMES.get(key_slice.split, str(key_slice.split)),
        "gender": key_slice.gender,
        "age": key_slice.age,
        "spacing_mm": [key_slice.spacing_x, key_slice.spacing_y, key_slice.spacing_z],
        "image_size": [key_slice.image_width, key_slice.image_height],
        "dicom_window": [key_slice.dicom_min, key_slice.dicom_max],
        "slice_range": [key_slice.slice_first, key_slice.slice_last],
        "stored_slices": stored,
        "missing_slices": missing,
        "key_slice_stored": key_slice.key_slice_index in stored_set,
        "status": status,
        "status_version": status_version,
        "version": key_slice.version,
        "lesions": [
            lesion_dict(
                le,
                key_slice,
                originals.get(le.original_id) if le.original_id else None,
                names.get(le.updated_by_id) if le.updated_by_id else None,
            )
            for le in lesions
            if le.review != "deleted"
        ],
        "predictions": [prediction_dict(p, current_boxes) for p in preds],
    }
