"""Exports of the annotations: whole-dataset files are admin only; a reviewer gets their work list's rows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.api.deps import ReleasingRoute, get_store
from app.api.schemas import error_responses
from app.api.security import AdminUser, CurrentUser, Db
from app.api.worklist import Filter
from app.review import exports, worklist
from app.review.team.truth import file_label

router = APIRouter(prefix="/api/exports", tags=["exports"], route_class=ReleasingRoute)


def _file(media_type: str, description: str, *errors: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a download: the file's media type, and the errors (admin only: 401, 403)."""
    return {
        200: {"content": {media_type: {}}, "description": description},
        **error_responses(401, 403, *errors),
    }


State = Annotated[Literal[*exports.STATES], Query()]  # type: ignore[valid-type]
BoxOnly = Annotated[Literal[*exports.BOX_ONLY_CHOICES], Query()]  # type: ignore[valid-type]
# original | corrected | consensus | reader:NAME (app.review.team.truth); overrides `state` when given.
Truth = Annotated[str | None, Query(min_length=1, max_length=80)]


def _headers(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"}


def _download(data: bytes, media_type: str, filename: str) -> Response:
    return Response(data, media_type=media_type, headers=_headers(filename))


@router.get("/dl_info.csv", response_class=Response, responses=_file("text/csv", "DL_info.csv", 404, 422))
def get_csv(
    request: Request,
    user: AdminUser,
    db: Db,
    state: State = "corrected",
    extras: bool = False,
    box_only: BoxOnly = "nan",
    truth: Truth = None,
) -> Response:
    """DL_info.csv of the original or the corrected state (extras: flag reasons, notes, reviewers, origin).

    Streamed a chunk of rows at a time, each read in its own query, so the whole file never sits in memory.
    """
    pieces = exports.stream_csv(
        session_factory=request.app.state.session_factory,
        state=state,
        extras=extras,
        box_only=box_only,
        truth=truth,
    )
    return StreamingResponse(
        pieces, media_type="text/csv", headers=_headers(f"DL_info_{file_label(truth or state)}.csv")
    )


@router.get(
    "/worklist.csv",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "DL_info.csv of the filtered work list"},
        **error_responses(401, 404, 422),
    },
)
def get_worklist_csv(request: Request, flt: Filter, user: CurrentUser, db: Db) -> Response:
    """The corrected DL_info.csv rows, with review columns, of the key slices the work-list filter matches.

    The filter is the work list's (same query parameters; status is the signed-in reviewer's unless
    `reviewer` names another); sort, order and pages do not apply: rows keep the file order.
    """
    pieces = exports.stream_csv(
        session_factory=request.app.state.session_factory,
        extras=True,
        key_slice_ids=lambda session: worklist.matching_ids(session=session, flt=flt, user_id=user.id),
    )
    return StreamingResponse(
        pieces,
        media_type="text/csv",
        headers={
            "Content-Disposition": 'attachment; filename="DL_info_worklist.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/coco.json",
    response_class=Response,
    responses=_file("application/json", "COCO detection JSON", 404, 422),
)
def get_coco(
    request: Request, user: AdminUser, db: Db, state: State = "corrected", truth: Truth = None
) -> Response:
    """COCO detection JSON of the original or the corrected state (or a team truth).

    Streamed like DL_info.csv: the images as each chunk of rows is read, then the annotations spooled on disk.
    """
    pieces = exports.stream_coco(session_factory=request.app.state.session_factory, state=state, truth=truth)
    filename = f"deeplesion_{file_label(truth or state)}.json"
    return StreamingResponse(pieces, media_type="application/json", headers=_headers(filename))


@router.get(
    "/nifti/{series_folder}.zip",
    response_class=Response,
    responses=_file("application/zip", "NIfTI volumes of the series", 404, 422),
)
async def get_nifti(
    series_folder: str,
    user: AdminUser,
    db: Db,
    store: Annotated[object, Depends(get_store)],
    truth: Truth = None,
) -> Response:
    """The series' stored slices as NIfTI volumes in a zip; with a truth, also the series' DL_info rows."""
    data = await run_in_threadpool(
        exports.export_nifti_zip, session=db, store=store, series_folder=series_folder, truth=truth
    )
    name = series_folder if truth is None else f"{series_folder}_{file_label(truth)}"
    return _download(data, "application/zip", f"{name}.zip")
