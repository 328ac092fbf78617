"""GET /api/health: what the server runs on (database, data folder, detector)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.deps import ReleasingRoute

router = APIRouter(prefix="/api", tags=["health"], route_class=ReleasingRoute)


class DetectorHealth(BaseModel):
    """State of the lesion detector."""

    loaded: bool
    provider: str | None
    model_version: str | None
    synthetic_model: bool
    error: str | None


class Health(BaseModel):
    """The health answer of docs/api.md."""

    status: str
    version: str
    database: str
    synthetic: bool
    data_dir: str
    detector: DetectorHealth


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
def health(request: Request) -> JSONResponse:
    """Server status: version, database dialect, data folder, synthetic data, detector."""
    state = request.app.state
    settings = state.settings
    data_dir = settings.data_dir
    body = Health(
        status="ok",
        version=app_version(),
        database=state.engine.dialect.name,
        synthetic=(data_dir / "synth_truth.json").is_file(),
        data_dir=str(data_dir),
        detector=detector_health(getattr(state, "detector", None), getattr(state, "detector_error", None)),
    )
    return JSONResponse(body.model_dump(), headers={"Cache-Control": "no-store"})
