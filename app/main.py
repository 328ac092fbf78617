"""create_app(): wires settings, the database, the slice store, the detector and every router."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import EllipsisType
from typing import Any

import anyio.to_thread
import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.api import (
    auth,
    evaluation,
    exports,
    followup,
    health,
    jobs,
    keyslices,
    lesions,
    pages,
    predictions,
    screen,
    slices,
    stats,
    team,
    volume,
    worklist,
)
from app.api.errors import install_error_handlers
from app.api.guards import install_guards
from app.api.health import app_version
from app.config import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)
# Swagger UI's bundle and stylesheet as the fastapi-offline package ships them (its only data files).
SWAGGER_UI_DIR = Path(fastapi_offline.__file__).parent / "static"

STATIC_DIR = PROJECT_ROOT / "static"
TEMPLATES_DIR = PROJECT_ROOT / "templates"

# Every router of the app, in one place.
ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    slices.router,
    auth.router,
    worklist.router,
    keyslices.router,
    lesions.router,
    predictions.router,
    stats.router,
    evaluation.router,
    screen.router,
    jobs.router,
    exports.router,
    followup.router,
    team.router,
    volume.router,
    pages.router,
)


def load_detector_safely(settings: Settings) -> tuple[Any | None, str | None]:
    """The configured detector, or None plus the reason (the app then runs in review mode)."""
    try:
        from app.detection.runtime import load_detector

        detector, reason = load_detector(settings)
    except Exception as exc:  # ImportError, a broken model file...: review still works without a model
        detector, reason = None, f"{type(exc).__name__}: {exc}"
    if detector is None:
        log.warning("no lesion detector loaded (review mode without a model): %s", reason)
    else:
        log.info(
            "detector %s loaded on %s",
            getattr(detector, "model_version", "?"),
            getattr(detector, "provider", "?"),
        )
    return detector, reason


def create_app(settings: Settings | None = None, *, detector: object | None | EllipsisType = ...) -> FastAPI:
    """Build the FastAPI app; `detector=...` loads the configured model, None runs without one."""
    settings = settings if settings is not None else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from app.db.session import assert_schema_current, make_engine, make_session_factory
        from app.deeplesion.store import SliceStore
        from app.review.jobs import JobRunner

        engine = make_engine(
            settings.resolved_database_url(),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout_s=settings.db_pool_timeout_s,
        )
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        try:
            assert_schema_current(engine)
        except Exception:
            engine.dispose()
            raise
        session_factory = make_session_factory(engine)
        if isinstance(settings.data_dir, str):
            from app.deeplesion.objectstore import configure_backend

            # One backend (disk cache, identity memo) per process: every SliceStore of this URL shares it.
            configure_backend(
                settings.data_dir,
                storage_options=settings.storage_options or None,
                cache_dir=settings.cache_dir,
                cache_bytes=int(settings.cache_mb * 2**20),
                ttl_s=settings.object_ttl_s,
            )
        # The only decoded-slice cache: the viewer and the detector both read through it.
        store = SliceStore(settings.data_dir, cache_bytes=settings.decoded_cache_mb * 2**20)
        app.state.engine = engine
        app.state.session_factory = session_factory
        app.state.store = store
        app.state.slice_images = slices.SliceImages(
            store,
            series_info=slices.database_series_info(session_factory),
            encoded_cache_bytes=settings.encoded_cache_mb * 2**20,
        )
        if isinstance(detector, EllipsisType):
            app.state.detector, app.state.detector_error = load_detector_safely(settings)
        else:
            app.state.detector = detector
            app.state.detector_error = None if detector is not None else "no model loaded"
        runner = JobRunner(session_factory=session_factory, data_dir=settings.data_dir)
        runner.recover()
        app.state.job_runner = runner
        log.info("serving %s with database %s", store, engine.dialect.name)
        try:
            yield
        finally:
            runner.shutdown()
            engine.dispose()

    app = FastAPI(
        title="Lesion Review",
        version=app_version(),
        description="Review, correct and extend DeepLesion annotations.",
        lifespan=lifespan,
        # /docs is served by app/api/pages.py from the swagger-ui-bundle package, not from a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    # The vocabulary block keeps the order its home modules define (menu order, rule order).
    app.state.templates.env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    install_error_handlers(app)
    install_guards(app, settings)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR), check_dir=False), name="static")
    app.mount("/docs/assets", StaticFiles(directory=str(SWAGGER_UI_DIR)), name="swagger-ui")
    return app
