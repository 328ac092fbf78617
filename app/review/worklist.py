"""The work list: filtered, sorted, paginated key slices with progress counts, and queue neighbours."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.orm import Session

from app.db.models import KeySlice, KeySliceReview, User
from app.review.errors import InvalidInputError, NotFoundError
from app.review.serialize import SPLIT_IDS, SPLIT_NAMES
from app.review.summary import type_bit, types_from_mask

SORTS = ("file_name", "patient", "size", "lesion_count", "status", "missed_score")
STATUS_RANK = {"unreviewed": 0, "in_progress": 1, "done": 2}


@dataclass(frozen=True)
class WorklistFilter:
    """The work-list query parameters of docs/api.md."""

    split: str | None = None
    lesion_types: tuple[int, ...] = field(default_factory=tuple)
    noisy: bool | None = None
    status: str | None = None
    reviewer: str | None = None
    patient: int | None = None
    min_size_mm: float | None = None
    max_size_mm: float | None = None
    has_predictions: bool | None = None
    possible_missed: bool | None = None
    sort: str = "file_name"
    order: str = "asc"


def _reviewer_id(session: Session, flt: WorklistFilter, user_id: int | None) -> int | None:
    if flt.reviewer:
        uid = session.execute(select(User.id).where(User.name == flt.reviewer)).scalar_one_or_none()
        if uid is None:
            raise NotFoundError(f"no reviewer named {flt.reviewer!r}")
        return uid
    return user_id


def _base(
    session: Session, flt: WorklistFilter, user_id: int | None, with_status: bool
) -> tuple[Select[Any], Any]:
    """The filtered query and the status expression for the chosen reviewer."""
    reviewer_id = _reviewer_id(session, flt, user_id)
    status = func.coalesce(KeySliceReview.status, "unreviewed")
    query: Select[Any] = select(KeySlice).outerjoin(
        KeySliceReview,
        and_(KeySliceReview.key_slice_id == KeySlice.id, KeySliceReview.user_id == (reviewer_id or -1)),
    )
    conds: list[Any] = []
    if flt.split:
        if flt.split not in SPLIT_IDS:
            raise InvalidInputError(f"split must be one of {', '.join(SPLIT_IDS)}, got {flt.split!r}")
        conds.append(KeySlice.split == SPLIT_IDS[flt.split])
    if flt.lesion_types:
        mask = 0
        for t in flt.lesion_types:
            if not -1 <= t <= 8:
                raise InvalidInputError(f"lesion_type must be -1..8, got {t}")
            mask |= type_bit(t)
        conds.append(KeySlice.lesion_type_mask.op("&")(mask) != 0)
    if flt.noisy is not None:
        conds.append(KeySlice.noisy == flt.noisy)
    if flt.patient is not None:
        conds.append(KeySlice.patient_index == flt.patient)
    if flt.min_size_mm is not None:
        conds.append(KeySlice.max_size_mm >= flt.min_size_mm)
    if flt.max_size_mm is not None:
        conds.append(KeySlice.max_size_mm <= flt.max_size_mm)
    if flt.has_predictions is not None:
        conds.append(
            (KeySlice.prediction_count > 0) if flt.has_predictions else (KeySlice.prediction_count == 0)
        )
    if flt.possible_missed is not None:
        conds.append(
            KeySlice.missed_score.is_not(None) if flt.possible_missed else KeySlice.missed_score.is_(None)
        )
    if with_status and flt.status:
        if flt.status not in STATUS_RANK:
            raise InvalidInputError(f"status must be one of {', '.join(STATUS_RANK)}, got {flt.status!r}")
        conds.append(status == flt.status)
    if conds:
        query = query.where(*conds)
    return query, status


def _order(flt: WorklistFilter, status: Any) -> list[Any]:
    if flt.sort not in SORTS:
        raise InvalidInputError(f"sort must be one of {', '.join(SORTS)}, got {flt.sort!r}")
    if flt.order not in ("asc", "desc"):
        raise InvalidInputError(f"order must be asc or desc, got {flt.order!r}")
    desc = flt.order == "desc"
    key: Any = {
        "file_name": KeySlice.file_name,
        "patient": KeySlice.patient_index,
        "size": KeySlice.max_size_mm,
        "lesion_count": KeySlice.lesion_count,
        "status": case({k: v for k, v in STATUS_RANK.items()}, value=status, else_=0),
        "missed_score": func.coalesce(KeySlice.missed_score, -1.0),
    }[flt.sort]
    first = key.desc() if desc else key.asc()
    tie = KeySlice.file_name.desc() if desc else KeySlice.file_name.asc()
    return [first] if flt.sort == "file_name" else [first, tie]


def summary_dict(ks: KeySlice, status: str) -> dict[str, Any]:
    """The KeySliceSummary of docs/api.md."""
    return {
        "file_name": ks.file_name,
        "patient_index": ks.patient_index,
        "study_index": ks.study_index,
        "series_id": ks.series_index,
        "key_slice_index": ks.key_slice_index,
        "split": SPLIT_NAMES.get(ks.split, str(ks.split)),
        "lesion_count": ks.lesion_count,
        "lesion_types": types_from_mask(ks.lesion_type_mask),
        "max_size_mm": round(ks.max_size_mm, 2),
        "noisy": bool(ks.noisy),
        "status": status,
        "prediction_count": ks.prediction_count,
        "unreviewed_predictions": ks.unreviewed_predictions,
        "missed_score": ks.missed_score,
    }


def list_key_slices(
    *, session: Session, flt: WorklistFilter, user_id: int | None, page: int = 1, page_size: int = 50
) -> dict[str, Any]:
    """One page of the work list with the total and the status counts (all filters but status)."""
    if page < 1 or not 1 <= page_size <= 500:
        raise InvalidInputError("page must be >= 1 and page_size 1..500")
    query, status = _base(session, flt, user_id, with_status=True)
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(
        query.add_columns(status.label("status"))
        .order_by(*_order(flt, status))
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    counts_query, cstatus = _base(session, flt, user_id, with_status=False)
    grouped = session.execute(
        counts_query.with_only_columns(cstatus.label("s"), func.count().label("n")).group_by(cstatus)
    ).all()
    counts = {"total": 0, "unreviewed": 0, "in_progress": 0, "done": 0}
    for s, n in grouped:
        counts[s] = counts.get(s, 0) + int(n)
        counts["total"] += int(n)
    return {
        "items": [summary_dict(ks, st) for ks, st in rows],
        "total": int(total),
        "page": page,
        "page_size": page_size,
        "counts": counts,
    }


def neighbours(
    *, session: Session, flt: WorklistFilter, user_id: int | None, file_name: str
) -> dict[str, Any]:
    """The previous and next key slice of `file_name` in the filtered, sorted queue."""
    query, status = _base(session, flt, user_id, with_status=True)
    names = (
        session.execute(query.with_only_columns(KeySlice.file_name).order_by(*_order(flt, status)))
        .scalars()
        .all()
    )
    try:
        i = names.index(file_name)
    except ValueError:
        exists = session.execute(select(KeySlice.id).where(KeySlice.file_name == file_name)).first()
        if exists is None:
            raise NotFoundError(f"no key slice {file_name}") from None
        # Not in this queue (e.g. just marked done under a status filter): start from the top.
        return {"previous": None, "next": names[0] if names else None}
    return {
        "previous": names[i - 1] if i > 0 else None,
        "next": names[i + 1] if i + 1 < len(names) else None,
    }
