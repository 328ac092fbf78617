"""Detector jobs of every kind (evaluation, screen): one runs at a time, so a page may follow another's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from app.api.deps import ReleasingRoute
from app.api.schemas import DetectorJob, JobKind, Jobs, error_responses
from app.api.security import CurrentUser, Db, no_store
from app.review.jobs import get_job, list_jobs

router = APIRouter(tags=["jobs"], dependencies=[Depends(no_store)], route_class=ReleasingRoute)
JobId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get("/api/jobs", response_model=Jobs, responses=error_responses(401, 422))
def get_jobs(
    user: CurrentUser,
    db: Db,
    kind: JobKind | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Any:
    """The most recent detector jobs, newest first, optionally of one kind."""
    return {"jobs": list_jobs(session=db, limit=limit, kind=kind)}


@router.get("/api/jobs/{job_id}", response_model=DetectorJob, responses=error_responses(401, 404, 422))
def get_any_job(job_id: JobId, user: CurrentUser, db: Db) -> Any:
    """One detector job's status, whatever its kind."""
    return get_job(session=db, job_id=job_id)
