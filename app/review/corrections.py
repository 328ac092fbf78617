"""Reviewer corrections: confirm, flag, unflag, edit, add, delete, review status, undo and redo."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from app.db.models import AuditEntry, KeySlice, KeySliceReview, Lesion, Prediction, UndoItem, utcnow
from app.deeplesion.geometry import box_from_recist, recist_diameters, validate_box, validate_recist
from app.deeplesion.schema import BOX_PADDING_PX, LESION_TYPES
from app.review.audit import record
from app.review.errors import EditConflictError, InvalidInputError, NotFoundError
from app.review.serialize import audit_dict, key_slice_dict, load_lesion_dict, user_names
from app.review.summary import refresh_summary
from app.review.users import UserInfo

FLAG_REASONS = ("not_a_lesion", "wrong_measurement", "duplicate", "other")
STATUSES = ("unreviewed", "in_progress", "done")
# The lesion fields a change can touch; snapshots of them are the audit log's before/after.
LESION_FIELDS = (
    "review",
    "recist",
    "box",
    "lesion_type",
    "slice_index",
    "size_mm",
    "noisy",
    "flag_reason",
    "flag_text",
)


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
    """The lesion's reviewable fields plus its version."""
    data: dict[str, Any] = {f: getattr(lesion, f) for f in LESION_FIELDS}
    data["version"] = lesion.version
    return data


