"""FROC evaluation of the loaded detector: start a background job (admin), follow it, read stored results."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict

from app.api.bodies import ExportState, SplitOrAll
from app.api.deps import ReleasingRoute, get_job_runner, require_detector
from app.api.schemas import DetectorJob, Evaluation, JobRunning, Jobs, error_responses
from app.api.security import AdminUser, CurrentUser, Db, no_store
from app.review.evaluations import EVALUATION, job_evaluation, latest_evaluation, require_lesions
from app.review.jobs import JobRunner, get_job, list_jobs

router = APIRouter(tags=["evaluation"], dependencies=[Depends(no_store)], route_class=ReleasingRoute)
JobId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class EvaluationRequest(BaseModel):
    """What to evaluate: a split, against the original annotations or the reviewers' current state."""

    model_config = ConfigDict(extra="forbid")
    split: SplitOrAll = "test"
    against: ExportState = "original"


def _no_evaluation(detail: str) -> HTTPException:
    return HTTPException(status_code=404, detail={"detail": detail, "code": "no_evaluation"})


# A stored FROC result goes out as it was stored (rows of older versions, or from the command line, may
# differ): declared for the schema, not re-validated, so an odd old row is never a 500.
STORED_RESULT: dict[int | str, dict[str, Any]] = {
    200: {"model": Evaluation, "description": "A stored FROC result"}
}


@router.get("/api/evaluation", response_model=None, responses={**STORED_RESULT, **error_responses(401, 404)})
def get_evaluation(user: CurrentUser, db: Db) -> Any:
    """The latest FROC result stored in the database; 404 when none was run yet."""
    result = latest_evaluation(session=db)
    if result is None:
        raise _no_evaluation("no evaluation has been run on this dataset yet")
    return result


@router.post(
    "/api/evaluation",
    status_code=202,
    response_model=DetectorJob,
    responses=error_responses(401, 403, 409, 422, 503, bodies={409: JobRunning}),
)
def post_evaluation(
    user: AdminUser,
    db: Db,
    response: Response,
    runner: Annotated[JobRunner, Depends(get_job_runner)],
    detector: Annotated[Any, Depends(require_detector)],
    body: EvaluationRequest | None = None,
) -> Any:
    """Start a DeepLesion FROC of the loaded detector in the background; 202 with the job to poll."""
    req = body or EvaluationRequest()
    require_lesions(session=db, split=req.split)
    job = runner.start(
        session=db, kind=EVALUATION, params=req.model_dump(), detector=detector, requested_by=user.name
    )
    response.headers["Location"] = f"/api/evaluation/jobs/{job['id']}"
    return job


@router.get("/api/evaluation/jobs", response_model=Jobs, responses=error_responses(401, 422))
def get_evaluation_jobs(user: CurrentUser, db: Db, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Any:
    """The most recent evaluation jobs, newest first."""
    return {"jobs": list_jobs(session=db, limit=limit, kind=EVALUATION.name)}


@router.get(
    "/api/evaluation/jobs/{job_id}", response_model=DetectorJob, responses=error_responses(401, 404, 422)
)
def get_evaluation_job(job_id: JobId, user: CurrentUser, db: Db) -> Any:
    """One evaluation job's status and progress."""
    return get_job(session=db, job_id=job_id, kind=EVALUATION.name)


@router.get(
    "/api/evaluation/jobs/{job_id}/result",
    response_model=None,
    responses={**STORED_RESULT, **error_responses(401, 404, 422)},
)
def get_evaluation_job_result(job_id: JobId, user: CurrentUser, db: Db) -> Any:
    """The FROC result a finished job stored; 404 no_evaluation while it has none."""
    job = get_job(session=db, job_id=job_id, kind=EVALUATION.name)  # 404 evaluation_job_not_found first
    result = job_evaluation(session=db, job_id=job_id)
    if result is None:
        raise _no_evaluation(f"evaluation job {job_id} has no result (status {job['status']})")
    return result
