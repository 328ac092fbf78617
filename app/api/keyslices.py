"""Key slice detail, review status, undo/redo, history and adding lesions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from app.api.bodies import AddLesionBody, StatusBody
from app.api.deps import ReleasingRoute
from app.api.schemas import AuditEntry, KeySlice, ReviewResult, error_responses
from app.api.security import CurrentUser, Db, no_store
from app.review import audit, corrections

# Every write answers the key slice; a stale version is a 409, an unknown key slice a 404.
WRITE_ERRORS = error_responses(401, 403, 404, 409, 422)
router = APIRouter(
    prefix="/api/key-slices",
    tags=["key slices"],
    dependencies=[Depends(no_store)],
    route_class=ReleasingRoute,
)


@router.get("/{file_name}", response_model=KeySlice, responses=error_responses(401, 404, 422))
def get_key_slice(file_name: str, user: CurrentUser, db: Db) -> Any:
    """Metadata, stored and missing context slices, merged lesions and predictions."""
    return corrections.key_slice_detail(session=db, file_name=file_name, user=user)


@router.put("/{file_name}/status", response_model=ReviewResult, responses=WRITE_ERRORS)
def put_status(file_name: str, body: StatusBody, user: CurrentUser, db: Db) -> Any:
    """Set the current reviewer's status of the key slice."""
    return corrections.set_status(
        session=db, user=user, file_name=file_name, status=body.status, version=body.version
    )


@router.post("/{file_name}/undo", response_model=ReviewResult, responses=WRITE_ERRORS)
def post_undo(file_name: str, user: CurrentUser, db: Db) -> Any:
    """Undo the current user's last change on this key slice."""
    return corrections.undo(session=db, user=user, file_name=file_name)


@router.post("/{file_name}/redo", response_model=ReviewResult, responses=WRITE_ERRORS)
def post_redo(file_name: str, user: CurrentUser, db: Db) -> Any:
    """Re-apply the current user's last undone change on this key slice."""
    return corrections.redo(session=db, user=user, file_name=file_name)


@router.get("/{file_name}/history", response_model=list[AuditEntry], responses=error_responses(401, 404, 422))
def get_history(file_name: str, user: CurrentUser, db: Db) -> Any:
    """The audit trail of the key slice, oldest first."""
    return audit.key_slice_history(session=db, file_name=file_name)


@router.post(
    "/{file_name}/lesions",
    status_code=201,
    response_model=ReviewResult,
    responses=error_responses(401, 403, 404, 422),
)
def post_lesion(file_name: str, body: AddLesionBody, user: CurrentUser, db: Db) -> Any:
    """Add a lesion (RECIST or box; a box is derived from RECIST by the 5 px rule)."""
    return corrections.add_lesion(
        session=db,
        user=user,
        file_name=file_name,
        lesion_type=body.lesion_type,
        recist=body.recist,
        box=body.box,
        slice_index=body.slice_index,
    )
