"""Team review routes: assignments, next-for-me, blinded reads, adjudication and the agreement report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from app.api.bodies import SplitName, VersionBody
from app.api.deps import ReleasingRoute
from app.api.schemas import error_responses
from app.api.security import AdminUser, CurrentUser, Db, no_store
from app.api.team_schemas import (
    Adjudication,
    AdjudicationQueue,
    AdjudicationResult,
    AdjudicationStatus,
    ApplyAgreedBody,
    ApplyAgreedResult,
    Assignment,
    AssignmentBody,
    Assignments,
    CsvTable,
    MyQueue,
    NextRead,
    ReadBody,
    ReassignBody,
    Report,
    ResolveBody,
    TeamRead,
    TeamReadResult,
)
from app.review.team import report as team_report
from app.review.team import service
from app.review.users import UserInfo
from app.review.worklist import WorklistFilter

router = APIRouter(
    prefix="/api/team", tags=["team"], dependencies=[Depends(no_store)], route_class=ReleasingRoute
)
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
WRITE_ERRORS = error_responses(401, 403, 404, 409, 422)
READ_ERRORS = error_responses(401, 403, 404, 422)
# A whole read may hold more than the body limit allows (200 marks with long notes): 413 is a real answer.
BIG_WRITE_ERRORS = error_responses(401, 403, 404, 409, 413, 422)


def require_adjudicator(user: CurrentUser) -> UserInfo:
    """The signed-in adjudicator or admin; 403 for reviewers."""
    if not service.can_adjudicate(user):
        raise HTTPException(status_code=403, detail="this needs the adjudicator or admin role")
    return user


Adjudicator = Annotated[UserInfo, Depends(require_adjudicator)]


@router.post(
    "/assignments", response_model=Assignment, status_code=201, responses=error_responses(401, 403, 422)
)
def post_assignment(body: AssignmentBody, user: AdminUser, db: Db) -> Any:
    """Assign the key slices of a work-list filter to readers (single or double read)."""
    f = body.filter
    flt = WorklistFilter(
        split=f.split,
        lesion_types=tuple(f.lesion_type),
        noisy=f.noisy,
        patient=f.patient,
        min_size_mm=f.min_size_mm,
        max_size_mm=f.max_size_mm,
        has_predictions=f.has_predictions,
        possible_missed=f.possible_missed,
    )
    return service.create_assignment(
        session=db, user=user, name=body.name, mode=body.mode, flt=flt, readers=body.readers
    )


@router.get("/assignments", response_model=Assignments, responses=error_responses(401))
def get_assignments(user: CurrentUser, db: Db) -> Any:
    """Assignments with progress (a reviewer sees those they read in)."""
    return {"assignments": service.list_assignments(session=db, user=user)}


@router.post("/assignments/{assignment_id}/next", response_model=NextRead, responses=WRITE_ERRORS)
def post_next(assignment_id: Id, user: CurrentUser, db: Db) -> Any:
    """The reader's unfinished read, or the next open one handed to them alone."""
    return {"read": service.next_for_me(session=db, user=user, assignment_id=assignment_id)}


@router.get("/queue", response_model=MyQueue, responses=error_responses(401))
def get_queue(user: CurrentUser, db: Db) -> Any:
    """My queue: my unfinished reads, then my latest done ones."""
    return service.my_queue(session=db, user=user)


@router.get("/reads/{read_id}", response_model=TeamRead, responses=READ_ERRORS)
def get_read(read_id: Id, user: CurrentUser, db: Db) -> Any:
    """A read: its reader's own; adjudicators see it once every read of its key slice is done."""
    return service.get_read(session=db, user=user, read_id=read_id)


@router.put("/reads/{read_id}", response_model=TeamReadResult, responses=BIG_WRITE_ERRORS)
def put_read(read_id: Id, body: ReadBody, user: CurrentUser, db: Db) -> Any:
    """Save the read's marks (one undoable step)."""
    return service.save_read(
        session=db, user=user, read_id=read_id, version=body.version, marks=body.marks.model_dump()
    )


@router.post("/reads/{read_id}/undo", response_model=TeamReadResult, responses=WRITE_ERRORS)
def post_read_undo(read_id: Id, body: VersionBody, user: CurrentUser, db: Db) -> Any:
    """Undo the reader's last save."""
    return service.undo_read(session=db, user=user, read_id=read_id, version=body.version)


