"""Follow-up: a patient's lesions tracked across studies, link corrections, matching, the lesion graph."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from app.api.bodies import LinkBody, MatchBody, VersionBody
from app.api.deps import ReleasingRoute, get_store
from app.api.schemas import FollowupGraph, FollowupMatchRun, FollowupPatient, ReviewResult, error_responses
from app.api.security import AdminUser, CurrentUser, Db, no_store
from app.deeplesion.store import SliceStore
from app.review import followup

router = APIRouter(
    prefix="/api/followup", tags=["followup"], dependencies=[Depends(no_store)], route_class=ReleasingRoute
)
WRITE_ERRORS = error_responses(401, 403, 404, 409, 422)
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
GRAPH_CSV_COLUMNS = ("link_id", "patient_index", "from_lesion_id", "to_lesion_id", "origin", "status", "cost")


@router.get(
    "/patients/{patient_index}", response_model=FollowupPatient, responses=error_responses(401, 404, 422)
)
def get_patient(
    patient_index: Id,
    user: CurrentUser,
    db: Db,
    baseline: Annotated[int | None, Query(ge=1, le=99, description="Baseline study index")] = None,
) -> Any:
    """The patient's lesions by track, links, axes over time and RECIST 1.1 response from the baseline."""
    return followup.patient_followup(session=db, patient=patient_index, baseline=baseline)


@router.post("/links", response_model=ReviewResult, responses=WRITE_ERRORS)
def post_link(body: LinkBody, user: CurrentUser, db: Db) -> Any:
    """Add (or restore) a link between two lesions of different studies: they are the same lesion."""
    return followup.add_link(
        session=db, user=user, from_lesion_id=body.from_lesion_id, to_lesion_id=body.to_lesion_id
    )


@router.post("/links/{link_id}/confirm", response_model=ReviewResult, responses=WRITE_ERRORS)
def post_confirm(link_id: Id, body: VersionBody, user: CurrentUser, db: Db) -> Any:
    """Confirm a proposed link."""
    return followup.confirm_link(session=db, user=user, link_id=link_id, version=body.version)


@router.post("/links/{link_id}/break", response_model=ReviewResult, responses=WRITE_ERRORS)
def post_break(link_id: Id, body: VersionBody, user: CurrentUser, db: Db) -> Any:
    """Break a link: the two lesions are not the same lesion."""
    return followup.break_link(session=db, user=user, link_id=link_id, version=body.version)


@router.post("/match", response_model=FollowupMatchRun, responses=error_responses(401, 403, 409, 422))
def post_match(
    body: MatchBody, user: AdminUser, db: Db, store: Annotated[SliceStore, Depends(get_store)]
) -> Any:
    """Run matching again (one patient or all): proposed links are replaced, reviewer decisions kept."""
    return followup.run_matching(
        session=db, patient=body.patient_index, store=store if body.appearance else None
    )


@router.get("/graph.json", response_model=FollowupGraph, responses=error_responses(401, 403))
def get_graph_json(user: AdminUser, db: Db) -> Any:
    """The lesion graph as JSON: lesions with their track id, and links."""
    return followup.graph(db)


@router.get(
    "/graph.csv",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "Links of the lesion graph"},
        **error_responses(401, 403),
    },
)
def get_graph_csv(user: AdminUser, db: Db) -> Response:
    """The lesion graph's links as CSV (one row per link; lesion tracks are in the JSON and exports)."""
    g = followup.graph(db)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(GRAPH_CSV_COLUMNS)
    for e in g["edges"]:
        w.writerow(
            [
                e["id"],
                e["patient_index"],
                e["from_lesion_id"],
                e["to_lesion_id"],
                e["origin"],
                e["status"],
                "" if e["cost"] is None else json.dumps(e["cost"]),
            ]
        )
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={
            "Content-Disposition": 'attachment; filename="lesion_graph.csv"',
            "Cache-Control": "no-store",
        },
    )
