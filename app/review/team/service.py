"""Team review on the database: assignments, next-for-me, blinded reads, adjudication, undo.

How a read is stored: each reader's read of a key slice is a TeamRead row holding the lesion state the
reader was shown (baseline) and the reader's marks (app.review.team.rules.Read). Reads never touch the
lesions, so two readers are blind to each other. Once both reads of a double-read key slice are done, a
TeamAdjudication row holds the disagreements; an adjudicator's consensus is applied to the lesions with the
ordinary corrections (versioned, audited, on the adjudicator's undo stack), and undone together.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.exc import StaleDataError

from app.db.models import (
    AuditEntry,
    KeySlice,
    Lesion,
    TeamAdjudication,
    TeamAssignment,
    TeamRead,
    UndoItem,
    User,
    utcnow,
)
from app.deeplesion.errors import InvalidGeometryError
from app.review import corrections
from app.review.audit import record
from app.review.errors import (
    EditConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ReviewError,
)
from app.review.serialize import iso
from app.review.team.rules import (
    ADJUDICATION_STATUSES,
    MODES,
    READS_PER_MODE,
    Mark,
    Read,
    disagreements,
)
from app.review.users import UserInfo
from app.review.vocabulary import ALL_FLAG_REASONS, DATASET_FLAG_REASON, NOTE_REQUIRED_REASONS, ORIGIN_CSV
from app.review.worklist import WorklistFilter, _conditions

ADJUDICATOR_ROLES = ("adjudicator", "admin")
MAX_ADDED = 50


def can_adjudicate(user: UserInfo) -> bool:
    """Adjudicators and admins see both reads and apply a consensus."""
    return user.role in ADJUDICATOR_ROLES


# -- assignments -------------------------------------------------------------------------------------


def _user_ids(session: Session, names: list[str]) -> list[int]:
    rows = dict(session.execute(select(User.name, User.id).where(User.name.in_(names))).all())
    missing = [n for n in names if n not in rows]
    if missing:
        raise InvalidInputError(f"no such reviewer: {', '.join(missing)}", code="unknown_reviewer")
    return [rows[n] for n in names]


def filter_dict(flt: WorklistFilter) -> dict[str, Any]:
    """The work-list filter an assignment was made from, JSON-ready (sort and order left out)."""
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in vars(flt).items()
        if k not in ("sort", "order", "status", "reviewer") and v not in (None, ())
    }


def create_assignment(
    *, session: Session, user: UserInfo, name: str, mode: str, flt: WorklistFilter, readers: list[str]
) -> dict[str, Any]:
    """Assign the key slices of a work-list filter to readers, one or two reads each."""
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    name = name.strip()
    if not name:
        raise InvalidInputError("give the assignment a name")
    readers = list(dict.fromkeys(readers))
    if len(readers) < READS_PER_MODE[mode]:
        raise InvalidInputError(f"a {MODES[mode]} needs at least {READS_PER_MODE[mode]} readers")
    reader_ids = _user_ids(session, readers)
    ids = list(session.execute(select(KeySlice.id).where(*_conditions(flt)).order_by(KeySlice.id)).scalars())
    if not ids:
        raise InvalidInputError("the filter selects no key slice", code="empty_assignment")
    assignment = TeamAssignment(
        name=name[:128], mode=mode, filter=filter_dict(flt), reader_ids=reader_ids, created_by_id=user.id
    )
    session.add(assignment)
    session.flush()
    rows = [
        {
            "assignment_id": assignment.id,
            "key_slice_id": ks,
            "slot": slot,
            "status": "open",
            "undo": [],
            "redo": [],
            "version": 1,
        }
        for ks in ids
        for slot in range(READS_PER_MODE[mode])
    ]
    for start in range(0, len(rows), 5000):
        session.execute(insert(TeamRead), rows[start : start + 5000])
    record(
        session=session,
        user=user,
        action="team_assign",
        key_slice_id=None,
        after={"assignment": assignment.id, "mode": mode, "key_slices": len(ids), "readers": readers},
        undoable=False,
    )
    session.commit()
    return assignment_dict(session, assignment)


def _progress(session: Session, assignment_id: int) -> dict[str, Any]:
    # One pass over the (assignment, reader, status) index gives the totals and each reader's counts.
    rows = session.execute(
        select(TeamRead.reader_id, TeamRead.status, func.count())
        .where(TeamRead.assignment_id == assignment_id)
        .group_by(TeamRead.reader_id, TeamRead.status)
    ).all()
    by_status = {"open": 0, "claimed": 0, "done": 0}
    by_reader: dict[int, dict[str, int]] = {}
    for reader_id, status, n in rows:
        by_status[status] = by_status.get(status, 0) + int(n)
        if reader_id is not None:
            by_reader.setdefault(reader_id, {"claimed": 0, "done": 0})[status] = int(n)
    names = dict(session.execute(select(User.id, User.name).where(User.id.in_(list(by_reader)))).all())
    adj = session.execute(
        select(TeamAdjudication.status, func.count())
        .where(TeamAdjudication.assignment_id == assignment_id)
        .group_by(TeamAdjudication.status)
    ).all()
    return {
        "reads": {"total": sum(by_status.values()), **by_status},
        "readers": sorted(
            ({"reader": names[i], **c} for i, c in by_reader.items()), key=lambda r: r["reader"]
        ),
        "adjudications": {**dict.fromkeys(ADJUDICATION_STATUSES, 0), **{s: int(n) for s, n in adj}},
    }


def assignment_dict(session: Session, a: TeamAssignment) -> dict[str, Any]:
    """The Assignment of docs/api.md with its progress."""
    names = dict(session.execute(select(User.id, User.name).where(User.id.in_(a.reader_ids))).all())
    return {
        "id": a.id,
        "name": a.name,
        "mode": a.mode,
        "filter": a.filter,
        "readers": [names.get(i, "?") for i in a.reader_ids],
        "created_at": iso(a.created_at),
        "progress": _progress(session, a.id),
    }


def list_assignments(*, session: Session, user: UserInfo) -> list[dict[str, Any]]:
    """Every assignment (admins and adjudicators), else those the user reads in; newest first."""
    rows = list(session.execute(select(TeamAssignment).order_by(TeamAssignment.id.desc())).scalars())
    if not can_adjudicate(user):
        rows = [a for a in rows if user.id in a.reader_ids]
    return [assignment_dict(session, a) for a in rows]


def _assignment(session: Session, assignment_id: int) -> TeamAssignment:
    a = session.get(TeamAssignment, assignment_id)
    if a is None:
        raise NotFoundError(f"no assignment {assignment_id}")
    return a


# -- reads -------------------------------------------------------------------------------------------


def baseline_read(session: Session, ks: KeySlice) -> dict[str, Any]:
    """The key slice's current lesions as a Read (what a reader starts from), with each lesion's origin."""
    lesions = session.execute(
        select(Lesion).where(Lesion.key_slice_id == ks.id, Lesion.is_current).order_by(Lesion.id)
    ).scalars()
    out = []
    for lesion in lesions:
        mark = Mark(
            box=tuple(lesion.box),
            lesion_type=lesion.lesion_type,
            recist=tuple(lesion.recist) if lesion.recist is not None else None,
            flag_reason=lesion.flag_reason,
            flag_note=lesion.flag_note or "",
        )
        out.append({"id": lesion.id, "origin": lesion.origin, **mark.as_dict()})
    return {"lesions": out, "added": []}


def read_dict(
    session: Session,
    read: TeamRead,
    *,
    names: dict[int, str] | None = None,
    file_name: str | None = None,
    marks: bool = True,
) -> dict[str, Any]:
    """The TeamRead of docs/api.md (without baseline and marks when `marks` is false)."""
    if file_name is None:
        file_name = session.get_one(KeySlice, read.key_slice_id).file_name
    if names is None:
        names = dict(session.execute(select(User.id, User.name).where(User.id == read.reader_id)).all())
    seconds = None
    if read.claimed_at is not None and read.finished_at is not None:
        seconds = round((_aware(read.finished_at) - _aware(read.claimed_at)).total_seconds(), 3)
    return {
        "id": read.id,
        "assignment_id": read.assignment_id,
        "file_name": file_name,
        "slot": read.slot,
        "reader": names.get(read.reader_id) if read.reader_id is not None else None,
        "status": read.status,
        "version": read.version,
        "baseline": read.baseline if marks else None,
        "marks": read.marks if marks else None,
        "claimed_at": iso(read.claimed_at),
        "finished_at": iso(read.finished_at),
        "seconds": seconds,
        "can_undo": bool(read.undo),
        "can_redo": bool(read.redo),
    }


def _aware(at: datetime) -> datetime:
    from datetime import UTC

    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# How often a reader retries after losing a claim race, and how many open reads SQLite callers spread over.
CLAIM_ATTEMPTS = 100
CLAIM_SPREAD = 16


def _claim(session: Session, read: TeamRead, user: UserInfo) -> None:
    ks = session.get_one(KeySlice, read.key_slice_id)
    base = baseline_read(session, ks)
    read.reader_id = user.id
    read.status = "claimed"
    read.claimed_at = utcnow()
    read.baseline = base
    read.marks = {
        "lesions": [{k: v for k, v in m.items() if k != "origin"} for m in base["lesions"]],
        "added": [],
    }
    read.undo, read.redo = [], []


def next_for_me(*, session: Session, user: UserInfo, assignment_id: int) -> dict[str, Any] | None:
    """The reader's unfinished read, else a newly claimed one; None when nothing is left for them.

    PostgreSQL hands each open read to one caller (FOR UPDATE SKIP LOCKED); on SQLite writers are serialised
    and the row's version check turns a lost race into another try.
    """
    a = _assignment(session, assignment_id)
    if user.id not in a.reader_ids:
        raise PermissionDeniedError(f"{user.name} is not a reader of assignment {assignment_id}")
    mine = session.execute(
        select(TeamRead)
        .where(TeamRead.assignment_id == a.id, TeamRead.reader_id == user.id, TeamRead.status == "claimed")
        .order_by(TeamRead.id)
        .limit(1)
    ).scalar_one_or_none()
    if mine is not None:
        session.commit()
        return read_dict(session, mine)
    other = aliased(TeamRead)
    taken_by_me = (
        select(other.id)
        .where(
            other.assignment_id == TeamRead.assignment_id,
            other.key_slice_id == TeamRead.key_slice_id,
            other.reader_id == user.id,
        )
        .exists()
    )
    postgresql = session.get_bind().dialect.name == "postgresql"
    for _attempt in range(CLAIM_ATTEMPTS):
        query = (
            select(TeamRead)
            .where(TeamRead.assignment_id == a.id, TeamRead.status == "open", ~taken_by_me)
            .order_by(TeamRead.key_slice_id, TeamRead.slot)
        )
        if postgresql:
            read = session.execute(query.limit(1).with_for_update(skip_locked=True)).scalar_one_or_none()
        else:
            # SQLite has no SKIP LOCKED: the first try takes the next read in order; after a lost race the
            # reader tries one of the next few open reads, so the losers stop racing for the same row.
            candidates = session.execute(query.limit(1 if _attempt == 0 else CLAIM_SPREAD)).scalars().all()
            read = random.choice(candidates) if candidates else None
        if read is None:
            session.commit()
            return None
        _claim(session, read, user)
        try:
            session.commit()
        except (StaleDataError, IntegrityError, OperationalError):
            # Another reader took it first (SQLite may say so as a busy snapshot): take the next one.
            session.rollback()
            time.sleep(random.uniform(0, 0.005 * (_attempt + 1)))
            continue
        return read_dict(session, read)
    raise EditConflictError("too many readers at once: try again", current={})


def _read(session: Session, read_id: int) -> TeamRead:
    read = session.get(TeamRead, read_id)
    if read is None:
        raise NotFoundError(f"no read {read_id}")
    return read


def _all_done(session: Session, read: TeamRead) -> bool:
    pending = session.execute(
        select(
            exists().where(
                TeamRead.assignment_id == read.assignment_id,
                TeamRead.key_slice_id == read.key_slice_id,
                TeamRead.status != "done",
            )
        )
    ).scalar_one()
    return not pending


def get_read(*, session: Session, user: UserInfo, read_id: int) -> dict[str, Any]:
    """A read: its reader's own, or, once every read of its key slice is done, an adjudicator's to see."""
    read = _read(session, read_id)
    if read.reader_id != user.id and not (can_adjudicate(user) and _all_done(session, read)):
        raise PermissionDeniedError("reads stay blind until every read of the key slice is done")
    return read_dict(session, read)


def my_queue(*, session: Session, user: UserInfo, done_limit: int = 50) -> dict[str, Any]:
    """The reader's unfinished reads, then their latest done ones (without marks)."""
    names = {user.id: user.name}
    out = []
    for status, limit in (("claimed", 500), ("done", done_limit)):
        rows = session.execute(
            select(TeamRead, KeySlice.file_name)
            .join(KeySlice, KeySlice.id == TeamRead.key_slice_id)
            .where(TeamRead.reader_id == user.id, TeamRead.status == status)
            .order_by(TeamRead.id.desc())
            .limit(limit)
        ).all()
        out += [read_dict(session, r, names=names, file_name=f, marks=False) for r, f in rows]
    return {"reads": out}


