"""Corrections of one lesion: confirm, flag, unflag, geometry, delete, history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from app.api.bodies import FlagBody, GeometryBody, VersionBody
from app.api.deps import ReleasingRoute
from app.api.schemas import AuditEntry, ReviewResult, error_responses
from app.api.security import CurrentUser, Db, no_store
from app.review import audit, corrections

router = APIRouter(
    prefix="/api/lesions", tags=["lesions"], dependencies=[Depends(no_store)], route_class=ReleasingRoute
)
# Every write answers the key slice; a stale version is a 409, an unknown lesion a 404.
WRITE_ERRORS = error_responses(401, 403, 404, 409, 422)

LesionId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("/{lesion_id}/confirm", response_model=ReviewResult, responses=WRITE_ERRORS)
def post_confirm(lesion_id: LesionId, body: VersionBody, user: CurrentUser, db: Db) -> Any:
    """Mark the lesion as correct."""
    return corrections.confirm(session=db, user=user, lesion_id=lesion_id, version=body.version)


@router.post("/{lesion_id}/flag", response_model=ReviewResult, responses=WRITE_ERRORS)
def post_flag(lesion_id: LesionId, body: FlagBody, user: CurrentUser, db: Db) -> Any:
    """Flag the lesion as noisy with a reason."""
    return corrections.flag(
        session=db, user=user, lesion_id=lesion_id, version=body.version, reason=body.reason, note=body.note
    )


@router.post("/{lesion_id}/unflag", response_model=ReviewResult, responses=WRITE_ERRORS)
def post_unflag(lesion_id: LesionId, body: VersionBody, user: CurrentUser, db: Db) -> Any:
    """Clear the lesion's noisy flag."""
    return corrections.unflag(session=db, user=user, lesion_id=lesion_id, version=body.version)


@router.put("/{lesion_id}/geometry", response_model=ReviewResult, responses=WRITE_ERRORS)
def put_geometry(lesion_id: LesionId, body: GeometryBody, user: CurrentUser, db: Db) -> Any:
    """Replace RECIST and/or box and/or type."""
    return corrections.edit_geometry(
        session=db,
        user=user,
        lesion_id=lesion_id,
        version=body.version,
        recist=body.recist,
        box=body.box,
        lesion_type=body.lesion_type,
    )


@router.delete("/{lesion_id}", response_model=ReviewResult, responses=WRITE_ERRORS)
def delete_lesion(
    lesion_id: LesionId, version: Annotated[int, Query(ge=0, le=2**31 - 1)], user: CurrentUser, db: Db
) -> Any:
    """Delete a lesion a reviewer added."""
    return corrections.delete_lesion(session=db, user=user, lesion_id=lesion_id, version=version)


@router.get("/{lesion_id}/history", response_model=list[AuditEntry], responses=error_responses(401, 404, 422))
def get_history(lesion_id: LesionId, user: CurrentUser, db: Db) -> Any:
    """The audit trail of the lesion, oldest first."""
    return audit.lesion_history(session=db, lesion_id=lesion_id)
