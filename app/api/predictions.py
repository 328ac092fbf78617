"""Detector predictions on a key slice: run (cached per model version), list, accept, reject."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from app.api.bodies import AcceptBody, VersionBody
from app.api.deps import ReleasingRoute, get_detector, get_store
from app.api.schemas import (
    AcceptConflict,
    NotFoundOrNoFile,
    Predictions,
    PredictResult,
    ReviewResult,
    error_responses,
)
from app.api.security import CurrentUser, Db, no_store
from app.review import predictions

router = APIRouter(tags=["predictions"], dependencies=[Depends(no_store)], route_class=ReleasingRoute)

# Detections are stored down to this score so a later, lower threshold is served from the cache.
STORE_THRESHOLD = 0.05
Threshold = Annotated[float, Query(ge=0.0, le=1.0)]
PredictionId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post(
    "/api/key-slices/{file_name}/predict",
    response_model=PredictResult,
    responses=error_responses(401, 403, 404, 422, 503, bodies={404: NotFoundOrNoFile}),
)
def post_predict(
    file_name: str,
    user: CurrentUser,
    db: Db,
    detector: Annotated[Any | None, Depends(get_detector)],
    store: Annotated[Any, Depends(get_store)],
    threshold: Threshold = 0.1,
) -> Any:
    """Run the detector on the key slice, or reuse the stored run of this model version."""
    return predictions.predict(
        session=db,
        user=user,
        file_name=file_name,
        detector=detector,
        store=store,
        threshold=threshold,
        store_threshold=STORE_THRESHOLD,
    )


@router.get(
    "/api/key-slices/{file_name}/predictions",
    response_model=Predictions,
    responses=error_responses(401, 404, 422),
)
def get_predictions(file_name: str, user: CurrentUser, db: Db, threshold: Threshold = 0.0) -> Any:
    """Stored predictions of the key slice with score >= threshold."""
    return {"predictions": predictions.list_predictions(session=db, file_name=file_name, threshold=threshold)}


@router.post(
    "/api/predictions/{prediction_id}/accept",
    response_model=ReviewResult,
    responses=error_responses(401, 403, 404, 409, 422, bodies={409: AcceptConflict}),
)
def post_accept(prediction_id: PredictionId, body: AcceptBody, user: CurrentUser, db: Db) -> Any:
    """Accept the prediction as an added lesion (source prediction)."""
    return predictions.accept(
        session=db,
        user=user,
        prediction_id=prediction_id,
        version=body.version,
        lesion_type=body.lesion_type,
        allow_duplicate=body.allow_duplicate,
    )


@router.post(
    "/api/predictions/{prediction_id}/reject",
    response_model=ReviewResult,
    responses=error_responses(401, 403, 404, 409, 422),
)
def post_reject(prediction_id: PredictionId, body: VersionBody, user: CurrentUser, db: Db) -> Any:
    """Reject the prediction."""
    return predictions.reject(session=db, user=user, prediction_id=prediction_id, version=body.version)
