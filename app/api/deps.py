"""Request dependencies: reach the resources that the lifespan opened and kept on app.state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import Request

from app.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.deeplesion.store import SliceStore
    from app.review.evaluation_jobs import EvaluationRunner


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


def get_evaluation_runner(request: Request) -> EvaluationRunner:
    """The app's runner of background FROC evaluation jobs."""
    runner: EvaluationRunner = request.app.state.evaluation_runner
    return runner
