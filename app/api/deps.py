"""Request dependencies: reach the resources that the lifespan opened and kept on app.state."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from app.config import Settings

if TYPE_CHECKING:
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


def _release_connections(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a blocking endpoint so that its database sessions give their connection back before it returns."""

    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Session):
                    value.close()

    return run


class ReleasingRoute(APIRoute):
    """A route whose request holds a database connection only while a worker thread runs its database work.

    A request that kept its connection while it waited for the next thread (to validate the response, or to
    close the session in the dependency's teardown) could, in a burst, leave every thread waiting for a
    connection that such requests hold: a deadlock until the pool times out. current_user ends its
    transaction for the same reason. So any thread and pool sizes are safe (tests/api/test_concurrency.py).
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _release_connections(endpoint)
        super().__init__(path, endpoint, **kwargs)


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
