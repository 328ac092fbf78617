"""Reviewer corrections: confirm, flag, unflag, edit, add, delete, review status, undo and redo.

Every write is one undoable step and answers with the updated key slice (review_result).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from app.db.models import AuditEntry, KeySlice, KeySliceReview, Lesion, Prediction, UndoItem, utcnow
from app.deeplesion.geometry import box_from_recist, lesion_diameters, validate_box, validate_recist
from app.deeplesion.schema import CSV_COORDINATE_DIGITS, LESION_TYPES
from app.review.audit import record
from app.review.errors import EditConflictError, InvalidInputError, NotFoundError
from app.review.serialize import audit_dict, iso, key_slice_dict, load_lesion_dict, own_review, user_names
from app.review.summary import refresh_summary
from app.review.users import UserInfo
from app.review.vocabulary import (
    FLAG_REASONS,
    NOTE_MAX_CHARS,
    NOTE_REQUIRED_REASONS,
    ORIGIN_CSV,
    ORIGIN_DRAWN,
    STATUSES,
)

# The lesion facts a step can change; snapshots of them are the audit log's before/after, and undo puts
# them back. Times are kept as ISO text in the snapshot (JSON) and parsed on the way back.
LESION_FIELDS = (
    "recist",
    "box",
    "slice_index",
    "lesion_type",
    "size_mm",
    "flag_reason",
    "flag_note",
    "flagged_by_id",
    "flagged_at",
    "confirmed_by_id",
    "confirmed_at",
    "deleted",
)
_TIME_FIELDS = ("flagged_at", "confirmed_at")


def get_key_slice(session: Session, file_name: str) -> KeySlice:
    """A key slice by file name, or NotFoundError."""
    ks = session.execute(select(KeySlice).where(KeySlice.file_name == file_name)).scalar_one_or_none()
    if ks is None:
        raise NotFoundError(f"no key slice {file_name}")
    return ks


def _get_lesion(session: Session, lesion_id: int) -> Lesion:
    lesion = session.get(Lesion, lesion_id)
    if lesion is None:
        raise NotFoundError(f"no lesion {lesion_id}")
    return lesion


def snapshot(lesion: Lesion) -> dict[str, Any]:
    """The lesion's changeable facts plus its version, JSON-ready."""
    data: dict[str, Any] = {f: getattr(lesion, f) for f in LESION_FIELDS}
    for f in _TIME_FIELDS:
        data[f] = iso(data[f])
    data["version"] = lesion.version
    return data


def _apply(lesion: Lesion, values: dict[str, Any]) -> None:
    """Put a snapshot's facts back on the lesion."""
    for f in LESION_FIELDS:
        value = values.get(f)
        if f in _TIME_FIELDS and isinstance(value, str):
            value = datetime.fromisoformat(value)
        if f == "deleted":
            value = bool(value)
        setattr(lesion, f, value)


