"""Stored detector predictions: caching per model version, matching to lesions, accept and reject."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from app.db.models import KeySlice, Lesion, Prediction, PredictionRun, utcnow
from app.review.audit import record
from app.review.corrections import check_lesion_type, get_key_slice, mark_started, size_mm, snapshot
from app.review.errors import EditConflictError, InvalidInputError, NotFoundError
from app.review.serialize import load_lesion_dict, prediction_dict
from app.review.summary import matches_any, refresh_summary
from app.review.users import UserInfo


def _run(session: Session, key_slice_id: int, model_version: str) -> PredictionRun | None:
    return session.execute(
        select(PredictionRun).where(
            PredictionRun.key_slice_id == key_slice_id, PredictionRun.model_version == model_version
        )
    ).scalar_one_or_none()


def has_run(*, session: Session, file_name: str, model_version: str) -> bool:
    """True when this model version already ran on the key slice (even if it found nothing)."""
    ks = get_key_slice(session, file_name)
    return _run(session, ks.id, model_version) is not None


def store_predictions(
    *,
    session: Session,
    file_name: str,
    model_version: str,
    detections: Sequence[Any],
    threshold: float | None = None,
    commit: bool = True,
) -> list[dict[str, Any]]:
    """Store detections (objects with .box and .score) and record the run, unless this version ran here."""
    ks = get_key_slice(session, file_name)
    if _run(session, ks.id, model_version) is None:
        lesion_boxes = _lesion_boxes(session, ks.id)
        now = utcnow()
        for det in detections:
            box = [float(v) for v in det.box]
            session.add(
                Prediction(
                    key_slice_id=ks.id,
                    model_version=model_version,
                    box=box,
                    score=float(det.score),
                    status="pending",
                    matches_annotation=matches_any(box, lesion_boxes),
                    created_at=now,
                )
            )
        # Recorded in the same transaction as the boxes, so an empty result is cached too.
        session.add(
            PredictionRun(
                key_slice_id=ks.id,
                model_version=model_version,
                created_at=now,
                threshold=threshold,
                prediction_count=len(detections),
            )
        )
        try:
            session.flush()
        except IntegrityError:
            # A concurrent request stored this run first; serve what it stored.
            session.rollback()
            return list_predictions(session=session, file_name=file_name, model_version=model_version)
        refresh_summary(session=session, key_slice=ks)
    if commit:
        session.commit()
    return list_predictions(session=session, file_name=file_name, model_version=model_version)


def list_predictions(
    *, session: Session, file_name: str, threshold: float = 0.0, model_version: str | None = None
) -> list[dict[str, Any]]:
    """Stored predictions of a key slice with score >= threshold, best first."""
    ks = get_key_slice(session, file_name)
    query = select(Prediction).where(Prediction.key_slice_id == ks.id, Prediction.score >= threshold)
    if model_version is not None:
        query = query.where(Prediction.model_version == model_version)
    boxes = _lesion_boxes(session, ks.id)
    preds = session.execute(query.order_by(Prediction.score.desc())).scalars()
    return [prediction_dict(p, boxes) for p in preds]


def _lesion_boxes(session: Session, key_slice_id: int) -> list[list[float]]:
    """Boxes of the key slice's current (not deleted) lesions."""
    lesions = session.execute(
        select(Lesion).where(Lesion.key_slice_id == key_slice_id, Lesion.review != "deleted")
    ).scalars()
    return [le.box for le in lesions]


def _get(session: Session, prediction_id: int, version: int) -> Prediction:
    pred = session.get(Prediction, prediction_id)
    if pred is None:
        raise NotFoundError(f"no prediction {prediction_id}")
    if pred.version != version:
        raise EditConflictError(
            f"prediction {prediction_id} was changed by someone else first", current=prediction_dict(pred)
        )
    if pred.status != "pending":
        raise InvalidInputError(f"prediction {prediction_id} is already {pred.status}")
    return pred


def _flush_or_conflict(session: Session, prediction_id: int) -> None:
    """Flush; when a racing writer won, roll back and raise a conflict carrying their state."""
    try:
        session.flush()
    except StaleDataError:
        session.rollback()
        winner = session.get(Prediction, prediction_id)
        raise EditConflictError(
            f"prediction {prediction_id} was changed by someone else first",
            current=prediction_dict(winner) if winner is not None else {},
        ) from None


def accept(
    *, session: Session, user: UserInfo, prediction_id: int, version: int, lesion_type: int | None = None
) -> dict[str, Any]:
    """Turn a prediction into an added lesion (source prediction, with model version and score)."""
    pred = _get(session, prediction_id, version)
    ks = session.get_one(KeySlice, pred.key_slice_id)
    box = [float(v) for v in pred.box]
    lesion = Lesion(
        key_slice_id=ks.id,
        origin="added",
        source="prediction",
        review="confirmed",
        recist=None,
        box=box,
        lesion_type=check_lesion_type(lesion_type if lesion_type is not None else -1),
        slice_index=ks.key_slice_index,
        size_mm=size_mm(None, box, ks.spacing_x),
        noisy=False,
        model_version=pred.model_version,
        score=pred.score,
        prediction_id=pred.id,
        updated_by_id=user.id,
        updated_at=utcnow(),
    )
    session.add(lesion)
    session.flush()
    pred.status = "accepted"
    pred.lesion_id = lesion.id
    _flush_or_conflict(session, prediction_id)
    ks.version += 1
    refresh_summary(session=session, key_slice=ks)
    record(
        session=session,
        user=user,
        action="accept_prediction",
        key_slice_id=ks.id,
        lesion_id=lesion.id,
        prediction_id=pred.id,
        before=None,
        after=snapshot(lesion),
    )
    session.commit()
    result = load_lesion_dict(session, lesion)
    mark_started(session, user, ks.id)
    return result


def reject(*, session: Session, user: UserInfo, prediction_id: int, version: int) -> dict[str, Any]:
    """Mark a prediction as wrong."""
    pred = _get(session, prediction_id, version)
    before = prediction_dict(pred)
    pred.status = "rejected"
    _flush_or_conflict(session, prediction_id)
    ks = session.get_one(KeySlice, pred.key_slice_id)
    refresh_summary(session=session, key_slice=ks)
    record(
        session=session,
        user=user,
        action="reject_prediction",
        key_slice_id=ks.id,
        prediction_id=pred.id,
        before=before,
        after=prediction_dict(pred),
        undoable=False,
    )
    session.commit()
    result = prediction_dict(pred)
    mark_started(session, user, ks.id)
    return result