def _same_content(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(a.get(f) == b.get(f) for f in LESION_FIELDS)


def _conflict(session: Session, lesion: Lesion, what: str) -> EditConflictError:
    names = user_names(session, {lesion.updated_by_id})
    return EditConflictError(
        f"{what} was changed by someone else first (now version {lesion.version})",
        current=load_lesion_dict(session, lesion),
        changed_by=names.get(lesion.updated_by_id or -1),
        changed_at=lesion.updated_at,
    )


def _check_version(session: Session, lesion: Lesion, version: int) -> None:
    if lesion.version != version:
        raise _conflict(session, lesion, f"lesion {lesion.id}")


def _flush_or_conflict(session: Session, lesion: Lesion) -> None:
    """Flush; a concurrent writer that won the race shows up as StaleDataError and becomes a 409."""
    try:
        session.flush()
    except StaleDataError:
        session.rollback()
        fresh = _get_lesion(session, lesion.id)
        raise _conflict(session, fresh, f"lesion {lesion.id}") from None


def size_mm(recist: list[float] | None, box: list[float], spacing_x: float) -> float:
    """Mean RECIST diameter in mm; for a box alone, the mean side of the unpadded box."""
    if recist is not None:
        long_axis, short_axis = recist_diameters(recist)
        return (long_axis + short_axis) / 2.0 * spacing_x
    w = max(0.0, box[2] - box[0] - 2 * BOX_PADDING_PX)
    h = max(0.0, box[3] - box[1] - 2 * BOX_PADDING_PX)
    return (w + h) / 2.0 * spacing_x


def check_geometry(
    ks: KeySlice, recist: list[float] | None, box: list[float] | None
) -> tuple[list[float] | None, list[float]]:
    """Validate RECIST and/or box against the image; derive the box from RECIST when not given."""
    image_size = (ks.image_width, ks.image_height)
    if recist is None and box is None:
        raise InvalidInputError("give recist (8 numbers) or box (4 numbers)")
    if recist is not None:
        validate_recist(recist, image_size)
        recist = [float(v) for v in recist]
        if box is None:
            box = [round(v, 3) for v in box_from_recist(recist)]
    assert box is not None
    validate_box(box, image_size)
    return recist, [float(v) for v in box]


def check_lesion_type(lesion_type: int) -> int:
    """The type, or InvalidInputError when it is not a DeepLesion coarse type."""
    if lesion_type not in LESION_TYPES:
        raise InvalidInputError(f"lesion_type must be one of {sorted(LESION_TYPES)}, got {lesion_type}")
    return lesion_type


def _change_lesion(
    session: Session,
    user: UserInfo,
    lesion_id: int,
    version: int,
    action: str,
    changes: dict[str, Any],
) -> dict[str, Any]:
    lesion = _get_lesion(session, lesion_id)
    _check_version(session, lesion, version)
    if lesion.review == "deleted":
        raise InvalidInputError(f"lesion {lesion_id} is deleted")
    before = snapshot(lesion)
    for key, value in changes.items():
        setattr(lesion, key, value)
    lesion.updated_by_id = user.id
    lesion.updated_at = utcnow()
    _flush_or_conflict(session, lesion)
    ks = session.get_one(KeySlice, lesion.key_slice_id)
    ks.version += 1
    refresh_summary(session=session, key_slice=ks)
    record(
        session=session,
        user=user,
        action=action,
        key_slice_id=ks.id,
        lesion_id=lesion.id,
        before=before,
        after=snapshot(lesion),
    )
    session.commit()
    result = load_lesion_dict(session, lesion)
    mark_started(session, user, ks.id)
    return result


def mark_started(session: Session, user: UserInfo, key_slice_id: int) -> None:
    """After a committed change: a key slice this reviewer had not started becomes 'in progress'.

    Its own transaction, after the change, so that a status race can never lose the change itself.
    Not in the audit trail: undoing the change leaves the key slice started.
    """
    review = session.execute(
        select(KeySliceReview).where(
            KeySliceReview.key_slice_id == key_slice_id, KeySliceReview.user_id == user.id
        )
    ).scalar_one_or_none()
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
    """Mark a lesion as correct."""
    changes = {"review": "confirmed", "flag_reason": None, "flag_text": None}
    return _change_lesion(session, user, lesion_id, version, "confirm", changes)


def flag(
    *, session: Session, user: UserInfo, lesion_id: int, version: int, reason: str, text: str = ""
) -> dict[str, Any]:
    """Flag a lesion as noisy with a reason and free text."""
    if reason not in FLAG_REASONS:
        raise InvalidInputError(f"reason must be one of {', '.join(FLAG_REASONS)}, got {reason!r}")
    if reason == "other" and not text.strip():
        raise InvalidInputError("reason 'other' needs a text")
    changes = {"review": "flagged", "flag_reason": reason, "flag_text": text[:2000]}
    return _change_lesion(session, user, lesion_id, version, "flag", changes)


def unflag(*, session: Session, user: UserInfo, lesion_id: int, version: int) -> dict[str, Any]:
    """Clear a flag, including the dataset's own Possibly_noisy mark."""
    changes = {"review": "unreviewed", "flag_reason": None, "flag_text": None, "noisy": False}
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
    changes: dict[str, Any] = {"review": "edited"}
    if recist is not None or box is not None:
        new_recist, new_box = check_geometry(ks, recist, box)
        # A new box without RECIST drops the old measurement: it no longer matches the box.
        changes.update(recist=new_recist, box=new_box, size_mm=size_mm(new_recist, new_box, ks.spacing_x))
    if lesion_type is not None:
        changes["lesion_type"] = check_lesion_type(lesion_type)
    if len(changes) == 1:
        raise InvalidInputError("nothing to change: give recist, box or lesion_type")
    return _change_lesion(session, user, lesion_id, version, "edit", changes)


def add_lesion(
    *,
    session: Session,
    user: UserInfo,
    file_name: str,
    lesion_type: int,
    recist: list[float] | None = None,
    box: list[float] | None = None,
    slice_index: int | None = None,
) -> dict[str, Any]:
    """Add a lesion the dataset missed."""
    ks = get_key_slice(session, file_name)
    new_recist, new_box = check_geometry(ks, recist, box)
    check_lesion_type(lesion_type)
    lesion = Lesion(
        key_slice_id=ks.id,
        origin="added",
        source="manual",
        review="confirmed",
        recist=new_recist,
        box=new_box,
        lesion_type=lesion_type,
        slice_index=slice_index if slice_index is not None else ks.key_slice_index,
        size_mm=size_mm(new_recist, new_box, ks.spacing_x),
        noisy=False,
        updated_by_id=user.id,
        updated_at=utcnow(),
    )
    session.add(lesion)
    session.flush()
    ks.version += 1
    refresh_summary(session=session, key_slice=ks)
    record(
        session=session,
        user=user,
        action="add",
        key_slice_id=ks.id,
        lesion_id=lesion.id,
        before=None,
        after=snapshot(lesion),
    )
    session.commit()
    result = load_lesion_dict(session, lesion)
    mark_started(session, user, ks.id)
    return result


def delete_lesion(*, session: Session, user: UserInfo, lesion_id: int, version: int) -> None:
    """Delete a lesion a reviewer added (originals are flagged, never deleted)."""
    lesion = _get_lesion(session, lesion_id)
    if lesion.origin != "added":
        raise InvalidInputError("only added lesions can be deleted; flag an original lesion instead")
    _change_lesion(session, user, lesion_id, version, "delete", {"review": "deleted"})


def set_status(
    *, session: Session, user: UserInfo, file_name: str, status: str, version: int
) -> dict[str, Any]:
    """Set the user's review status of a key slice; `version` is the status_version seen (0 = none)."""
    if status not in STATUSES:
        raise InvalidInputError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    ks = get_key_slice(session, file_name)
    review = session.execute(
        select(KeySliceReview).where(KeySliceReview.key_slice_id == ks.id, KeySliceReview.user_id == user.id)
    ).scalar_one_or_none()
    current_version = review.version if review is not None else 0
    if current_version != version:
        raise EditConflictError(
            "review status was changed in another window first",
            current={"status": review.status if review else "unreviewed", "status_version": current_version},
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
        raise EditConflictError("review status was changed in another window first", current={}) from None
    record(
        session=session,
        user=user,
        action="status",
        key_slice_id=ks.id,
        before=before,
        after={"status": review.status, "version": review.version},
    )
    session.commit()
    return {"status": review.status, "status_version": review.version}


def _restore(
    session: Session,
    user: UserInfo,
    entry: AuditEntry,
    target: dict[str, Any] | None,
    expected: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """Put the thing an audit entry changed back to `target`; `expected` is what it must look like now."""
    if entry.action == "status":
        review = session.execute(
            select(KeySliceReview).where(
                KeySliceReview.key_slice_id == entry.key_slice_id, KeySliceReview.user_id == user.id
            )
        ).scalar_one_or_none()
        now = review.status if review else "unreviewed"
        if expected is not None and now != expected["status"]:
            raise EditConflictError("review status changed since", current={"status": now})
        if review is None:
            review = KeySliceReview(key_slice_id=entry.key_slice_id, user_id=user.id, status="unreviewed")
            session.add(review)
        review.status = (target or {}).get("status", "unreviewed")
        review.updated_at = utcnow()
        session.flush()
        return {"status": review.status, "version": review.version}
    if entry.lesion_id is None:
        raise InvalidInputError(f"a {entry.action} cannot be undone")
    lesion = _get_lesion(session, entry.lesion_id)
    current = snapshot(lesion)
    if expected is None:
        expected = {**current, "review": "deleted"}
    if not _same_content(current, expected):
        raise _conflict(session, lesion, f"lesion {lesion.id}")
    values = target if target is not None else {**current, "review": "deleted"}
    for f in LESION_FIELDS:
        setattr(lesion, f, values.get(f))
    lesion.updated_by_id = user.id
    lesion.updated_at = utcnow()
    if entry.prediction_id is not None:
        pred = session.get(Prediction, entry.prediction_id)
        if pred is not None:
            accepted = lesion.review != "deleted"
            pred.status = "accepted" if accepted else "pending"
            pred.lesion_id = lesion.id if accepted else None
    _flush_or_conflict(session, lesion)
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
        return {"undone" if not redo else "redone": None, "key_slice": key_slice_dict(session, ks, user.id)}
    entry = session.get_one(AuditEntry, item.audit_id)
    if redo:
        after = _restore(session, user, entry, entry.after, entry.before)
    else:
        after = _restore(session, user, entry, entry.before, entry.after)
    item.state = "done" if redo else "undone"
    item.changed_at = utcnow()
    ks.version += 1
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
    key = "redone" if redo else "undone"
    return {key: audit_dict(log_entry), "key_slice": key_slice_dict(session, ks, user.id)}


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
