"""FROC evaluation of the loaded detector: run one (admin) and read the latest stored result."""

from __future__ import annotations

import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from app.api.deps import get_detector, get_settings
from app.api.security import AdminUser, CurrentUser, Db, no_store
from app.config import Settings
from app.detection.pipeline import evaluate_dataset, truth_from_records
from app.review.evaluations import latest_evaluation, save_evaluation

router = APIRouter(tags=["evaluation"], dependencies=[Depends(no_store)])
# One evaluation at a time: each one already uses both cores through ONNX Runtime.
_RUNNING = threading.Lock()


class EvaluationRequest(BaseModel):
    """What to evaluate: a split, against the original annotations or the reviewers' current state."""

    model_config = ConfigDict(extra="forbid")
    split: Literal["train", "val", "test", "all"] = "test"
    against: Literal["original", "corrected"] = "original"


@router.get("/api/evaluation")
def get_evaluation(user: CurrentUser, db: Db) -> Any:
    """The latest FROC result stored in the database; 404 when none was run yet."""
    result = latest_evaluation(session=db)
    if result is None:
        raise HTTPException(
            status_code=404,
            detail={"detail": "no evaluation has been run on this dataset yet", "code": "no_evaluation"},
        )
    return result


@router.post("/api/evaluation")
async def post_evaluation(
    user: AdminUser,
    db: Db,
    settings: Annotated[Settings, Depends(get_settings)],
    detector: Annotated[Any | None, Depends(get_detector)],
    body: EvaluationRequest | None = None,
) -> Any:
    """Run the DeepLesion FROC of the loaded detector now, store it as the latest result, return it."""
    req = body or EvaluationRequest()
    if detector is None:
        raise HTTPException(
            status_code=503, detail={"detail": "no detector model is loaded", "code": "no_model"}
        )
    truths = None
    if req.against == "corrected":
        from app.review.exports import corrected_records

        truths = truth_from_records(corrected_records(session=db), None if req.split == "all" else req.split)
    if not _RUNNING.acquire(blocking=False):
        raise HTTPException(
            status_code=409,
            detail={"detail": "an evaluation is already running", "code": "evaluation_running"},
        )
    try:
        result = await run_in_threadpool(
            evaluate_dataset, settings.data_dir, detector, split=req.split, truths=truths, against=req.against
        )
        result["run_by"] = user.name
        run_id = await run_in_threadpool(save_evaluation, session=db, result=result)
        result["stored_as"] = f"evaluation_runs/{run_id}"
    finally:
        _RUNNING.release()
    return result