def _same_content(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(a.get(f) == b.get(f) for f in LESION_FIELDS)


def review_result(
    session: Session,
    user: UserInfo,
    ks: KeySlice,
    *,
    lesion_id: int | None = None,
    prediction_id: int | None = None,
    entry: AuditEntry | None = None,
) -> dict[str, Any]:
    """The answer to every review write: the updated key slice and what the write touched."""
    return {
        "key_slice": key_slice_dict(session, ks, user.id),
        "lesion_id": lesion_id,
        "prediction_id": prediction_id,
        "entry": audit_dict(entry) if entry is not None else None,
    }


def bump_version(session: Session, ks: KeySlice) -> None:
    """Count one change of the key slice in the database itself, so parallel writers never lose one.

    It runs first in a write: on PostgreSQL the row lock it takes orders racing writers, so the summary each
    computes afterwards sees the others' committed lesions.
    """
    ks.version = KeySlice.version + 1
    session.flush()


def conflict(session: Session, lesion: Lesion, user: UserInfo, what: str) -> EditConflictError:
    """A 409 carrying the lesion's current state, who changed it, and the key slice as it is now."""
    session.rollback()  # nothing of the refused step stays, its version bump included
    names = user_names(session, {lesion.updated_by_id})
    ks = session.get_one(KeySlice, lesion.key_slice_id)
    return EditConflictError(
        f"{what} was changed by someone else first (now version {lesion.version})",
        current=load_lesion_dict(session, lesion),
        changed_by=names.get(lesion.updated_by_id or -1),
        changed_at=lesion.updated_at,
        key_slice=key_slice_dict(session, ks, user.id),
    )


def _check_version(session: Session, lesion: Lesion, version: int, user: UserInfo) -> None:
    if lesion.version != version:
        raise conflict(session, lesion, user, f"lesion {lesion.id}")


def _flush_or_conflict(session: Session, lesion: Lesion, user: UserInfo) -> None:
    """Flush; a concurrent writer that won the race shows up as StaleDataError and becomes a 409."""
    try:
        session.flush()
    except StaleDataError:
        session.rollback()
        fresh = _get_lesion(session, lesion.id)
        raise conflict(session, fresh, user, f"lesion {lesion.id}") from None


def long_axis_mm(recist: list[float] | None, box: list[float], spacing_x: float) -> float:
    """The work list's size of a lesion: RECIST long axis in mm, else the box's longer unpadded side."""
    return lesion_diameters(recist, box)[0] * spacing_x


def check_geometry(
    ks: KeySlice, recist: list[float] | None, box: list[float] | None
) -> tuple[list[float] | None, list[float]]:
    """Validate RECIST and/or box against the image; derive the box from RECIST when not given.

    Coordinates keep CSV_COORDINATE_DIGITS decimals, so that the CSV export and a re-import give them back
    exactly.
    """
    image_size = (ks.image_width, ks.image_height)
    if recist is None and box is None:
        raise InvalidInputError("give recist (8 numbers) or box (4 numbers)")
    if recist is not None:
        validate_recist(recist, image_size)
        recist = [round(float(v), CSV_COORDINATE_DIGITS) for v in recist]
        if box is None:
            box = list(box_from_recist(recist))
    assert box is not None
    validate_box(box, image_size)
    return recist, [round(float(v), CSV_COORDINATE_DIGITS) for v in box]


def check_lesion_type(lesion_type: int) -> int:
    """The type, or InvalidInputError when it is not a DeepLesion coarse type."""
    if lesion_type not in LESION_TYPES:
        raise InvalidInputError(f"lesion_type must be one of {sorted(LESION_TYPES)}, got {lesion_type}")
    return lesion_type


def finish_step(
    session: Session,
    user: UserInfo,
    ks: KeySlice,
    *,
    action: str,
    lesion_id: int | None = None,
    prediction_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record the step (audit + undo stack), refresh the summary, commit, mark started, answer."""
    refresh_summary(session=session, key_slice=ks)
    entry = record(
        session=session,
        user=user,
        action=action,
        key_slice_id=ks.id,
        lesion_id=lesion_id,
        prediction_id=prediction_id,
        before=before,
        after=after,
    )
    session.commit()
    mark_started(session, user, ks.id)
    return review_result(session, user, ks, lesion_id=lesion_id, prediction_id=prediction_id, entry=entry)


def _change_lesion(
    session: Session,
    user: UserInfo,
    lesion_id: int,
    version: int,
    action: str,
    changes: dict[str, Any],
) -> dict[str, Any]:
    """Apply `changes` to a current lesion as one step; changes that alter nothing write nothing."""
    lesion = _get_lesion(session, lesion_id)
    _check_version(session, lesion, version, user)
    ks = session.get_one(KeySlice, lesion.key_slice_id)
    if lesion.deleted:
        raise InvalidInputError(f"lesion {lesion_id} is deleted")
    if all(_equal(getattr(lesion, k), v) for k, v in changes.items()):
        return review_result(session, user, ks, lesion_id=lesion.id)
    bump_version(session, ks)
    before = snapshot(lesion)
    for key, value in changes.items():
        setattr(lesion, key, value)
    lesion.updated_by_id = user.id
    lesion.updated_at = utcnow()
    if "deleted" in changes:
        _follow_candidate(session, lesion, user)
    _flush_or_conflict(session, lesion, user)
    return finish_step(
        session, user, ks, action=action, lesion_id=lesion.id, before=before, after=snapshot(lesion)
    )


def _follow_candidate(session: Session, lesion: Lesion, user: UserInfo) -> None:
    """A volume candidate added as this lesion follows it: open while it is deleted, added while it is not."""
    from app.review.volume import follow_added_lesion  # the volume module imports this one

    follow_added_lesion(session, lesion, user)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return [float(v) for v in a] == [float(v) for v in b]
    return bool(a == b)


def mark_started(session: Session, user: UserInfo, key_slice_id: int) -> None:
    """After a committed change: a key slice this reviewer had not started becomes 'in progress'.

    Its own transaction, after the change, so that a status race can never lose the change itself.
    Not in the audit trail: undoing the change leaves the key slice started.
    """
    review = own_review(session, key_slice_id, user.id)
    if review is not None and review.status != "unreviewed":
        return
    if review is None:
        session.add(
            KeySliceReview(
                key_slice_id=key_slice_id, user_id=user.id, status="in_progress", updated_at=utcnow()
            )
        )
    else:
        review.status = "in_progress"
        review.updated_at = utcnow()
    try:
        session.commit()
    except (StaleDataError, IntegrityError):
        session.rollback()  # another window set this reviewer's status meanwhile: that one stands


def confirm(*, session: Session, user: UserInfo, lesion_id: int, version: int) -> dict[str, Any]:
    """Mark a lesion as correct (refused while it is flagged noisy: unflag it first)."""
    lesion = _get_lesion(session, lesion_id)
    if lesion.flag_reason is not None and lesion.version == version and not lesion.deleted:
        raise InvalidInputError(
            f"lesion {lesion_id} is flagged noisy: unflag it first to confirm it", code="lesion_flagged"
        )
    changes = {"confirmed_by_id": user.id, "confirmed_at": utcnow()}
    if lesion.confirmed_by_id == user.id:
        changes["confirmed_at"] = lesion.confirmed_at  # confirmed by this reviewer already: nothing to do
    return _change_lesion(session, user, lesion_id, version, "confirm", changes)


def flag(
    *, session: Session, user: UserInfo, lesion_id: int, version: int, reason: str, note: str = ""
) -> dict[str, Any]:
    """Flag a lesion as noisy with a reason and a note; its geometry, type and confirmation stay."""
    if reason not in FLAG_REASONS:
        raise InvalidInputError(f"reason must be one of {', '.join(FLAG_REASONS)}, got {reason!r}")
    if reason in NOTE_REQUIRED_REASONS and not note.strip():
        raise InvalidInputError(f"reason {reason!r} needs a note")
    lesion = _get_lesion(session, lesion_id)
    note = note[:NOTE_MAX_CHARS]
    changes: dict[str, Any] = {"flag_reason": reason, "flag_note": note}
    if (lesion.flag_reason, lesion.flag_note or "") != (reason, note):
        changes.update(flagged_by_id=user.id, flagged_at=utcnow())
    return _change_lesion(session, user, lesion_id, version, "flag", changes)


def unflag(*, session: Session, user: UserInfo, lesion_id: int, version: int) -> dict[str, Any]:
    """Clear the noisy flag, the dataset's own Possibly_noisy included."""
    changes = {"flag_reason": None, "flag_note": None, "flagged_by_id": None, "flagged_at": None}
    return _change_lesion(session, user, lesion_id, version, "unflag", changes)


def edit_geometry(
    *,
    session: Session,
    user: UserInfo,
    lesion_id: int,
    version: int,
    recist: list[float] | None = None,
    box: list[float] | None = None,
    lesion_type: int | None = None,
) -> dict[str, Any]:
    """Replace a lesion's RECIST and/or box (box from RECIST by the 5 px rule) and/or its type."""
    lesion = _get_lesion(session, lesion_id)
    ks = session.get_one(KeySlice, lesion.key_slice_id)
    changes: dict[str, Any] = {}
    if recist is not None or box is not None:
        new_recist, new_box = check_geometry(ks, recist, box)
        # A new box without RECIST drops the old measurement: it no longer matches the box.
        changes.update(
            recist=new_recist, box=new_box, size_mm=long_axis_mm(new_recist, new_box, ks.spacing_x)
        )
    if lesion_type is not None:
        changes["lesion_type"] = check_lesion_type(lesion_type)
    if not changes:
        raise InvalidInputError("nothing to change: give recist, box or lesion_type")
    return _change_lesion(session, user, lesion_id, version, "edit", changes)


def check_slice_index(ks: KeySlice, slice_index: int | None) -> int:
    """The slice a new lesion lies on: the key slice by default, else one of its context slices."""
    if slice_index is None:
        return ks.key_slice_index
    if slice_index != ks.key_slice_index and not ks.slice_first <= slice_index <= ks.slice_last:
        raise InvalidInputError(
            f"slice_index {slice_index} is outside the key slice's context {ks.slice_first}..{ks.slice_last}"
        )
    return slice_index


def new_lesion(
    ks: KeySlice,
    user: UserInfo,
    *,
    origin: str,
    recist: list[float] | None,
    box: list[float],
    lesion_type: int,
    slice_index: int,
) -> Lesion:
    """A reviewer-added lesion, confirmed by its author."""
    now = utcnow()
    return Lesion(
        key_slice_id=ks.id,
        origin=origin,
        recist=recist,
        box=box,
        lesion_type=lesion_type,
        slice_index=slice_index,
        size_mm=long_axis_mm(recist, box, ks.spacing_x),
        deleted=False,
        confirmed_by_id=user.id,
        confirmed_at=now,
        created_by_id=user.id,
        created_at=now,
        updated_by_id=user.id,
        updated_at=now,
    )


def add_lesion(
    *,
    session: Session,
    user: UserInfo,
    file_name: str,
    lesion_type: int,
    recist: list[float] | None = None,
    box: list[float] | None = None,
    slice_index: int | None = None,
    on_added: Callable[[Lesion], None] | None = None,
) -> dict[str, Any]:
    """Add a lesion the dataset missed, on the key slice or one of its context slices.

    `on_added(lesion)` runs before the step commits, so what it writes (a volume candidate's decision)
    lands in the same transaction as the lesion, or not at all.
    """
    ks = get_key_slice(session, file_name)
    new_recist, new_box = check_geometry(ks, recist, box)
    check_lesion_type(lesion_type)
    on_slice = check_slice_index(ks, slice_index)
    bump_version(session, ks)
    lesion = new_lesion(
        ks,
        user,
        origin=ORIGIN_DRAWN,
        recist=new_recist,
        box=new_box,
        lesion_type=lesion_type,
        slice_index=on_slice,
    )
    session.add(lesion)
    session.flush()
    if on_added is not None:
        on_added(lesion)
    return finish_step(session, user, ks, action="add", lesion_id=lesion.id, after=snapshot(lesion))


def delete_lesion(*, session: Session, user: UserInfo, lesion_id: int, version: int) -> dict[str, Any]:
    """Delete a lesion a reviewer added (csv lesions are flagged, never deleted)."""
    lesion = _get_lesion(session, lesion_id)
    if lesion.origin == ORIGIN_CSV:
        raise InvalidInputError("only added lesions can be deleted; flag a DL_info.csv lesion instead")
    return _change_lesion(session, user, lesion_id, version, "delete", {"deleted": True})


def set_status(
    *, session: Session, user: UserInfo, file_name: str, status: str, version: int
) -> dict[str, Any]:
    """Set the user's review status of a key slice; `version` is the status_version seen (0 = none)."""
    if status not in STATUSES:
        raise InvalidInputError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    ks = get_key_slice(session, file_name)
    review = own_review(session, ks.id, user.id)
    current_version = review.version if review is not None else 0
    if current_version != version:
        raise EditConflictError(
            "review status was changed in another window first",
            current={"status": review.status if review else "unreviewed", "status_version": current_version},
            key_slice=key_slice_dict(session, ks, user.id),
            changed_by=user.name,
            changed_at=review.updated_at if review else None,
        )
    before = {"status": review.status if review else "unreviewed", "version": current_version}
    if review is None:
        review = KeySliceReview(key_slice_id=ks.id, user_id=user.id, status=status, updated_at=utcnow())
        session.add(review)
    else:
        review.status = status
        review.updated_at = utcnow()
    try:
        session.flush()
    except (StaleDataError, IntegrityError):  # another tab created or changed it first
        session.rollback()
        raise EditConflictError(
            "review status was changed in another window first",
            current={},
            key_slice=key_slice_dict(session, ks, user.id),
        ) from None
    entry = record(
        session=session,
        user=user,
        action="status",
        key_slice_id=ks.id,
        before=before,
        after={"status": review.status, "version": review.version},
    )
    session.commit()
    return review_result(session, user, ks, entry=entry)


def _key_slice_of(session: Session, entry: AuditEntry, user: UserInfo) -> dict[str, Any]:
    """The key slice an audit entry belongs to, as the user sees it now (for a 409 body)."""
    session.rollback()  # nothing of the refused step stays, its version bump included
    return key_slice_dict(session, session.get_one(KeySlice, entry.key_slice_id), user.id)


def _restore_status(
    session: Session,
    user: UserInfo,
    entry: AuditEntry,
    target: dict[str, Any] | None,
    expected: dict[str, Any] | None,
) -> dict[str, Any]:
    assert entry.key_slice_id is not None
    review = own_review(session, entry.key_slice_id, user.id)
    now = review.status if review else "unreviewed"
    if expected is not None and now != expected["status"]:
        raise EditConflictError(
            "review status changed since",
            current={"status": now},
            key_slice=_key_slice_of(session, entry, user),
        )
    if review is None:
        review = KeySliceReview(key_slice_id=entry.key_slice_id, user_id=user.id, status="unreviewed")
        session.add(review)
    review.status = (target or {}).get("status", "unreviewed")
    review.updated_at = utcnow()
    session.flush()
    return {"status": review.status, "version": review.version}


def _restore_prediction(
    session: Session,
    user: UserInfo,
    entry: AuditEntry,
    target: dict[str, Any] | None,
    expected: dict[str, Any] | None,
) -> dict[str, Any]:
    """Undo or redo a reject: the prediction's status goes back, unless someone else changed it since."""
    pred = session.get(Prediction, entry.prediction_id)
    if pred is None:
        raise NotFoundError(f"no prediction {entry.prediction_id}")
    if expected is not None and pred.status != expected.get("status"):
        raise EditConflictError(
            f"prediction {pred.id} was changed since",
            current={"status": pred.status, "version": pred.version},
            key_slice=_key_slice_of(session, entry, user),
        )
    pred.status = (target or {}).get("status", "pending")
    try:
        session.flush()
    except StaleDataError:
        session.rollback()
        raise EditConflictError(
            f"prediction {entry.prediction_id} was changed since",
            current={},
            key_slice=_key_slice_of(session, entry, user),
        ) from None
    return {"status": pred.status, "version": pred.version}


def _restore(
    session: Session,
    user: UserInfo,
    entry: AuditEntry,
    target: dict[str, Any] | None,
    expected: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """Put the thing an audit entry changed back to `target`; `expected` is what it must look like now.

    A lesion snapshot of None means "the lesion does not exist yet" (before an add or an accept).
    """
    if entry.action == "status":
        return _restore_status(session, user, entry, target, expected)
    if entry.action.startswith("link_"):  # follow-up link steps (app/review/followup.py imports this module)
        from app.review.followup import restore_link

        return restore_link(session, entry, target, expected)
    if entry.lesion_id is None:
        if entry.prediction_id is None:
            raise InvalidInputError(f"a {entry.action} cannot be undone")
        return _restore_prediction(session, user, entry, target, expected)
    lesion = _get_lesion(session, entry.lesion_id)
    current = snapshot(lesion)
    if not _same_content(current, expected if expected is not None else {**current, "deleted": True}):
        raise conflict(session, lesion, user, f"lesion {lesion.id}")
    _apply(lesion, target if target is not None else {**current, "deleted": True})
    lesion.updated_by_id = user.id
    lesion.updated_at = utcnow()
    if entry.prediction_id is not None:
        # An accept step moves its prediction too; someone else may have decided that prediction since.
        pred = session.get(Prediction, entry.prediction_id)
        if pred is not None:
            # Undoing the accept (the lesion goes) needs the prediction still accepted as this lesion;
            # redoing it (the lesion comes back) needs the prediction still pending.
            ours = pred.status == "accepted" and pred.lesion_id == lesion.id
            if (not ours) if lesion.deleted else (pred.status != "pending"):
                session.rollback()
                raise EditConflictError(
                    f"prediction {pred.id} was decided by someone else since",
                    current={"id": pred.id, "status": pred.status, "version": pred.version},
                    key_slice=_key_slice_of(session, entry, user),
                )
            pred.status = "pending" if lesion.deleted else "accepted"
            pred.lesion_id = None if lesion.deleted else lesion.id
    if entry.action in ("add", "delete"):
        _follow_candidate(session, lesion, user)
    _flush_or_conflict(session, lesion, user)
    return snapshot(lesion)


def _undo_redo(session: Session, user: UserInfo, file_name: str, redo: bool) -> dict[str, Any]:
    ks = get_key_slice(session, file_name)
    state = "undone" if redo else "done"
    order = (UndoItem.changed_at.desc(), UndoItem.id.desc()) if redo else (UndoItem.id.desc(),)
    item = session.execute(
        select(UndoItem)
        .where(UndoItem.user_id == user.id, UndoItem.key_slice_id == ks.id, UndoItem.state == state)
        .order_by(*order)
        .limit(1)
    ).scalar_one_or_none()
    if item is None:
        return review_result(session, user, ks)
    entry = session.get_one(AuditEntry, item.audit_id)
    bump_version(session, ks)
    if redo:
        after = _restore(session, user, entry, entry.after, entry.before)
    else:
        after = _restore(session, user, entry, entry.before, entry.after)
    item.state = "done" if redo else "undone"
    item.changed_at = utcnow()
    refresh_summary(session=session, key_slice=ks)
    log_entry = record(
        session=session,
        user=user,
        action="redo" if redo else "undo",
        key_slice_id=ks.id,
        lesion_id=entry.lesion_id,
        prediction_id=entry.prediction_id,
        before={"entry": entry.id, "state": entry.after if not redo else entry.before},
        after={"entry": entry.id, "state": after},
        undoable=False,
    )
    session.commit()
    return review_result(
        session, user, ks, lesion_id=entry.lesion_id, prediction_id=entry.prediction_id, entry=log_entry
    )


def undo(*, session: Session, user: UserInfo, file_name: str) -> dict[str, Any]:
    """Undo the user's last change on a key slice."""
    return _undo_redo(session, user, file_name, redo=False)


def redo(*, session: Session, user: UserInfo, file_name: str) -> dict[str, Any]:
    """Re-apply the user's last undone change on a key slice."""
    return _undo_redo(session, user, file_name, redo=True)


def key_slice_detail(*, session: Session, file_name: str, user: UserInfo | None) -> dict[str, Any]:
    """The KeySlice detail of docs/api.md."""
    ks = get_key_slice(session, file_name)
    return key_slice_dict(session, ks, user.id if user else None)
