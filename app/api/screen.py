"""Batch screening for possible missed lesions: start a background job (admin), follow it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.bodies import SplitOrAll
from app.api.deps import ReleasingRoute, get_job_runner, require_detector
from app.api.schemas import DetectorJob, JobRunning, Jobs, error_responses
from app.api.security import AdminUser, CurrentUser, Db, no_store
from app.deeplesion.schema import ALL_SPLITS
from app.review.jobs import JobRunner, get_job, latest_done_job, list_jobs
from app.review.screening import SCREEN

router = APIRouter(tags=["screening"], dependencies=[Depends(no_store)], route_class=ReleasingRoute)
JobId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class ScreenRequest(BaseModel):
    """Which key slices to screen and down to which score the predictions are stored (and queued)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    split: SplitOrAll = ALL_SPLITS
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    limit: Annotated[int | None, Field(ge=1, le=2**31 - 1)] = None


@router.get("/api/screen", response_model=DetectorJob, responses=error_responses(401, 404))
def get_screen(user: CurrentUser, db: Db) -> Any:
    """The latest screen job that finished, with its result; 404 when none has."""
    job = latest_done_job(session=db, kind=SCREEN.name)
    if job is None:
        raise HTTPException(
            status_code=404, detail={"detail": "no screening has finished yet", "code": "no_screen"}
        )
    return job


@router.post(
    "/api/screen",
    status_code=202,
    response_model=DetectorJob,
    responses=error_responses(401, 403, 409, 422, 503, bodies={409: JobRunning}),
)
def post_screen(
    user: AdminUser,
    db: Db,
    response: Response,
    runner: Annotated[JobRunner, Depends(get_job_runner)],
    detector: Annotated[Any, Depends(require_detector)],
    body: ScreenRequest | None = None,
) -> Any:
    """Run the detector over the key slices in the background; 202 with the job to poll."""
    req = body or ScreenRequest()
    job = runner.start(
        session=db, kind=SCREEN, params=req.model_dump(), detector=detector, requested_by=user.name
    )
    response.headers["Location"] = f"/api/screen/jobs/{job['id']}"
    return job


@router.get("/api/screen/jobs", response_model=Jobs, responses=error_responses(401, 422))
def get_screen_jobs(user: CurrentUser, db: Db, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Any:
    """The most recent screen jobs, newest first."""
    return {"jobs": list_jobs(session=db, limit=limit, kind=SCREEN.name)}


@router.get("/api/screen/jobs/{job_id}", response_model=DetectorJob, responses=error_responses(401, 404, 422))
def get_screen_job(job_id: JobId, user: CurrentUser, db: Db) -> Any:
    """One screen job's status, progress and (once done) result."""
    return get_job(session=db, job_id=job_id, kind=SCREEN.name)
