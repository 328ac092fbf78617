"""Stored detector predictions: caching per model version, matching to lesions, accept and reject."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from app.db.models import KeySlice, Lesion, Prediction, PredictionRun, utcnow
from app.deeplesion.context import missing_context
from app.deeplesion.errors import DeepLesionError
from app.deeplesion.store import parse_file_name
from app.detection.errors import DetectionError, InferenceError
from app.review.corrections import (
    bump_version,
    check_geometry,
    check_lesion_type,
    finish_step,
    get_key_slice,
    new_lesion,
    snapshot,
)
from app.review.errors import (
    DuplicateLesionError,
    EditConflictError,
    InvalidInputError,
    NoModelError,
    NotFoundError,
)
from app.review.serialize import key_slice_dict, prediction_dict
from app.review.summary import key_slice_boxes, matches_any, refresh_summary
from app.review.users import UserInfo
from app.review.vocabulary import ORIGIN_PREDICTION


def _run(session: Session, key_slice_id: int, model_version: str) -> PredictionRun | None:
    return session.execute(
        select(PredictionRun).where(
            PredictionRun.key_slice_id == key_slice_id, PredictionRun.model_version == model_version
        )
    ).scalar_one_or_none()


def _add_run(
    session: Session, ks: KeySlice, model_version: str, detections: Sequence[Any], threshold: float | None
) -> None:
    """Add one run's detections as pending predictions and its PredictionRun row (not flushed)."""
    lesion_boxes = _lesion_boxes(session, ks)
    now = utcnow()
    for det in detections:
        box = [float(v) for v in det.box]
        session.add(
            Prediction(
                key_slice_id=ks.id,
                model_version=model_version,
                box=box,
                recist=_proposal(det),
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


def store_predictions(
    *,
    session: Session,
    file_name: str,
    model_version: str,
    detections: Sequence[Any],
    threshold: float | None = None,
    commit: bool = True,
) -> list[dict[str, Any]]:
    """Store detections (.box, .score, optional .recist) and record the run, unless this version ran here."""
    ks = get_key_slice(session, file_name)
    if _run(session, ks.id, model_version) is None:
        _add_run(session, ks, model_version, detections, threshold)
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


def _proposal(det: Any) -> list[float] | None:
    """The detection's proposed RECIST as stored (None when its detector proposes none)."""
    recist = getattr(det, "recist", None)
    return None if recist is None else [round(float(v), 2) for v in recist]


def _accepted_recist(ks: KeySlice, pred: Prediction, box: list[float]) -> list[float] | None:
    """The prediction's proposed RECIST checked against the image; None (a box-only lesion) when unusable."""
    if pred.recist is None:
        return None
    try:
        recist, _ = check_geometry(ks, list(pred.recist), box)
    except (DeepLesionError, InvalidInputError):
        return None
    return recist


# A batch that lost a race to a concurrent writer is retried without the key slices it stored meanwhile.
BATCH_RETRIES = 5


def store_prediction_batch(
    *,
    session: Session,
    model_version: str,
    runs: Sequence[tuple[str, Sequence[Any]]],
    threshold: float | None = None,
) -> int:
    """Store (file_name, detections) runs in ONE commit, leaving out key slices this version already ran on.

    Returns how many runs it stored; an unknown file name is a NotFoundError and stores nothing.
    """
    names = [name for name, _ in runs]
    for _ in range(BATCH_RETRIES):
        key_slices = {
            ks.file_name: ks for ks in session.scalars(select(KeySlice).where(KeySlice.file_name.in_(names)))
        }
        unknown = [name for name in names if name not in key_slices]
        if unknown:
            raise NotFoundError(f"no key slice {unknown[0]}")
        ran = set(
            session.scalars(
                select(PredictionRun.key_slice_id).where(
                    PredictionRun.model_version == model_version,
                    PredictionRun.key_slice_id.in_([ks.id for ks in key_slices.values()]),
                )
            )
        )
        todo = [(key_slices[name], dets) for name, dets in runs if key_slices[name].id not in ran]
        try:
            for ks, dets in todo:
                _add_run(session, ks, model_version, dets, threshold)
            session.flush()
            for ks, _ in todo:
                refresh_summary(session=session, key_slice=ks)
            session.commit()
        except IntegrityError:
            # A viewer's predict stored one of these runs first: look again and store the rest.
            session.rollback()
            continue
        return len(todo)
    raise InferenceError(f"could not store a batch of {len(runs)} runs: concurrent writers kept winning")


def list_predictions(
    *, session: Session, file_name: str, threshold: float = 0.0, model_version: str | None = None
) -> list[dict[str, Any]]:
    """Stored predictions of a key slice with score >= threshold, best first."""
    ks = get_key_slice(session, file_name)
    query = select(Prediction).where(Prediction.key_slice_id == ks.id, Prediction.score >= threshold)
    if model_version is not None:
        query = query.where(Prediction.model_version == model_version)
    boxes = _lesion_boxes(session, ks)
    preds = session.execute(query.order_by(Prediction.score.desc())).scalars()
    return [prediction_dict(p, boxes) for p in preds]


def _current_lesions(session: Session, key_slice_id: int) -> list[Lesion]:
    """The key slice's current (not deleted) lesions."""
    return list(
        session.execute(
            select(Lesion).where(Lesion.key_slice_id == key_slice_id, Lesion.is_current)
        ).scalars()
    )


def _lesion_boxes(session: Session, ks: KeySlice) -> list[list[float]]:
    """Boxes of the current lesions on the key slice itself, which its predictions are matched against."""
    return key_slice_boxes(_current_lesions(session, ks.id), ks.key_slice_index)


def prediction_conflict(session: Session, user: UserInfo, pred: Prediction) -> EditConflictError:
    """A 409 carrying the prediction as it is now and its key slice, like every review conflict."""
    ks = session.get_one(KeySlice, pred.key_slice_id)
    return EditConflictError(
        f"prediction {pred.id} was changed by someone else first",
        current=prediction_dict(pred),
        key_slice=key_slice_dict(session, ks, user.id),
    )


def _get(session: Session, user: UserInfo, prediction_id: int, version: int) -> Prediction:
    pred = session.get(Prediction, prediction_id)
    if pred is None:
        raise NotFoundError(f"no prediction {prediction_id}")
    if pred.version != version:
        raise prediction_conflict(session, user, pred)
    if pred.status != "pending":
        raise InvalidInputError(f"prediction {prediction_id} is already {pred.status}")
    return pred


def _flush_or_conflict(session: Session, user: UserInfo, prediction_id: int) -> None:
    """Flush; when a racing writer won, roll back and raise a conflict carrying their state."""
    try:
        session.flush()
    except StaleDataError:
        session.rollback()
        winner = session.get(Prediction, prediction_id)
        if winner is None:
            raise NotFoundError(f"no prediction {prediction_id}") from None
        raise prediction_conflict(session, user, winner) from None


def accept(
    *,
    session: Session,
    user: UserInfo,
    prediction_id: int,
    version: int,
    lesion_type: int | None = None,
    allow_duplicate: bool = False,
) -> dict[str, Any]:
    """Turn a prediction into a lesion (origin prediction) measured by its RECIST proposal, else box-only.

    A prediction that hits a current lesion of the key slice would add it twice: refused unless
    allow_duplicate (the viewer asks the reviewer first).
    """
    pred = _get(session, user, prediction_id, version)
    ks = session.get_one(KeySlice, pred.key_slice_id)
    box = [float(v) for v in pred.box]
    if not allow_duplicate:
        for le in _current_lesions(session, ks.id):
            if le.slice_index == ks.key_slice_index and matches_any(box, [le.box]):
                raise DuplicateLesionError(
                    f"prediction {prediction_id} marks lesion {le.id} again; accept it anyway with "
                    "allow_duplicate",
                    lesion_id=le.id,
                )
    kind = check_lesion_type(lesion_type if lesion_type is not None else -1)
    bump_version(session, ks)
    lesion = new_lesion(
        ks,
        user,
        origin=ORIGIN_PREDICTION,
        recist=_accepted_recist(ks, pred, box),
        box=box,
        lesion_type=kind,
        slice_index=ks.key_slice_index,
    )
    lesion.model_version = pred.model_version
    lesion.score = pred.score
    lesion.prediction_id = pred.id
    session.add(lesion)
    session.flush()
    pred.status = "accepted"
    pred.lesion_id = lesion.id
    _flush_or_conflict(session, user, prediction_id)
    return finish_step(
        session,
        user,
        ks,
        action="accept_prediction",
        lesion_id=lesion.id,
        prediction_id=pred.id,
        after=snapshot(lesion),
    )


def reject(*, session: Session, user: UserInfo, prediction_id: int, version: int) -> dict[str, Any]:
    """Mark a prediction as wrong: an undoable step like any other."""
    pred = _get(session, user, prediction_id, version)
    ks = session.get_one(KeySlice, pred.key_slice_id)
    bump_version(session, ks)
    before = {"status": pred.status, "version": pred.version}
    pred.status = "rejected"
    _flush_or_conflict(session, user, prediction_id)
    after = {"status": pred.status, "version": pred.version}
    return finish_step(
        session, user, ks, action="reject_prediction", prediction_id=pred.id, before=before, after=after
    )


def predict(
    *,
    session: Session,
    user: UserInfo,
    file_name: str,
    detector: Any,
    store: Any,
    threshold: float,
    store_threshold: float,
) -> dict[str, Any]:
    """Run the detector on a key slice (or reuse this model version's stored run) and answer the key slice.

    Detections are stored down to `store_threshold` so that a lower threshold later is served from the run.
    """
    ks = get_key_slice(session, file_name)  # 404 for unknown names, before any model work
    if detector is None:
        raise NoModelError("no detector model is loaded")
    model_version = str(detector.model_version)
    started = time.perf_counter()
    cached = _run(session, ks.id, model_version) is not None
    if not cached:
        floor = min(threshold, store_threshold)
        try:
            detections = detector.predict(
                file_name, store, spacing_mm=(ks.spacing_x, ks.spacing_y, ks.spacing_z), threshold=floor
            )
        except (DeepLesionError, DetectionError):
            raise
        except Exception as exc:  # a model bug must not take the review session down with a 500
            raise InferenceError(f"the detector {model_version} failed on {file_name}: {exc}") from exc
        store_predictions(
            session=session,
            file_name=file_name,
            model_version=model_version,
            detections=detections,
            threshold=floor,
        )
    series, key_index = parse_file_name(file_name)
    run = {
        "context_missing": missing_context(key_index, ks.spacing_z, store.stored_slices(series)),
        "model_version": model_version,
        "provider": getattr(detector, "provider", None),
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        "cached": cached,
        "threshold": threshold,
    }
    return {"run": run, "key_slice": key_slice_dict(session, ks, user.id)}
