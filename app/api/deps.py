"""Request dependencies: reach the resources that the lifespan opened and kept on app.state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request

from app.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.deeplesion.store import SliceStore
    from app.review.jobs import JobRunner


def get_settings(request: Request) -> Settings:
    """The app's Settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> SliceStore:
    """The PNG slice store of the data folder."""
    store: SliceStore = request.app.state.store
    return store


def get_db(request: Request) -> Iterator[Session]:
    """One database session per request, closed afterwards (commit is the service's job)."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.close()


def get_detector(request: Request) -> Any | None:
    """The loaded detector, or None in review mode without a model."""
    return getattr(request.app.state, "detector", None)


def require_detector(request: Request) -> Any:
    """The loaded detector; 503 no_model in review mode without one."""
    detector = get_detector(request)
    if detector is None:
        raise HTTPException(
            status_code=503, detail={"detail": "no detector model is loaded", "code": "no_model"}
        )
    return detector


def get_job_runner(request: Request) -> JobRunner:
    """The app's runner of background detector jobs (evaluation, screening)."""
    runner: JobRunner = request.app.state.job_runner
    return runner