def _check_note(reason: str | None, note: str) -> None:
    if reason is None:
        return
    if reason not in ALL_FLAG_REASONS:
        raise InvalidInputError(f"flag_reason must be one of {', '.join(ALL_FLAG_REASONS)}, got {reason!r}")
    if reason in NOTE_REQUIRED_REASONS and not note.strip():
        raise InvalidInputError(f"reason {reason!r} needs a note")


def _checked_mark(ks: KeySlice, data: dict[str, Any]) -> Mark:
    try:
        recist, box = corrections.check_geometry(ks, data.get("recist"), data.get("box"))
    except InvalidGeometryError as exc:
        raise InvalidInputError(str(exc)) from None
    corrections.check_lesion_type(int(data["lesion_type"]))
    reason = data.get("flag_reason")
    note = str(data.get("flag_note") or "")
    _check_note(reason, note)
    return Mark(
        box=tuple(box),
        lesion_type=int(data["lesion_type"]),
        recist=tuple(recist) if recist is not None else None,
        flag_reason=reason,
        flag_note=note,
        deleted=bool(data.get("deleted", False)),
    )


def check_marks(ks: KeySlice, baseline: dict[str, Any], marks: dict[str, Any]) -> Read:
    """A read checked against its key slice and baseline: one mark per baseline lesion, valid geometry."""
    origins = {int(m["id"]): m.get("origin") for m in baseline.get("lesions", [])}
    given = {int(m["id"]): m for m in marks.get("lesions", [])}
    if set(given) != set(origins):
        raise InvalidInputError(f"give one mark for each lesion of the read: {sorted(origins)}")
    lesions = {}
    for lesion_id, data in given.items():
        mark = _checked_mark(ks, data)
        if mark.deleted and origins[lesion_id] == ORIGIN_CSV:
            raise InvalidInputError("only added lesions can be deleted; flag a DL_info.csv lesion instead")
        if (
            mark.flag_reason == DATASET_FLAG_REASON
            and _baseline_reason(baseline, lesion_id) != DATASET_FLAG_REASON
        ):
            raise InvalidInputError(f"{DATASET_FLAG_REASON!r} is the dataset's own flag; choose a reason")
        lesions[lesion_id] = mark
    added = marks.get("added", [])
    if len(added) > MAX_ADDED:
        raise InvalidInputError(f"at most {MAX_ADDED} added lesions")
    for data in added:
        if data.get("flag_reason") is not None:
            raise InvalidInputError("an added lesion is not flagged: delete it instead")
    return Read(lesions=lesions, added=tuple(_checked_mark(ks, d) for d in added))


