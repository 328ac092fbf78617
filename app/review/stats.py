"""Dataset overview figures: lesion positions, type counts, size histogram, review progress."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import KeySlice, KeySliceReview, Lesion, OriginalLesion, User
from app.review.serialize import SPLIT_NAMES
from app.review.vocabulary import STATUSES

SIZE_EDGES_MM = [0.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 1000.0]


def overview(*, session: Session) -> dict[str, Any]:
    """The /api/stats body of docs/api.md, over the current (reviewed) lesions."""
    rows = session.execute(
        select(KeySlice.file_name, OriginalLesion.normalized_location, Lesion.lesion_type, Lesion.size_mm)
        .join(KeySlice, KeySlice.id == Lesion.key_slice_id)
        .outerjoin(OriginalLesion, OriginalLesion.id == Lesion.original_id)
        .where(Lesion.is_current)
    ).all()
    points: list[dict[str, Any]] = []
    type_counts: dict[str, int] = {}
    counts = [0] * (len(SIZE_EDGES_MM) - 1)
    for file_name, loc, lesion_type, size in rows:
        if loc is not None and loc[0] is not None and loc[2] is not None:
            points.append({"file_name": file_name, "x": loc[0], "z": loc[2], "lesion_type": lesion_type})
        type_counts[str(lesion_type)] = type_counts.get(str(lesion_type), 0) + 1
        for i in range(len(counts)):
            if SIZE_EDGES_MM[i] <= size < SIZE_EDGES_MM[i + 1] or (
                i == len(counts) - 1 and size >= SIZE_EDGES_MM[-1]
            ):
                counts[i] += 1
                break
    by_reviewer = []
    total_ks = session.execute(select(func.count(KeySlice.id))).scalar_one()
    per_user = session.execute(
        select(User.name, KeySliceReview.status, func.count())
        .join(User, User.id == KeySliceReview.user_id)
        .group_by(User.name, KeySliceReview.status)
    ).all()
    users: dict[str, dict[str, int]] = {}
    for name, status, n in per_user:
        users.setdefault(name, dict.fromkeys(STATUSES, 0))[status] = int(n)
    for name, c in sorted(users.items()):
        seen = c["in_progress"] + c["done"]
        by_reviewer.append(
            {
                "reviewer": name,
                "unreviewed": int(total_ks) - seen,
                "in_progress": c["in_progress"],
                "done": c["done"],
            }
        )
    done_ks = select(KeySliceReview.key_slice_id).where(KeySliceReview.status == "done").distinct().subquery()
    split_rows = session.execute(
        select(KeySlice.split, func.count(KeySlice.id), func.count(done_ks.c.key_slice_id))
        .outerjoin(done_ks, done_ks.c.key_slice_id == KeySlice.id)
        .group_by(KeySlice.split)
        .order_by(KeySlice.split)
    ).all()
    return {
        "points": points,
        "type_counts": type_counts,
        "size_histogram": {"edges_mm": SIZE_EDGES_MM, "counts": counts},
        "progress": {
            "by_reviewer": by_reviewer,
            "by_split": [
                {"split": SPLIT_NAMES.get(s, str(s)), "total": int(t), "done": int(d)}
                for s, t, d in split_rows
            ],
        },
    }
