"""FROC evaluations: the evaluation job kind, and stored results (the database is their one store)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.db.models import EvaluationRun, KeySlice, utcnow
from app.db.session import SchemaOutdatedError, assert_schema_current, make_engine, make_session_factory
from app.deeplesion.schema import LesionRecord
from app.detection.pipeline import evaluate_dataset, truth_from_records
from app.review.errors import InvalidInputError
from app.review.jobs import JobContext, JobKind
from app.review.serialize import SPLIT_IDS


def _created_at(value: Any) -> datetime:
    # The result carries its own ISO timestamp; keep the row's column equal to it.
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return utcnow()
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return utcnow()


def save_evaluation(*, session: Session, result: Mapping[str, Any], job_id: int | None = None) -> int:
    """Insert a FROC result as an EvaluationRun row (it becomes the latest), commit, and return its id."""
    run = EvaluationRun(
        created_at=_created_at(result.get("created_at")),
        model_version=str(result.get("model_version") or "unknown"),
        split=str(result.get("split") or "all"),
        against=str(result.get("against") or "original"),
        result=dict(result),
        job_id=job_id,
    )
    session.add(run)
    session.commit()
    return run.id


def latest_evaluation(
    *, session: Session, split: str | None = None, against: str | None = None
) -> dict[str, Any] | None:
    """The latest stored FROC result with its `job_id`, optionally of one split and reference, or None."""
    query = select(EvaluationRun.result, EvaluationRun.job_id)
    if split is not None:
        query = query.where(EvaluationRun.split == split)
    if against is not None:
        query = query.where(EvaluationRun.against == against)
    # Latest stored, as the old latest.json was: the last insert wins, whatever its clock said.
    row = session.execute(query.order_by(EvaluationRun.id.desc()).limit(1)).one_or_none()
    return None if row is None else {**row.result, "job_id": row.job_id}


def job_evaluation(*, session: Session, job_id: int) -> dict[str, Any] | None:
    """The FROC result stored by one evaluation job, with its `job_id`; None while it has none."""
    result = session.execute(
        select(EvaluationRun.result).where(EvaluationRun.job_id == job_id)
    ).scalar_one_or_none()
    return None if result is None else {**result, "job_id": job_id}


def store_evaluation(*, database_url: str, result: Mapping[str, Any]) -> int:
    """Save a result in the database at `database_url` (the CLI); SchemaOutdatedError when not migrated."""
    url = make_url(database_url)
    sqlite_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    # Connecting would create an empty file (in a possibly read-only data folder): say what to run instead.
    if sqlite_file and not Path(str(url.database)).is_file():
        raise SchemaOutdatedError(
            f"no database at {url.database}: run `lesion-review import DATA_DIR` "
            "(or `lesion-review migrate`) first"
        )
    engine = make_engine(database_url)
    try:
        assert_schema_current(engine)
        with make_session_factory(engine)() as session:
            return save_evaluation(session=session, result=result)
    finally:
        engine.dispose()


def corrected_state(database_url: str, truth: str = "corrected") -> list[LesionRecord]:
    """The reviewers' merged current state (or a team truth) as DL_info records (`evaluate --against`)."""
    from app.review.exports import corrected_records

    engine = make_engine(database_url)
    try:
        assert_schema_current(engine)
        with make_session_factory(engine)() as session:
            return corrected_records(session=session, truth=truth)
    finally:
        engine.dispose()


def require_lesions(*, session: Session, split: str) -> None:
    """Refuse (InvalidInputError) a split without any lesion: its FROC would be a meaningless 0 %."""
    query = select(func.count(KeySlice.id)).where(KeySlice.lesion_count > 0)
    if split != "all":
        query = query.where(KeySlice.split == SPLIT_IDS[split])
    if not session.execute(query).scalar_one():
        raise InvalidInputError(f"no lesions in the {split} split: nothing to evaluate", code="empty_split")


def _evaluate(ctx: JobContext) -> dict[str, Any]:
    """An evaluation job's work: the FROC of the detector on its split, against original or corrected."""
    split, against = str(ctx.params["split"]), str(ctx.params["against"])
    truths = None
    if against == "corrected":
        from app.review.exports import corrected_records

        with ctx.session_factory() as session:
            truths = truth_from_records(corrected_records(session=session), None if split == "all" else split)
    result = evaluate_dataset(
        ctx.data_dir, ctx.detector, split=split, truths=truths, against=against, on_progress=ctx.on_progress
    )
    if not result.get("lesions"):
        # Every lesion left out (noisy, or key slices not on disk): failing the job stores no 0 % result.
        raise InvalidInputError(f"no lesions to evaluate in the {split} split", code="empty_split")
    result["run_by"] = ctx.requested_by
    return result


def _store(session: Session, job_id: int, result: dict[str, Any]) -> None:
    save_evaluation(session=session, result=result, job_id=job_id)


EVALUATION = JobKind(name="evaluation", work=_evaluate, store=_store)