def _baseline_reason(baseline: dict[str, Any], lesion_id: int) -> str | None:
    for m in baseline.get("lesions", []):
        if int(m["id"]) == lesion_id:
            return m.get("flag_reason")
    return None


def _own_open_read(session: Session, user: UserInfo, read_id: int, version: int) -> TeamRead:
    read = _read(session, read_id)
    if read.reader_id != user.id:
        raise PermissionDeniedError(f"read {read_id} is not yours")
    if read.version != version:
        raise EditConflictError(
            f"read {read_id} was changed in another window first (now version {read.version})",
            current=read_dict(session, read),
        )
    if read.status != "claimed":
        raise InvalidInputError(f"read {read_id} is {read.status}, not in progress", code="read_finished")
    return read


def _result(session: Session, user: UserInfo, read: TeamRead, entry: AuditEntry | None) -> dict[str, Any]:
    ks = session.get_one(KeySlice, read.key_slice_id)
    return {
        **corrections.review_result(session, user, ks, entry=entry),
        "read": read_dict(session, read),
    }


def _commit_read(session: Session, read: TeamRead) -> None:
    try:
        session.commit()
    except StaleDataError:
        session.rollback()
        raise EditConflictError(f"read {read.id} was changed in another window first", current={}) from None


def save_read(
    *, session: Session, user: UserInfo, read_id: int, version: int, marks: dict[str, Any]
) -> dict[str, Any]:
    """Replace the reader's marks (one undoable step of the read)."""
    read = _own_open_read(session, user, read_id, version)
    ks = session.get_one(KeySlice, read.key_slice_id)
    checked = check_marks(ks, read.baseline or {}, marks).as_dict()
    if checked == read.marks:
        return _result(session, user, read, None)
    # Not filed under the key slice: its history is open to every reviewer, and the read is blind.
    entry = record(
        session=session,
        user=user,
        action="team_read",
        key_slice_id=None,
        before={"read": read.id, "marks": read.marks},
        after={"read": read.id, "marks": checked},
        undoable=False,
    )
    read.marks = checked
    read.undo = [*read.undo, entry.id]
    read.redo = []
    _commit_read(session, read)
    return _result(session, user, read, entry)


