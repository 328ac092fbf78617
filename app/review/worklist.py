"""The work list: filtered, sorted, paginated key slices with progress counts, and queue neighbours."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Select, String, and_, cast, func, literal, select
from sqlalchemy.orm import Session

from app.db.models import KeySlice, KeySliceReview, Series, User
from app.review.errors import InvalidInputError, NotFoundError
from app.review.serialize import SPLIT_IDS, SPLIT_NAMES
from app.review.summary import type_bit, types_from_mask
from app.review.vocabulary import STATUSES

SORTS = ("file_name", "patient", "size", "lesion_count", "status", "missed_score")
STATUS_RANK = {status: rank for rank, status in enumerate(STATUSES)}


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
    on_disk: bool | None = None
    sort: str = "file_name"
    order: str = "asc"


def _reviewer_id(session: Session, flt: WorklistFilter, user_id: int | None) -> int | None:
    if flt.reviewer:
        uid = session.execute(select(User.id).where(User.name == flt.reviewer)).scalar_one_or_none()
        if uid is None:
            raise NotFoundError(f"no reviewer named {flt.reviewer!r}")
        return uid
    return user_id


def _conditions(flt: WorklistFilter) -> list[Any]:
    """WHERE conditions on key_slices for every filter except the reviewer status."""
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
    if flt.on_disk is not None:
        conds.append(_key_image_stored() if flt.on_disk else ~_key_image_stored())
    if flt.status is not None and flt.status not in STATUS_RANK:
        raise InvalidInputError(f"status must be one of {', '.join(STATUS_RANK)}, got {flt.status!r}")
    return conds


def _key_image_stored() -> Any:
    """EXISTS: the key slice's index is in its series' stored_slices (the import's list of files on disk)."""
    # Portable over SQLite and PostgreSQL: the JSON list as text ",1,2,3," searched for ",N,".
    text: Any = cast(Series.stored_slices, String)
    for char in (" ", "[", "]"):
        text = func.replace(text, char, "")
    haystack = literal(",") + text + literal(",")
    needle = literal("%,") + cast(KeySlice.key_slice_index, String) + literal(",%")
    return select(Series.id).where(Series.id == KeySlice.series_id, haystack.like(needle)).exists()


def _order(flt: WorklistFilter) -> list[Any]:
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
        "missed_score": KeySlice.missed_score,
    }[flt.sort]
    first = key.desc() if desc else key.asc()
    if flt.sort == "missed_score":
        first = first.nulls_last()
    tie = KeySlice.file_name.desc() if desc else KeySlice.file_name.asc()
    return [first] if flt.sort == "file_name" else [first, tie]


def _status_query(query: Select[Any], status: str, reviewer_id: int | None) -> Select[Any]:
    """Restrict to key slices the reviewer has in `status`: an index join, or an anti-join for unreviewed."""
    rid = reviewer_id if reviewer_id is not None else -1
    if status == "unreviewed":
        touched = (
            select(KeySliceReview.id)
            .where(
                KeySliceReview.key_slice_id == KeySlice.id,
                KeySliceReview.user_id == rid,
                KeySliceReview.status != "unreviewed",
            )
            .exists()
        )
        return query.where(~touched)
    return query.join(
        KeySliceReview,
        and_(
            KeySliceReview.key_slice_id == KeySlice.id,
            KeySliceReview.user_id == rid,
            KeySliceReview.status == status,
        ),
    )


def _ordered(
    flt: WorklistFilter, reviewer_id: int | None, columns: Any, status: str | None = None
) -> Select[Any]:
    """The filtered query in the requested order (the status sort is done group by group by the caller)."""
    query: Select[Any] = select(columns).where(*_conditions(flt))
    status = status or flt.status
    if status is not None:
        query = _status_query(query, status, reviewer_id)
    by_name = replace(flt, sort="file_name") if flt.sort == "status" else flt
    return query.order_by(*_order(by_name))


def matching_ids(*, session: Session, flt: WorklistFilter, user_id: int | None) -> Select[Any]:
    """SELECT of the ids of every key slice the filter matches (all pages), for use as a subquery."""
    reviewer_id = _reviewer_id(session, flt, user_id)
    query: Select[Any] = select(KeySlice.id).where(*_conditions(flt))
    if flt.status is not None:
        query = _status_query(query, flt.status, reviewer_id)
    return query


def _status_groups(flt: WorklistFilter, counts: dict[str, int]) -> list[tuple[str, int]]:
    """The status groups in sort order with their sizes (the status sort is these groups, each by name)."""
    groups = [flt.status] if flt.status else list(STATUS_RANK)
    if flt.order == "desc":
        groups.reverse()
    return [(g, counts[g]) for g in groups]


