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
from app.deeplesion.geometry import lesion_diameters, recist_diameters
from app.deeplesion.schema import SPLITS, pixel_coordinates
from app.review.lesion_state import OriginalFacts, geometry_edited, is_edited, layer, review_state
from app.review.summary import key_slice_boxes, matches_any
from app.review.vocabulary import ORIGIN_PREDICTION

SPLIT_NAMES = SPLITS
SPLIT_IDS = {v: k for k, v in SPLIT_NAMES.items()}


def iso(at: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes that were stored as UTC."""
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.isoformat()


def _mm(px: Sequence[float] | None, spacing_x: float) -> list[float] | None:
    return None if px is None else [round(v * spacing_x, 3) for v in px]


def original_facts(orig: OriginalLesion, key_slice: KeySlice) -> OriginalFacts:
    """An imported row's geometry in the app's 0-based frame (the file counts from 1), slice and type."""
    recist = orig.measurement_coordinates
    return OriginalFacts(
        recist=None if recist is None else pixel_coordinates(recist),
        box=pixel_coordinates(orig.bounding_box),
        slice_index=key_slice.key_slice_index,
        lesion_type=orig.coarse_lesion_type,
    )


def _geometry(
    recist: Sequence[float] | None,
    box: Sequence[float],
    diameters: Sequence[float] | None,
    lesion_type: int,
    slice_index: int,
    spacing_x: float,
) -> dict[str, Any]:
    return {
        "recist": None if recist is None else [float(v) for v in recist],
        "box": [float(v) for v in box],
        "diameters_px": None if diameters is None else [float(v) for v in diameters],
        "diameters_mm": _mm(diameters, spacing_x),
        "long_axis_mm": round(lesion_diameters(recist, box)[0] * spacing_x, 3),
        "lesion_type": lesion_type,
        "slice_index": slice_index,
    }


def original_geometry(orig: OriginalLesion, key_slice: KeySlice) -> dict[str, Any]:
    """The Geometry of an imported lesion, as in the CSV but in the 0-based frame."""
    facts = original_facts(orig, key_slice)
    diam = orig.lesion_diameters_px
    return _geometry(
        facts.recist,
        facts.box,
        None if diam is None else [float(v) for v in diam],
        facts.lesion_type,
        facts.slice_index,
        key_slice.spacing_x,
    )


def current_diameters(
    lesion: Lesion, orig: OriginalLesion | None, original: OriginalFacts | None
) -> tuple[float, ...] | None:
    """Measured diameters in px: the file's own digits for an untouched RECIST; None for a box."""
    if lesion.recist is None:
        return None
    untouched = orig is not None and original is not None and not geometry_edited(lesion, original)
    if untouched and orig is not None and orig.lesion_diameters_px is not None:
        return tuple(float(v) for v in orig.lesion_diameters_px)
    return tuple(round(v, 3) for v in recist_diameters(lesion.recist))


def current_geometry(
    lesion: Lesion, key_slice: KeySlice, orig: OriginalLesion | None, original: OriginalFacts | None
) -> dict[str, Any]:
    """The Geometry of a lesion as reviewed now."""
    return _geometry(
        lesion.recist,
        lesion.box,
        current_diameters(lesion, orig, original),
        lesion.lesion_type,
        lesion.slice_index,
        key_slice.spacing_x,
    )


def user_names(session: Session, ids: set[int | None]) -> dict[int, str]:
    """Names of users by id."""
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return dict(session.execute(select(User.id, User.name).where(User.id.in_(wanted))).all())


def _who(by_id: int | None, at: datetime | None, names: dict[int, str]) -> dict[str, Any] | None:
    return None if by_id is None else {"by": names.get(by_id), "at": iso(at)}


def lesion_user_ids(lesion: Lesion) -> set[int | None]:
    """Every user a lesion's JSON names."""
    return {lesion.updated_by_id, lesion.flagged_by_id, lesion.confirmed_by_id, lesion.created_by_id}


def lesion_dict(
    lesion: Lesion,
    key_slice: KeySlice,
    orig: OriginalLesion | None,
    names: dict[int, str],
) -> dict[str, Any]:
    """The API Lesion (docs/api.md): the independent facts, and what the rules derive from them."""
    original = original_facts(orig, key_slice) if orig is not None else None
    flag = None
    if lesion.flag_reason is not None:
        flag = {
            "reason": lesion.flag_reason,
            "note": lesion.flag_note or "",
            **(_who(lesion.flagged_by_id, lesion.flagged_at, names) or {"by": None, "at": None}),
        }
    prediction = None
    if lesion.origin == ORIGIN_PREDICTION:
        prediction = {
            "id": lesion.prediction_id,
            "model_version": lesion.model_version,
            "score": lesion.score,
        }
    return {
        "id": lesion.id,
        "key_slice": key_slice.file_name,
        "version": lesion.version,
        "origin": lesion.origin,
        "current": current_geometry(lesion, key_slice, orig, original),
        "original": original_geometry(orig, key_slice) if orig is not None else None,
        "measured": lesion.recist is not None,
        "flag": flag,
        "confirmed": _who(lesion.confirmed_by_id, lesion.confirmed_at, names),
        "created": _who(lesion.created_by_id, lesion.created_at, names),
        "prediction": prediction,
        "edited": is_edited(lesion, original),
        "review": review_state(lesion, original),
        "layer": layer(lesion, original),
        "updated_by": names.get(lesion.updated_by_id) if lesion.updated_by_id is not None else None,
        "updated_at": iso(lesion.updated_at),
    }


def load_lesion_dict(session: Session, lesion: Lesion) -> dict[str, Any]:
    """The API Lesion, loading its key slice, original and the users it names."""
    key_slice = session.get_one(KeySlice, lesion.key_slice_id)
    orig = session.get(OriginalLesion, lesion.original_id) if lesion.original_id else None
    return lesion_dict(lesion, key_slice, orig, user_names(session, lesion_user_ids(lesion)))


def prediction_dict(
    pred: Prediction, lesion_boxes: Sequence[Sequence[float]] | None = None
) -> dict[str, Any]:
    """The API Prediction; matches_annotation against `lesion_boxes` (the current lesions) when given."""
    matches = bool(pred.matches_annotation) if lesion_boxes is None else matches_any(pred.box, lesion_boxes)
    return {
        "id": pred.id,
        "box": [float(v) for v in pred.box],
        "recist": [float(v) for v in pred.recist] if pred.recist is not None else None,
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


def own_review(session: Session, key_slice_id: int, user_id: int) -> KeySliceReview | None:
    """One reviewer's status row of a key slice, if they ever set one."""
    return session.execute(
        select(KeySliceReview).where(
            KeySliceReview.key_slice_id == key_slice_id, KeySliceReview.user_id == user_id
        )
    ).scalar_one_or_none()


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
    current = [le for le in lesions if le.is_current]
    names = user_names(session, set().union(*(lesion_user_ids(le) for le in current)))
    current_boxes = key_slice_boxes(current, key_slice.key_slice_index)
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
        review = own_review(session, key_slice.id, user_id)
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
            lesion_dict(le, key_slice, originals.get(le.original_id) if le.original_id else None, names)
            for le in current
        ],
        "predictions": [prediction_dict(p, current_boxes) for p in preds],
    }
