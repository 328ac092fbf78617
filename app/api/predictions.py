"""Detector predictions on a key slice: run (cached per model version), list, accept, reject."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool

from app.api.bodies import AcceptBody, VersionBody
from app.api.deps import get_detector, get_store
from app.api.security import CurrentUser, Db, no_store
from app.deeplesion.errors import DeepLesionError
from app.detection.errors import DetectionError, InferenceError
from app.review import predictions
from app.review.corrections import key_slice_detail

router = APIRouter(tags=["predictions"], dependencies=[Depends(no_store)])

# Detections are stored down to this score so a later, lower threshold is served from the cache.
STORE_THRESHOLD = 0.05
Threshold = Annotated[float, Query(ge=0.0, le=1.0)]
PredictionId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post("/api/key-slices/{file_name}/predict")
async def post_predict(
    file_name: str,
    user: CurrentUser,
    db: Db,
    detector: Annotated[Any | None, Depends(get_detector)],
    store: Annotated[Any, Depends(get_store)],
    threshold: Threshold = 0.1,
) -> Any:
    """Run the detector on the key slice, or return the stored result of this model version."""
    detail = key_slice_detail(session=db, file_name=file_name, user=user)  # 404 for unknown names
    if detector is None:
        raise HTTPException(
            status_code=503, detail={"detail": "no detector model is loaded", "code": "no_model"}
        )
    model_version = str(detector.model_version)
    started = time.perf_counter()
    cached = predictions.has_run(session=db, file_name=file_name, model_version=model_version)
    if not cached:
        spacing = tuple(detail["spacing_mm"])
        floor = min(threshold, STORE_THRESHOLD)
        try:
            detections = await run_in_threadpool(
                detector.predict, file_name, store, spacing_mm=spacing, threshold=floor
            )
        except (DeepLesionError, DetectionError):
            raise
        except Exception as exc:  # a model bug must not take the review session down with a 500
            raise InferenceError(f"the detector {model_version} failed on {file_name}: {exc}") from exc
        predictions.store_predictions(
            session=db,
            file_name=file_name,
            model_version=model_version,
            detections=detections,
            threshold=floor,
        )
    found = predictions.list_predictions(
        session=db, file_name=file_name, threshold=threshold, model_version=model_version
    )
    return {
        "model_version": model_version,
        "provider": getattr(detector, "provider", None),
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        "cached": cached,
        "predictions": found,
    }


@router.get("/api/key-slices/{file_name}/predictions")
def get_predictions(file_name: str, user: CurrentUser, db: Db, threshold: Threshold = 0.0) -> Any:
    """Stored predictions of the key slice with score >= threshold."""
    return {"predictions": predictions.list_predictions(session=db, file_name=file_name, threshold=threshold)}


@router.post("/api/predictions/{prediction_id}/accept")
def post_accept(prediction_id: PredictionId, body: AcceptBody, user: CurrentUser, db: Db) -> Any:
    """Accept the prediction as an added lesion (source prediction)."""
    return predictions.accept(
        session=db, user=user, prediction_id=prediction_id, version=body.version, lesion_type=body.lesion_type
    )


@router.post("/api/predictions/{prediction_id}/reject")
def post_reject(prediction_id: PredictionId, body: VersionBody, user: CurrentUser, db: Db) -> Any:
    """Reject the prediction."""
    return predictions.reject(session=db, user=user, prediction_id=prediction_id, version=body.version)
