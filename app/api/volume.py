"""Volume screening: start a screen of every stored slice (admin), follow it, review its candidates."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.bodies import LesionType, Version
from app.api.deps import ReleasingRoute, get_job_runner, require_detector
from app.api.schemas import (
    CandidateAdded,
    CandidateDecision,
    DetectorJob,
    JobRunning,
    Jobs,
    VolumeCandidate,
    VolumeCandidates,
    error_responses,
)
from app.api.security import AdminUser, CurrentUser, Db, no_store
from app.review import volume
from app.review.jobs import JobRunner, get_job, latest_done_job, list_jobs
from app.review.vocabulary import CANDIDATE_PENDING, CANDIDATE_STATUSES

router = APIRouter(tags=["volume screening"], dependencies=[Depends(no_store)], route_class=ReleasingRoute)
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
KIND = volume.VOLUME_SCREEN.name
WRITE_ERRORS = error_responses(401, 403, 404, 409, 422)


class VolumeScreenRequest(BaseModel):
    """Down to which score boxes are joined into candidates, and at most how many series."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    limit: Annotated[int | None, Field(ge=1, le=2**31 - 1)] = None


class AddCandidateBody(BaseModel):
    """Add the candidate (at the version seen) as a lesion of this type."""

    model_config = ConfigDict(extra="forbid")
    version: Version
    lesion_type: LesionType


class DismissCandidateBody(BaseModel):
    """Dismiss the candidate at the version seen."""

    model_config = ConfigDict(extra="forbid")
    version: Version


@router.post(
    "/api/volume/screen",
    status_code=202,
    response_model=DetectorJob,
    responses=error_responses(401, 403, 409, 422, 503, bodies={409: JobRunning}),
)
def post_volume_screen(
    user: AdminUser,
    db: Db,
    response: Response,
    runner: Annotated[JobRunner, Depends(get_job_runner)],
    detector: Annotated[Any, Depends(require_detector)],
    body: VolumeScreenRequest | None = None,
) -> Any:
    """Run the detector on every stored slice of each series in the background; 202 with the job."""
    req = body or VolumeScreenRequest()
    job = runner.start(
        session=db,
        kind=volume.VOLUME_SCREEN,
        params=req.model_dump(),
        detector=detector,
        requested_by=user.name,
    )
    response.headers["Location"] = f"/api/volume/screen/jobs/{job['id']}"
    return job


@router.get("/api/volume/screen", response_model=DetectorJob, responses=error_responses(401, 404))
def get_volume_screen(user: CurrentUser, db: Db) -> Any:
    """The latest volume screen that finished, with its result; 404 when none has."""
    job = latest_done_job(session=db, kind=KIND)
    if job is None:
        raise HTTPException(
            status_code=404,
            detail={"detail": "no volume screening has finished yet", "code": "no_volume_screen"},
        )
    return job


@router.get("/api/volume/screen/jobs", response_model=Jobs, responses=error_responses(401, 422))
def get_volume_screen_jobs(user: CurrentUser, db: Db, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Any:
    """The most recent volume screen jobs, newest first."""
    return {"jobs": list_jobs(session=db, limit=limit, kind=KIND)}


@router.get(
    "/api/volume/screen/jobs/{job_id}", response_model=DetectorJob, responses=error_responses(401, 404, 422)
)
def get_volume_screen_job(job_id: Id, user: CurrentUser, db: Db) -> Any:
    """One volume screen job's status, progress and (once done) result."""
    return get_job(session=db, job_id=job_id, kind=KIND)


@router.get("/api/volume/candidates", response_model=VolumeCandidates, responses=error_responses(401, 422))
def get_candidates(
    user: CurrentUser,
    db: Db,
    status: Annotated[str, Query(json_schema_extra={"enum": list(CANDIDATE_STATUSES)})] = CANDIDATE_PENDING,
    model_version: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Any:
    """Candidates matching no marked lesion, best score first (default: the latest model's, to review)."""
    return volume.candidate_queue(
        session=db, status=status, model_version=model_version, limit=limit, offset=offset
    )


@router.get(
    "/api/volume/candidates/{candidate_id}",
    response_model=VolumeCandidate,
    responses=error_responses(401, 404, 422),
)
def get_candidate(candidate_id: Id, user: CurrentUser, db: Db) -> Any:
    """One candidate with every slice's box."""
    return volume.get_candidate(session=db, candidate_id=candidate_id)


@router.post(
    "/api/volume/candidates/{candidate_id}/add", response_model=CandidateAdded, responses=WRITE_ERRORS
)
def post_add_candidate(candidate_id: Id, body: AddCandidateBody, user: CurrentUser, db: Db) -> Any:
    """Add the candidate as a lesion on its slice; answers the key slice, like every review write."""
    return volume.add_candidate(
        session=db, user=user, candidate_id=candidate_id, version=body.version, lesion_type=body.lesion_type
    )


@router.post(
    "/api/volume/candidates/{candidate_id}/dismiss", response_model=CandidateDecision, responses=WRITE_ERRORS
)
def post_dismiss_candidate(candidate_id: Id, body: DismissCandidateBody, user: CurrentUser, db: Db) -> Any:
    """Dismiss the candidate: not a lesion (who and when are kept)."""
    return volume.dismiss_candidate(session=db, user=user, candidate_id=candidate_id, version=body.version)