def undo_read(
    *, session: Session, user: UserInfo, read_id: int, version: int, redo: bool = False
) -> dict[str, Any]:
    """Undo (or redo) the reader's last save of the read."""
    read = _own_open_read(session, user, read_id, version)
    stack = read.redo if redo else read.undo
    if not stack:
        return _result(session, user, read, None)
    step = session.get_one(AuditEntry, stack[-1])
    target = (step.after if redo else step.before) or {}
    entry = record(
        session=session,
        user=user,
        action="team_read_redo" if redo else "team_read_undo",
        key_slice_id=None,  # blind, like the save it undoes
        before={"read": read.id, "entry": step.id, "marks": read.marks},
        after={"read": read.id, "entry": step.id, "marks": target.get("marks")},
        undoable=False,
    )
    read.marks = target.get("marks")
    if redo:
        read.redo, read.undo = stack[:-1], [*read.undo, step.id]
    else:
        read.undo, read.redo = stack[:-1], [*read.redo, step.id]
    _commit_read(session, read)
    return _result(session, user, read, entry)


def finish_read(*, session: Session, user: UserInfo, read_id: int, version: int) -> dict[str, Any]:
    """Mark the read done; when it is the last read of a double-read key slice, compare the two reads."""
    read = _own_open_read(session, user, read_id, version)
    read.status = "done"
    read.finished_at = utcnow()
    entry = record(
        session=session,
        user=user,
        action="team_finish",
        key_slice_id=read.key_slice_id,
        before={"read": read.id, "status": "claimed"},
        after={"read": read.id, "status": "done"},
        undoable=False,
    )
    _commit_read(session, read)
    a = session.get_one(TeamAssignment, read.assignment_id)
    if READS_PER_MODE[a.mode] == 2 and _all_done(session, read):
        _open_adjudication(session, read)
    return _result(session, user, read, entry)


