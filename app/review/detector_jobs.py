"""Database side of the detector jobs: batch screening into stored predictions, corrected-state references."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import KeySlice, Prediction
from app.db.session import assert_schema_current, make_engine, make_session_factory
from app.deeplesion.errors import DeepLesionError
from app.deeplesion.schema import LesionRecord
from app.detection.pipeline import split_code
from app.detection.screening import QueueItem, hidden_recall, load_hidden_lesions
from app.review.predictions import has_run, store_predictions

log = logging.getLogger(__name__)


def corrected_state(database_url: str) -> list[LesionRecord]:
    """The reviewers' merged current state as DL_info records (for `evaluate --against corrected`)."""
    from app.review.exports import corrected_records

    engine = make_engine(database_url)
    try:
        assert_schema_current(engine)
        with make_session_factory(engine)() as session:
            return corrected_records(session=session)
    finally:
        engine.dispose()


def missed_queue(*, session: Session, model_version: str) -> list[QueueItem]:
    """Pending predictions of a model that match no annotation: the possible-missed queue."""
    rows = session.execute(
        select(KeySlice.file_name, Prediction.box, Prediction.score)
        .join(KeySlice, KeySlice.id == Prediction.key_slice_id)
        .where(
            Prediction.model_version == model_version,
            Prediction.status == "pending",
            Prediction.matches_annotation.is_(False),
        )
    ).all()
    return [QueueItem(f, (float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s)) for f, b, s in rows]


def run_screen(
    *,
    database_url: str,
    data_dir: Path,
    detector: Any,
    split: str | None = None,
    limit: int | None = None,
    threshold: float = 0.3,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every imported key slice not yet run by this model version and store the predictions."""
    from tqdm import tqdm

    from app.deeplesion.store import SliceStore

    code = split_code(split)
    store = SliceStore(data_dir)
    engine = make_engine(database_url)
    try:
        assert_schema_current(engine)
        factory = make_session_factory(engine)
        with factory() as session:
            query = select(KeySlice.file_name, KeySlice.spacing_x, KeySlice.spacing_y, KeySlice.spacing_z)
            if code is not None:
                query = query.where(KeySlice.split == code)
            todo = session.execute(query.order_by(KeySlice.file_name)).all()
        if not todo:
            raise ValueError(
                f"no imported key slices in {database_url}: run `lesion-review import {data_dir}` first"
            )
        if limit is not None:
            todo = todo[:limit]
        predicted = skipped = missing = 0
        for file_name, sx, sy, sz in tqdm(todo, desc="screen", unit="slice", disable=not progress):
            with factory() as session:
                # The prediction_runs table remembers runs that found nothing too.
                if has_run(session=session, file_name=file_name, model_version=detector.model_version):
                    skipped += 1
                    continue
                try:
                    dets = detector.predict(file_name, store, spacing_mm=(sx, sy, sz), threshold=threshold)
                except DeepLesionError as exc:
                    log.info("skipping %s: %s", file_name, exc)
                    missing += 1
                    continue
                store_predictions(
                    session=session,
                    file_name=file_name,
                    model_version=detector.model_version,
                    detections=dets,
                    threshold=threshold,
                )
                predicted += 1
        with factory() as session:
            queue = missed_queue(session=session, model_version=detector.model_version)
    finally:
        engine.dispose()
    result: dict[str, Any] = {
        "model_version": detector.model_version,
        "provider": detector.provider,
        "threshold": threshold,
        "key_slices": len(todo),
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
    return result
