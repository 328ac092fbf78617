"""The agreement report over done reads: per reader pair and per reader, as JSON rows and CSV."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import KeySlice, TeamRead, User
from app.review.team.agreement import PairTally, compare_reads, read_counts, summarize
from app.review.team.rules import Read
from app.review.worklist import WorklistFilter, _conditions

# Points of the Bland-Altman plot sent per pair (the statistics use every pair).
MAX_PLOT_POINTS = 2000


def _done_reads(session: Session, assignment_id: int | None, flt: WorklistFilter) -> Iterator[Any]:
    query = (
        select(TeamRead, KeySlice.spacing_x)
        .join(KeySlice, KeySlice.id == TeamRead.key_slice_id)
        .where(TeamRead.status == "done", *_conditions(flt))
        .order_by(TeamRead.assignment_id, TeamRead.key_slice_id, TeamRead.slot)
    )
    if assignment_id is not None:
        query = query.where(TeamRead.assignment_id == assignment_id)
    yield from session.execute(query.execution_options(yield_per=2000))


def agreement_report(
    *, session: Session, assignment_id: int | None = None, flt: WorklistFilter | None = None
) -> dict[str, Any]:
    """Kappa, F1, Bland-Altman and type agreement per reader pair; time and counts per reader."""
    flt = flt or WorklistFilter()
    names = dict(session.execute(select(User.id, User.name)).all())
    tallies: dict[tuple[str, str], PairTally] = defaultdict(PairTally)
    per_reader: dict[str, dict[str, Any]] = {}
    group: list[tuple[TeamRead, float]] = []

    def flush() -> None:
        if len(group) == 2:
            (ra, sx), (rb, _) = sorted(group, key=lambda g: names.get(g[0].reader_id or -1, ""))
            a, b = Read.from_dict(ra.marks or {}), Read.from_dict(rb.marks or {})
            key = (names.get(ra.reader_id or -1, "?"), names.get(rb.reader_id or -1, "?"))
            tallies[key].add(compare_reads(a, b, sx))
        group.clear()

    previous: tuple[int, int] | None = None
    for read, spacing_x in _done_reads(session, assignment_id, flt):
        at = (read.assignment_id, read.key_slice_id)
        if at != previous:
            flush()
            previous = at
        group.append((read, spacing_x))
        reader = names.get(read.reader_id or -1, "?")
        row = per_reader.setdefault(
            reader,
            {
                "reader": reader,
                "key_slices": 0,
                "seconds": [],
                **dict.fromkeys(("confirmed", "flagged", "edited", "added", "deleted"), 0),
            },
        )
        row["key_slices"] += 1
        if read.claimed_at is not None and read.finished_at is not None:
            row["seconds"].append((read.finished_at - read.claimed_at).total_seconds())
        for k, v in read_counts(
            Read.from_dict(read.marks or {}), Read.from_dict(read.baseline or {})
        ).items():
            row[k] += v
    flush()
    pairs = []
    for (a, b), tally in sorted(tallies.items()):
        points = [[(x + y) / 2, x - y] for x, y in tally.axes_mm[:MAX_PLOT_POINTS]]
        pairs.append({"reader_a": a, "reader_b": b, **summarize(tally), "bland_altman_points": points})
    readers = []
    for row in sorted(per_reader.values(), key=lambda r: r["reader"]):
        secs = sorted(row.pop("seconds"))
        row["mean_seconds"] = sum(secs) / len(secs) if secs else None
        row["median_seconds"] = secs[len(secs) // 2] if secs else None
        readers.append(row)
    return {"assignment_id": assignment_id, "pairs": pairs, "readers": readers}


CSV_TABLES = ("pairs", "readers")


def report_csv(report: dict[str, Any], table: str) -> bytes:
    """One table of the report as CSV (the Bland-Altman points stay in the JSON)."""
    import pandas as pd

    rows = [{k: v for k, v in r.items() if k != "bland_altman_points"} for r in report[table]]
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue().encode()