def pair_of(session: Session, assignment_id: int, key_slice_id: int) -> list[TeamRead]:
    """The done reads of a key slice in an assignment, by slot."""
    return list(
        session.execute(
            select(TeamRead)
            .where(
                TeamRead.assignment_id == assignment_id,
                TeamRead.key_slice_id == key_slice_id,
                TeamRead.status == "done",
            )
            .order_by(TeamRead.slot)
        ).scalars()
    )


def _open_adjudication(session: Session, read: TeamRead) -> None:
    reads = pair_of(session, read.assignment_id, read.key_slice_id)
    ks = session.get_one(KeySlice, read.key_slice_id)
    found = disagreements(
        Read.from_dict(reads[0].marks or {}), Read.from_dict(reads[1].marks or {}), ks.spacing_x
    )
    session.add(
        TeamAdjudication(
            assignment_id=read.assignment_id,
            key_slice_id=read.key_slice_id,
            status="open" if found else "agreed",
            disagreements=[d.as_dict() for d in found],
            applied=[],
        )
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()  # both readers finished at once: the other request opened it


def reassign(*, session: Session, user: UserInfo, read_id: int, to: str | None) -> dict[str, Any]:
    """Take an unfinished read from its reader: back to the open pool, or straight to another reader."""
    read = _read(session, read_id)
    if read.status == "done":
        raise InvalidInputError(f"read {read_id} is done already", code="read_finished")
    before = {"read": read.id, "reader_id": read.reader_id, "status": read.status}
    if to is None:
        read.reader_id, read.status, read.baseline, read.marks = None, "open", None, None
        read.claimed_at, read.undo, read.redo = None, [], []
    else:
        a = session.get_one(TeamAssignment, read.assignment_id)
        (to_id,) = _user_ids(session, [to])
        if to_id not in a.reader_ids:
            a.reader_ids = [*a.reader_ids, to_id]
        _claim(session, read, UserInfo(id=to_id, name=to, role="reviewer"))
    entry = record(
        session=session,
        user=user,
        action="team_reassign",
        key_slice_id=read.key_slice_id,
        before=before,
        after={"read": read.id, "reader_id": read.reader_id, "status": read.status},
        undoable=False,
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise InvalidInputError(f"{to} reads this key slice already", code="already_reading") from None
    return _result(session, user, read, entry)


# -- adjudication ------------------------------------------------------------------------------------


def _adjudication(session: Session, adjudication_id: int) -> TeamAdjudication:
    adj = session.get(TeamAdjudication, adjudication_id)
    if adj is None:
        raise NotFoundError(f"no adjudication {adjudication_id}")
    return adj


def adjudication_dict(session: Session, adj: TeamAdjudication, *, full: bool = True) -> dict[str, Any]:
    """The Adjudication of docs/api.md: both reads side by side when `full`."""
    ks = session.get_one(KeySlice, adj.key_slice_id)
    reads = pair_of(session, adj.assignment_id, adj.key_slice_id)
    ids = {r.reader_id for r in reads} | {adj.resolved_by_id}
    names = dict(session.execute(select(User.id, User.name).where(User.id.in_([i for i in ids if i]))).all())
    out: dict[str, Any] = {
        "id": adj.id,
        "assignment_id": adj.assignment_id,
        "file_name": ks.file_name,
        "status": adj.status,
        "version": adj.version,
        "disagreements": adj.disagreements,
        "readers": [names.get(r.reader_id or -1) for r in reads],
        "resolved_by": names.get(adj.resolved_by_id or -1),
        "resolved_at": iso(adj.resolved_at),
        "consensus": adj.consensus,
        "reads": [read_dict(session, r, names=names) for r in reads] if full else [],
    }
    return out


def adjudication_queue(
    *, session: Session, status: str | None = None, assignment_id: int | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Adjudications (open disagreements first), summarised."""
    if status is not None and status not in ADJUDICATION_STATUSES:
        raise InvalidInputError(f"status must be one of {', '.join(ADJUDICATION_STATUSES)}, got {status!r}")
    query = select(TeamAdjudication)
    if status is not None:
        query = query.where(TeamAdjudication.status == status)
    if assignment_id is not None:
        query = query.where(TeamAdjudication.assignment_id == assignment_id)
    rank = {s: i for i, s in enumerate(ADJUDICATION_STATUSES)}
    rows = sorted(
        session.execute(query.order_by(TeamAdjudication.id).limit(limit)).scalars(),
        key=lambda a: rank[a.status],
    )
    return [adjudication_dict(session, a, full=False) for a in rows]


def get_adjudication(*, session: Session, adjudication_id: int) -> dict[str, Any]:
    """One adjudication with both reads."""
    return adjudication_dict(session, _adjudication(session, adjudication_id))


def _apply_mark(session: Session, user: UserInfo, lesion_id: int, mark: Mark) -> list[int]:
    """Bring one lesion to the consensus mark with ordinary corrections; the audit ids of the steps."""
    steps: list[dict[str, Any]] = []
    lesion = session.get_one(Lesion, lesion_id)
    if lesion.deleted:
        return []
    if mark.deleted:
        steps.append(
            corrections.delete_lesion(session=session, user=user, lesion_id=lesion_id, version=lesion.version)
        )
        return [s["entry"]["id"] for s in steps if s["entry"]]
    recist = list(lesion.recist) if lesion.recist is not None else None
    want_recist = list(mark.recist) if mark.recist is not None else None
    if recist != want_recist or list(lesion.box) != list(mark.box) or lesion.lesion_type != mark.lesion_type:
        steps.append(
            corrections.edit_geometry(
                session=session,
                user=user,
                lesion_id=lesion_id,
                version=lesion.version,
                recist=want_recist,
                box=list(mark.box),
                lesion_type=mark.lesion_type,
            )
        )
        session.refresh(lesion)
    if mark.noisy and (lesion.flag_reason, lesion.flag_note or "") != (mark.flag_reason, mark.flag_note):
        if mark.flag_reason != DATASET_FLAG_REASON:
            steps.append(
                corrections.flag(
                    session=session,
                    user=user,
                    lesion_id=lesion_id,
                    version=lesion.version,
                    reason=str(mark.flag_reason),
                    note=mark.flag_note,
                )
            )
    elif not mark.noisy and lesion.flag_reason is not None:
        steps.append(
            corrections.unflag(session=session, user=user, lesion_id=lesion_id, version=lesion.version)
        )
    session.refresh(lesion)
    if not mark.noisy and lesion.confirmed_by_id is None:
        steps.append(
            corrections.confirm(session=session, user=user, lesion_id=lesion_id, version=lesion.version)
        )
    return [s["entry"]["id"] for s in steps if s["entry"]]


def resolve(
    *,
    session: Session,
    user: UserInfo,
    adjudication_id: int,
    version: int,
    pick: str | None,
    consensus: dict[str, Any] | None,
) -> dict[str, Any]:
    """Apply a consensus (read A or B as it is, or an edited one) to the lesions; audited and undoable."""
    adj = _adjudication(session, adjudication_id)
    if adj.version != version:
        raise EditConflictError(
            f"adjudication {adj.id} was changed first (now version {adj.version})",
            current=adjudication_dict(session, adj, full=False),
        )
    if adj.status == "resolved":
        raise InvalidInputError(f"adjudication {adj.id} is resolved already: undo it first", code="resolved")
    reads = pair_of(session, adj.assignment_id, adj.key_slice_id)
    ks = session.get_one(KeySlice, adj.key_slice_id)
    if consensus is None:
        if pick not in ("a", "b"):
            raise InvalidInputError("give pick 'a' or 'b', or a consensus")
        consensus = reads[0 if pick == "a" else 1].marks or {}
    chosen = check_marks(ks, reads[0].baseline or {}, consensus)
    applied: list[int] = []
    for lesion_id, mark in sorted(chosen.lesions.items()):
        applied += _apply_mark(session, user, lesion_id, mark)
    for mark in chosen.added:
        if mark.deleted:
            continue
        step = corrections.add_lesion(
            session=session,
            user=user,
            file_name=ks.file_name,
            lesion_type=mark.lesion_type,
            recist=list(mark.recist) if mark.recist is not None else None,
            box=list(mark.box),
        )
        applied.append(step["entry"]["id"])
    adj = session.get_one(TeamAdjudication, adjudication_id)
    before_status = adj.status
    adj.status, adj.consensus, adj.applied = "resolved", chosen.as_dict(), applied
    adj.resolved_by_id, adj.resolved_at = user.id, utcnow()
    entry = record(
        session=session,
        user=user,
        action="team_resolve",
        key_slice_id=ks.id,
        before={"adjudication": adj.id, "status": before_status},
        after={"adjudication": adj.id, "status": "resolved", "pick": pick, "applied": applied},
        undoable=False,
    )
    session.commit()
    return _adj_result(session, user, adj, entry)


def apply_agreed(
    *, session: Session, user: UserInfo, assignment_id: int | None = None, limit: int = 50
) -> dict[str, Any]:
    """Resolve up to `limit` agreed double reads with their common read: each one a resolve of its own.

    Each is audited and undoable (unresolve) like any resolve; a case that cannot be applied is skipped with
    its reason, the rest go on.
    """
    if assignment_id is not None:
        _assignment(session, assignment_id)
    query = select(TeamAdjudication.id, TeamAdjudication.version).where(TeamAdjudication.status == "agreed")
    if assignment_id is not None:
        query = query.where(TeamAdjudication.assignment_id == assignment_id)
    cases = session.execute(query.order_by(TeamAdjudication.id).limit(limit)).all()
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for adjudication_id, version in cases:
        try:
            # Agreed reads are the same read: "a" is as good as "b".
            results.append(
                resolve(
                    session=session,
                    user=user,
                    adjudication_id=adjudication_id,
                    version=version,
                    pick="a",
                    consensus=None,
                )
            )
        except ReviewError as exc:
            session.rollback()
            skipped.append({"id": adjudication_id, "detail": str(exc)})
    left = session.execute(
        select(func.count()).select_from(query.with_only_columns(TeamAdjudication.id).subquery())
    ).scalar_one()
    return {"results": results, "skipped": skipped, "left": int(left)}


def _adj_result(session: Session, user: UserInfo, adj: TeamAdjudication, entry: AuditEntry) -> dict[str, Any]:
    ks = session.get_one(KeySlice, adj.key_slice_id)
    return {
        **corrections.review_result(session, user, ks, entry=entry),
        "adjudication": adjudication_dict(session, adj),
    }


def unresolve(*, session: Session, user: UserInfo, adjudication_id: int, version: int) -> dict[str, Any]:
    """Undo an applied consensus: its lesion steps are undone (newest first) and the case reopens."""
    adj = _adjudication(session, adjudication_id)
    if adj.version != version:
        raise EditConflictError(
            f"adjudication {adj.id} was changed first (now version {adj.version})",
            current=adjudication_dict(session, adj, full=False),
        )
    if adj.status != "resolved":
        raise InvalidInputError(f"adjudication {adj.id} is not resolved", code="not_resolved")
    if adj.resolved_by_id != user.id:
        raise PermissionDeniedError("only the adjudicator who applied a consensus can undo it")
    stack = list(
        session.execute(
            select(UndoItem.audit_id)
            .where(
                UndoItem.user_id == user.id,
                UndoItem.key_slice_id == adj.key_slice_id,
                UndoItem.state == "done",
            )
            .order_by(UndoItem.id.desc())
            .limit(len(adj.applied))
        ).scalars()
    )
    if stack != list(reversed(adj.applied)):
        raise EditConflictError(
            "the key slice was changed on top of the consensus: undo those changes first", current={}
        )
    ks = session.get_one(KeySlice, adj.key_slice_id)
    for _ in adj.applied:
        corrections.undo(session=session, user=user, file_name=ks.file_name)
    adj = session.get_one(TeamAdjudication, adjudication_id)
    applied = adj.applied
    adj.status = "open" if adj.disagreements else "agreed"
    adj.consensus, adj.applied, adj.resolved_by_id, adj.resolved_at = None, [], None, None
    entry = record(
        session=session,
        user=user,
        action="team_unresolve",
        key_slice_id=ks.id,
        before={"adjudication": adj.id, "status": "resolved", "applied": applied},
        after={"adjudication": adj.id, "status": adj.status},
        undoable=False,
    )
    session.commit()
    return _adj_result(session, user, adj, entry)
