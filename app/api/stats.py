"""Dataset overview figures."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from app.api.deps import ReleasingRoute
from app.api.schemas import Stats, error_responses
from app.api.security import CurrentUser, Db, no_store
from app.review.stats import overview

router = APIRouter(
    prefix="/api", tags=["stats"], dependencies=[Depends(no_store)], route_class=ReleasingRoute
)


@router.get("/stats", response_model=Stats, responses=error_responses(401))
def get_stats(user: CurrentUser, db: Db) -> Any:
    """Lesion positions, type counts, size histogram and review progress."""
    return overview(session=db)
