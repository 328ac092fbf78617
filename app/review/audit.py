"""The append-only audit log and the per-user undo/redo stacks beside it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.models import AuditEntry, KeySlice, Lesion, UndoItem, utcnow
from app.review.errors import NotFoundError
from app.review.serialize import audit_dict
from app.review.users import UserInfo


def record(
    *,
    session: Session,
    user: UserInfo,
    action: str,
    key_slice_id: int | None,
    lesion_id: int | None = None,
    prediction_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    undoable: bool = True,
) -> AuditEntry:
    """Append an audit entry; undoable ones also go on the user's undo stack, clearing redo."""
    entry = AuditEntry(
        at=utcnow(),
        user_id=user.id,
        user_name=user.name,
        action=action,
        key_slice_id=key_slice_id,
        lesion_id=lesion_id,
        prediction_id=prediction_id,
        before=before,
        after=after,
    )
    session.add(entry)
    session.flush()
    if undoable and key_slice_id is not None:
        session.execute(
            update(UndoItem)
            .where(
                UndoItem.user_id == user.id,
                UndoItem.key_slice_id == key_slice_id,
                UndoItem.state == "undone",
            )
            .values(state="dead")
        )
        session.add(UndoItem(audit_id=entry.id, user_id=user.id, key_slice_id=key_slice_id, state="done"))
    return entry


def key_slice_history(*, session: Session, file_name: str) -> list[dict[str, Any]]:
    """Audit entries of a key slice, oldest first."""
    ks_id = session.execute(select(KeySlice.id).where(KeySlice.file_name == file_name)).scalar_one_or_none()
    if ks_id is None:
        raise NotFoundError(f"no key slice {file_name}")
    entries = session.execute(
        select(AuditEntry).where(AuditEntry.key_slice_id == ks_id).order_by(AuditEntry.id)
    ).scalars()
    return [audit_dict(e) for e in entries]


def lesion_history(*, session: Session, lesion_id: int) -> list[dict[str, Any]]:
    """Audit entries of a lesion, oldest first."""
    if session.get(Lesion, lesion_id) is None:
        raise NotFoundError(f"no lesion {lesion_id}")
    entries = session.execute(
        select(AuditEntry).where(AuditEntry.lesion_id == lesion_id).order_by(AuditEntry.id)
    ).scalars()
    return [audit_dict(e) for e in entries]
