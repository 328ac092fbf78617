"""Batch screening: the detector over the imported key slices into stored predictions, the missed queue."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import KeySlice, Lesion, Prediction
from app.db.session import assert_schema_current, make_engine, make_session_factory
from app.detection.batch import SliceTask, detect_one
from app.detection.pipeline import ProgressFn, split_code
from app.detection.screening import (
    Calibration,
    QueueItem,
    hidden_recall,
    load_hidden_lesions,
    queue_at_threshold,
)
from app.review.jobs import JobContext, JobKind, JobRunner
from app.review.predictions import has_run, store_predictions
from app.review.summary import matches_any

log = logging.getLogger(__name__)


class NothingToScreenError(ValueError):
    """No imported key slice matches the request (nothing imported yet, or an empty split)."""


def missed_queue(
    *, session: Session, model_version: str, calibration: Calibration | None = None
) -> list[QueueItem]:
    """Pending predictions of a model that match no current lesion: the possible-missed queue."""
    pending = (Prediction.model_version == model_version, Prediction.status == "pending")
    rows = session.execute(
        select(Prediction.key_slice_id, KeySlice.file_name, Prediction.box, Prediction.score)
        .join(KeySlice, KeySlice.id == Prediction.key_slice_id)
        .where(*pending)
    ).all()
    # Matched against the lesions as they are now (a lesion drawn by hand since the prediction counts).
    boxes: dict[int, list[list[float]]] = {}
    with_pending = select(Prediction.key_slice_id).where(*pending)
    # Only the lesions on the key slice itself: a lesion drawn on a context slice is not what it shows.
    for ks_id, box in session.execute(
        select(Lesion.key_slice_id, Lesion.box)
        .join(KeySlice, KeySlice.id == Lesion.key_slice_id)
        .where(
            Lesion.key_slice_id.in_(with_pending),
            Lesion.is_current,
            Lesion.slice_index == KeySlice.key_slice_index,
        )
    ):
        boxes.setdefault(ks_id, []).append(box)
    items = [
        QueueItem(f, (float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s))
        for ks_id, f, b, s in rows
        if not matches_any(b, boxes.get(ks_id, ()))
    ]
    if calibration is None or not items:
        return items
    probs = calibration([q.score for q in items])
    return [QueueItem(q.file_name, q.box, q.score, float(p)) for q, p in zip(items, probs, strict=True)]


def screen_key_slices(
    *,
    session_factory: sessionmaker[Session],
    data_dir: Path | str,
    detector: Any,
    split: str | None = None,
    limit: int | None = None,
    threshold: float = 0.3,
    progress: bool = False,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Predict every key slice of the split not yet run by this model version and store the predictions."""
    from tqdm import tqdm

    from app.deeplesion.store import SliceStore

    code = split_code(split)
    # Its own small cache: a batch pass would only evict the slices the viewer is using.
    store = SliceStore(data_dir)
    with session_factory() as session:
        query = select(KeySlice.file_name, KeySlice.spacing_x, KeySlice.spacing_y, KeySlice.spacing_z)
        if code is not None:
            query = query.where(KeySlice.split == code)
        todo = session.execute(query.order_by(KeySlice.file_name)).all()
    if not todo:
        where = "" if code is None else f" in the {split} split"
        raise NothingToScreenError(f"no imported key slices{where}")
    if limit is not None:
        todo = todo[:limit]
    total = len(todo)
    if on_progress is not None:
        on_progress(0, total)
    predicted = skipped = missing = 0
    for done, (file_name, sx, sy, sz) in enumerate(
        tqdm(todo, desc="screen", unit="slice", disable=not progress), 1
    ):
        with session_factory() as session:
            # The prediction_runs table remembers runs that found nothing too.
            if has_run(session=session, file_name=file_name, model_version=detector.model_version):
                skipped += 1
            else:
                res = detect_one(detector, store, SliceTask(file_name, (sx, sy, sz)), threshold)
                if res.error is not None:
                    missing += 1
                else:
                    store_predictions(
                        session=session,
                        file_name=file_name,
                        model_version=detector.model_version,
                        detections=list(res.detections),
                        threshold=threshold,
                    )
                    predicted += 1
        # Between key slices, each stored in its own commit: raising here stops the pass cleanly.
        if on_progress is not None:
            on_progress(done, total)
    calibration = getattr(detector, "calibration", None)
    queue_threshold = getattr(detector, "screening_threshold", None)
    with session_factory() as session:
        queue = missed_queue(session=session, model_version=detector.model_version, calibration=calibration)
    result: dict[str, Any] = {
        "model_version": detector.model_version,
        "provider": detector.provider,
        "threshold": threshold,
        "key_slices": total,
        "predicted": predicted,
        "skipped": skipped,
        "missing": missing,
        "queue_predictions": len(queue),
        "queue_key_slices": len({q.file_name for q in queue}),
    }
    hidden = load_hidden_lesions(data_dir)
    if hidden is not None:
        screened = {row[0] for row in todo}
        hidden_here = [h for h in hidden if h.file_name in screened]
        result["hidden_lesions"] = hidden_recall(queue, hidden_here)
    if calibration is not None and queue_threshold is not None:
        # The threshold the model's calibration run chose on val; the queue is ranked by probability.
        result["queue_threshold_probability"] = queue_threshold
        result["queue_at_threshold"] = sum(1 for q in queue if (q.probability or 0.0) >= queue_threshold)
        if hidden is not None:
            result["hidden_lesions_at_threshold"] = queue_at_threshold(
                queue, hidden_here, calibration, queue_threshold
            )
    return result


def run_screen(
    *,
    database_url: str,
    data_dir: Path | str,
    detector: Any,
    split: str | None = None,
    limit: int | None = None,
    threshold: float = 0.3,
    progress: bool = True,
    on_progress: ProgressFn | None = None,
    requested_by: str = "cli",
) -> dict[str, Any]:
    """Screen the key slices of the database at `database_url` (the `screen` command); resumable.

    It runs as a screen job in this process, so that the app shows it and no other detector job overlaps it.
    """
    engine = make_engine(database_url)
    try:
        assert_schema_current(engine)
        factory = make_session_factory(engine)
        runner = JobRunner(session_factory=factory, data_dir=data_dir)
        params = {"split": split or "all", "threshold": threshold, "limit": limit}
        try:
            with factory() as session:
                job = runner.run_here(
                    session=session,
                    kind=SCREEN,
                    params=params,
                    detector=detector,
                    requested_by=requested_by,
                    on_progress=on_progress,
                    progress=progress,
                )
        except NothingToScreenError as exc:
            raise NothingToScreenError(
                f"{exc} in {database_url}: run `lesion-review import {data_dir}` first"
            ) from None
        return {**job["result"], "job_id": job["id"]}
    finally:
        engine.dispose()


def _screen(ctx: JobContext) -> dict[str, Any]:
    """A screen job's work, on the app's database."""
    limit = ctx.params.get("limit")
    return screen_key_slices(
        session_factory=ctx.session_factory,
        data_dir=ctx.data_dir,
        detector=ctx.detector,
        split=str(ctx.params["split"]),
        limit=None if limit is None else int(limit),
        threshold=float(ctx.params["threshold"]),
        on_progress=ctx.on_progress,
        progress=ctx.progress,
    )


SCREEN = JobKind(name="screen", work=_screen)
