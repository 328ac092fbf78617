"""Batch screening: the detector over the imported key slices into stored predictions, the missed queue."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import KeySlice, Lesion, Prediction, PredictionRun
from app.db.session import assert_schema_current, make_engine, make_session_factory
from app.detection.batch import SliceResult, SliceRunner, SliceTask, detect_locally
from app.detection.pipeline import ProgressFn, split_code
from app.detection.screening import (
    Calibration,
    QueueItem,
    hidden_recall,
    load_hidden_lesions,
    queue_at_threshold,
)
from app.review.jobs import JobContext, JobKind, JobRunner
from app.review.predictions import store_prediction_batch
from app.review.summary import matches_any

log = logging.getLogger(__name__)

# Key slices stored per commit: few commits for reviewers' writes to queue behind, little redone after a kill.
WRITE_BATCH = 32


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
    runner: SliceRunner | None = None,
    batch_size: int = WRITE_BATCH,
) -> dict[str, Any]:
    """Predict every key slice of the split not yet run by this model version and store the predictions.

    `runner` runs the detector (default: in this process; a cluster's runner returns identical results);
    the results are stored `batch_size` key slices to a commit.
    """
    from tqdm import tqdm

    from app.deeplesion.store import SliceStore

    code = split_code(split)
    with session_factory() as session:
        query = select(
            KeySlice.id, KeySlice.file_name, KeySlice.spacing_x, KeySlice.spacing_y, KeySlice.spacing_z
        )
        if code is not None:
            query = query.where(KeySlice.split == code)
        todo = session.execute(query.order_by(KeySlice.file_name)).all()
        if todo:
            # The prediction_runs table remembers runs that found nothing too: what a stopped run did is kept.
            ran = set(
                session.scalars(
                    select(PredictionRun.key_slice_id).where(
                        PredictionRun.model_version == detector.model_version
                    )
                )
            )
    if not todo:
        where = "" if code is None else f" in the {split} split"
        raise NothingToScreenError(f"no imported key slices{where}")
    if limit is not None:
        todo = todo[:limit]
    total = len(todo)
    tasks = [SliceTask(f, (sx, sy, sz)) for ks_id, f, sx, sy, sz in todo if ks_id not in ran]
    if runner is None:
        # Its own small cache: a batch pass would only evict the slices the viewer is using.
        runner = detect_locally(detector, SliceStore(data_dir), threshold)
    done = predicted = missing = 0
    bar = tqdm(total=total, desc="screen", unit="slice", disable=not progress)

    def advance() -> None:
        nonlocal done
        done += 1
        bar.update(1)
        # Raising here stops the pass cleanly: what ran before is stored (below), the rest is left.
        if on_progress is not None:
            on_progress(done, total)

    def write(results: list[SliceResult]) -> None:
        nonlocal predicted
        with session_factory() as session:
            predicted += store_prediction_batch(
                session=session,
                model_version=detector.model_version,
                runs=[(r.task.file_name, r.detections) for r in results],
                threshold=threshold,
            )

    if on_progress is not None:
        on_progress(0, total)
    pending: list[SliceResult] = []
    try:
        for _ in range(total - len(tasks)):
            advance()
        for res in runner(tasks):
            if res.error is not None:
                missing += 1
            else:
                pending.append(res)
            if len(pending) >= batch_size:
                batch, pending = pending, []
                write(batch)
            advance()
    finally:
        bar.close()
        if pending:
            batch, pending = pending, []
            write(batch)
    # A run stored meanwhile by a viewer's predict counts as skipped, as it would have been at the start.
    skipped = total - predicted - missing
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
        screened = {row.file_name for row in todo}
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


def run_detector_job(
    *,
    database_url: str,
    data_dir: Path | str,
    kind: JobKind,
    params: dict[str, Any],
    detector: Any,
    requested_by: str,
    progress: bool = True,
    on_progress: ProgressFn | None = None,
    runner: SliceRunner | None = None,
) -> dict[str, Any]:
    """Run a detector job of the CLI in this process on the database at `database_url`; its result and id.

    It runs as a job row like the app's, so that the app shows it and no other detector job overlaps it.
    """
    engine = make_engine(database_url)
    try:
        assert_schema_current(engine)
        factory = make_session_factory(engine)
        jobs = JobRunner(session_factory=factory, data_dir=data_dir)
        try:
            with factory() as session:
                job = jobs.run_here(
                    session=session,
                    kind=kind,
                    params=params,
                    detector=detector,
                    requested_by=requested_by,
                    on_progress=on_progress,
                    progress=progress,
                    runner=runner,
                )
        except NothingToScreenError as exc:
            raise NothingToScreenError(
                f"{exc} in {database_url}: run `lesion-review import {data_dir}` first"
            ) from None
        return {**job["result"], "job_id": job["id"]}
    finally:
        engine.dispose()


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
    runner: SliceRunner | None = None,
) -> dict[str, Any]:
    """Screen the key slices of the database at `database_url` (the `screen` command); resumable."""
    return run_detector_job(
        database_url=database_url,
        data_dir=data_dir,
        kind=SCREEN,
        params={"split": split or "all", "threshold": threshold, "limit": limit},
        detector=detector,
        requested_by=requested_by,
        progress=progress,
        on_progress=on_progress,
        runner=runner,
    )


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
        runner=ctx.runner,
    )


SCREEN = JobKind(name="screen", work=_screen)
