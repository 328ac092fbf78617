"""The work list of key slices and queue navigation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from app.api.bodies import LesionType, SplitName, StatusName
from app.api.deps import ReleasingRoute
from app.api.schemas import Neighbours, WorkList, error_responses
from app.api.security import CurrentUser, Db, no_store
from app.review.worklist import WorklistFilter, list_key_slices, neighbours

router = APIRouter(
    prefix="/api/key-slices", tags=["work list"], dependencies=[Depends(no_store)], route_class=ReleasingRoute
)


def worklist_filter(
    split: SplitName | None = None,
    lesion_type: Annotated[list[LesionType] | None, Query()] = None,
    noisy: bool | None = None,
    status: StatusName | None = None,
    reviewer: Annotated[str | None, Query(max_length=64)] = None,
    patient: Annotated[int | None, Query(ge=0, le=10**9)] = None,
    min_size_mm: Annotated[float | None, Query(ge=0, le=1e6)] = None,
    max_size_mm: Annotated[float | None, Query(ge=0, le=1e6)] = None,
    has_predictions: bool | None = None,
    possible_missed: bool | None = None,
    on_disk: bool | None = None,
    sort: Literal["file_name", "patient", "size", "lesion_count", "status", "missed_score"] = "file_name",
    order: Literal["asc", "desc"] = "asc",
) -> WorklistFilter:
    """The work-list filters of docs/api.md, validated once."""
    return WorklistFilter(
        split=split,
        lesion_types=tuple(lesion_type or ()),
        noisy=noisy,
        status=status,
        reviewer=reviewer,
        patient=patient,
        min_size_mm=min_size_mm,
        max_size_mm=max_size_mm,
        has_predictions=has_predictions,
        possible_missed=possible_missed,
        on_disk=on_disk,
        sort=sort,
        order=order,
    )


Filter = Annotated[WorklistFilter, Depends(worklist_filter)]


@router.get("", response_model=WorkList, responses=error_responses(401, 404, 422))
def get_worklist(
    flt: Filter,
    user: CurrentUser,
    db: Db,
    page: Annotated[int, Query(ge=1, le=10**6)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Any:
    """One page of key slices with the total and progress counts."""
    return list_key_slices(session=db, flt=flt, user_id=user.id, page=page, page_size=page_size)


@router.get("/{file_name}/neighbours", response_model=Neighbours, responses=error_responses(401, 404, 422))
def get_neighbours(file_name: str, flt: Filter, user: CurrentUser, db: Db) -> Any:
    """Previous and next key slice in the filtered queue."""
    return neighbours(session=db, flt=flt, user_id=user.id, file_name=file_name)