@router.post("/reads/{read_id}/redo", response_model=TeamReadResult, responses=WRITE_ERRORS)
def post_read_redo(read_id: Id, body: VersionBody, user: CurrentUser, db: Db) -> Any:
    """Redo the reader's last undone save."""
    return service.undo_read(session=db, user=user, read_id=read_id, version=body.version, redo=True)


@router.post("/reads/{read_id}/finish", response_model=TeamReadResult, responses=WRITE_ERRORS)
def post_finish(read_id: Id, body: VersionBody, user: CurrentUser, db: Db) -> Any:
    """Mark the read done (the second read of a double read opens its adjudication)."""
    return service.finish_read(session=db, user=user, read_id=read_id, version=body.version)


@router.post("/reads/{read_id}/reassign", response_model=TeamReadResult, responses=WRITE_ERRORS)
def post_reassign(read_id: Id, body: ReassignBody, user: AdminUser, db: Db) -> Any:
    """Take an unfinished read back to the pool, or give it to another reader."""
    return service.reassign(session=db, user=user, read_id=read_id, to=body.to)


@router.get("/adjudications", response_model=AdjudicationQueue, responses=error_responses(401, 403, 422))
def get_adjudications(
    user: Adjudicator,
    db: Db,
    status: AdjudicationStatus | None = None,
    assignment: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Any:
    """The adjudication queue."""
    return {"adjudications": service.adjudication_queue(session=db, status=status, assignment_id=assignment)}


@router.get("/adjudications/{adjudication_id}", response_model=Adjudication, responses=READ_ERRORS)
def get_adjudication(adjudication_id: Id, user: Adjudicator, db: Db) -> Any:
    """Both reads of a key slice side by side, with their disagreements."""
    return service.get_adjudication(session=db, adjudication_id=adjudication_id)


@router.post("/adjudications/apply-agreed", response_model=ApplyAgreedResult, responses=WRITE_ERRORS)
def post_apply_agreed(body: ApplyAgreedBody, user: Adjudicator, db: Db) -> Any:
    """Make every agreed double read (of an assignment, or all; up to `limit`) the consensus, one by one."""
    return service.apply_agreed(session=db, user=user, assignment_id=body.assignment, limit=body.limit)


@router.post(
    "/adjudications/{adjudication_id}/resolve", response_model=AdjudicationResult, responses=BIG_WRITE_ERRORS
)
def post_resolve(adjudication_id: Id, body: ResolveBody, user: Adjudicator, db: Db) -> Any:
    """Apply a consensus to the lesions (read A, read B, or an edited read)."""
    return service.resolve(
        session=db,
        user=user,
        adjudication_id=adjudication_id,
        version=body.version,
        pick=body.pick,
        consensus=body.consensus.model_dump() if body.consensus is not None else None,
    )


@router.post(
    "/adjudications/{adjudication_id}/unresolve", response_model=AdjudicationResult, responses=WRITE_ERRORS
)
def post_unresolve(adjudication_id: Id, body: VersionBody, user: Adjudicator, db: Db) -> Any:
    """Undo an applied consensus."""
    return service.unresolve(session=db, user=user, adjudication_id=adjudication_id, version=body.version)


def _report_filter(split: SplitName | None = None) -> WorklistFilter:
    return WorklistFilter(split=split)


ReportFilter = Annotated[WorklistFilter, Depends(_report_filter)]
AssignmentQuery = Annotated[int | None, Query(ge=1, le=2**31 - 1)]


@router.get("/report", response_model=Report, responses=error_responses(401, 403, 422))
def get_report(user: Adjudicator, db: Db, flt: ReportFilter, assignment: AssignmentQuery = None) -> Any:
    """Agreement per reader pair and time and counts per reader."""
    return team_report.agreement_report(session=db, assignment_id=assignment, flt=flt)


@router.get(
    "/report.csv",
    response_class=Response,
    responses={
        200: {"content": {"text/csv": {}}, "description": "a report table"},
        **error_responses(401, 403, 422),
    },
)
def get_report_csv(
    user: Adjudicator,
    db: Db,
    flt: ReportFilter,
    assignment: AssignmentQuery = None,
    table: CsvTable = "pairs",
) -> Response:
    """One table of the report (pairs or readers) as CSV."""
    data = team_report.report_csv(
        team_report.agreement_report(session=db, assignment_id=assignment, flt=flt), table
    )
    return Response(
        data,
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="agreement_{table}.csv"',
            "Cache-Control": "no-store",
        },
    )