def _page_items(
    session: Session,
    flt: WorklistFilter,
    reviewer_id: int | None,
    counts: dict[str, int],
    offset: int,
    limit: int,
) -> list[KeySlice]:
    if flt.sort != "status":
        return list(
            session.execute(_ordered(flt, reviewer_id, KeySlice).limit(limit).offset(offset)).scalars()
        )
    # Sorting 32k rows by a joined status is slow; three index-ordered group queries are not.
    items: list[KeySlice] = []
    for status, size in _status_groups(flt, counts):
        if offset >= size:
            offset -= size
            continue
        query = _ordered(flt, reviewer_id, KeySlice, status).limit(limit - len(items)).offset(offset)
        items.extend(session.execute(query).scalars())
        offset = 0
        if len(items) >= limit:
            break
    return items


def _statuses(session: Session, reviewer_id: int | None, ids: list[int]) -> dict[int, str]:
    if reviewer_id is None or not ids:
        return {}
    rows = session.execute(
        select(KeySliceReview.key_slice_id, KeySliceReview.status).where(
            KeySliceReview.user_id == reviewer_id, KeySliceReview.key_slice_id.in_(ids)
        )
    ).all()
    return {k: st for k, st in rows}


def _stored_sets(session: Session, items: list[KeySlice]) -> dict[int, set[int]]:
    """Series id -> the slice indices stored on disk, for the series of `items`."""
    ids = {ks.series_id for ks in items}
    if not ids:
        return {}
    rows = session.execute(select(Series.id, Series.stored_slices).where(Series.id.in_(ids))).all()
    return {sid: {int(i) for i in (stored or [])} for sid, stored in rows}


def summary_dict(ks: KeySlice, status: str, stored: set[int] | None = None) -> dict[str, Any]:
    """The KeySliceSummary of docs/api.md; `stored` is the series' stored slices (None: not known)."""
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
        "image_on_disk": None if stored is None else ks.key_slice_index in stored,
    }


def list_key_slices(
    *, session: Session, flt: WorklistFilter, user_id: int | None, page: int = 1, page_size: int = 50
) -> dict[str, Any]:
    """One page of the work list with the total and the status counts (all filters but status)."""
    if page < 1 or not 1 <= page_size <= 500:
        raise InvalidInputError("page must be >= 1 and page_size 1..500")
    reviewer_id = _reviewer_id(session, flt, user_id)
    # Counts come from two cheap queries instead of a join over every key slice: the filtered total, and
    # the reviewer's own status rows (at most one per key slice they touched) within the same filters.
    conds = _conditions(flt)
    total_all = session.execute(select(func.count(KeySlice.id)).where(*conds)).scalar_one()
    counts = {"total": int(total_all), **dict.fromkeys(STATUSES, 0)}
    if reviewer_id is not None:
        reviewed = select(KeySliceReview.status, func.count()).where(
            KeySliceReview.user_id == reviewer_id, KeySliceReview.status != "unreviewed"
        )
        if conds:  # the join costs a lookup per reviewed key slice: only pay it when filtering
            reviewed = reviewed.join(KeySlice, KeySlice.id == KeySliceReview.key_slice_id).where(*conds)
        grouped = session.execute(reviewed.group_by(KeySliceReview.status)).all()
        for st, n in grouped:
            counts[st] = int(n)
    counts["unreviewed"] = counts["total"] - counts["in_progress"] - counts["done"]
    items = _page_items(session, flt, reviewer_id, counts, (page - 1) * page_size, page_size)
    statuses = _statuses(session, reviewer_id, [ks.id for ks in items])
    stored = _stored_sets(session, items)
    total = counts["total"] if flt.status is None else counts[flt.status]
    return {
        "items": [
            summary_dict(ks, statuses.get(ks.id, "unreviewed"), stored.get(ks.series_id)) for ks in items
        ],
        "total": total,
        "page": page,
        "page_size": page_size,
        "counts": counts,
    }


def neighbours(
    *, session: Session, flt: WorklistFilter, user_id: int | None, file_name: str
) -> dict[str, Any]:
    """The previous and next key slice of `file_name` in the filtered, sorted queue."""
    reviewer_id = _reviewer_id(session, flt, user_id)
    if flt.sort == "status":
        names: list[str] = []
        for status, _size in _status_groups(flt, dict.fromkeys(STATUS_RANK, 0)):
            names.extend(session.execute(_ordered(flt, reviewer_id, KeySlice.file_name, status)).scalars())
    else:
        names = list(session.execute(_ordered(flt, reviewer_id, KeySlice.file_name)).scalars())
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
