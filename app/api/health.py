"""GET /api/health: what the server runs on (database, data folder, detector)."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response

from app.api.deps import ReleasingRoute
from app.api.errors import without_paths
from app.api.schemas import DetectorHealth, Health
from app.deeplesion.objectstore import data_file_exists, display_name
from app.review.jobs import this_worker

router = APIRouter(prefix="/api", tags=["health"], route_class=ReleasingRoute)


def app_version() -> str:
    """The installed package version."""
    try:
        return metadata.version("lesion-review")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def detector_health(detector: Any | None, error: str | None) -> DetectorHealth:
    """Describe a loaded detector (or why there is none)."""
    if detector is None:
        return DetectorHealth(
            loaded=False, provider=None, model_version=None, synthetic_model=False, error=error
        )
    return DetectorHealth(
        loaded=True,
        provider=getattr(detector, "provider", None),
        model_version=getattr(detector, "model_version", None),
        synthetic_model=bool(getattr(detector, "synthetic", False)),
        error=None,
    )


@router.get("/health", response_model=Health)
def health(request: Request, response: Response) -> Health:
    """Server status: version, database dialect, data folder, synthetic data, detector."""
    state = request.app.state
    settings = state.settings
    data_dir = settings.data_dir
    detector = detector_health(getattr(state, "detector", None), getattr(state, "detector_error", None))
    if detector.error and settings.model_path is not None:
        model = Path(settings.model_path)
        local = data_dir if isinstance(data_dir, Path) else None
        detector.error = without_paths(detector.error, model, model.name, local)
    body = Health(
        status="ok",
        version=app_version(),
        database=state.engine.dialect.name,
        synthetic=data_file_exists(data_dir, "synth_truth.json"),
        # The folder's name only: its absolute path (or a bucket URL) tells an anonymous client too much.
        data_dir=display_name(data_dir),
        detector=detector,
    )
    response.headers["Cache-Control"] = "no-store"
    # Which worker process answered (an opaque per-process name), so operators and tests see the spread.
    response.headers["X-Server-Process"] = hashlib.blake2b(
        this_worker().token.encode(), digest_size=6
    ).hexdigest()
    return body
