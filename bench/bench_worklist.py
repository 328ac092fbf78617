"""Work-list queries with filters over 32,735 lesions, SQLite and PostgreSQL, vs a pandas full scan."""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.review_bench_data import REAL_ROWS, append_figures, make_csv, postgres_available, scratch_database

TARGET_P95_MS = 50.0
HEADING = "## Import and work list (bench/bench_import.py, bench/bench_worklist.py, H3)"


def query_mix(patient: int) -> list[tuple[dict[str, Any], int]]:
    """Filter sets a reviewer uses, with the page asked for."""
    return [
        ({}, 1),
        ({"split": "test", "lesion_types": (4, 5), "sort": "size", "order": "desc"}, 1),
        ({"status": "unreviewed", "split": "val"}, 3),
        ({"noisy": True}, 1),
        ({"min_size_mm": 10.0, "max_size_mm": 30.0, "sort": "lesion_count"}, 2),
        ({"possible_missed": True, "sort": "missed_score", "order": "desc"}, 1),
        ({"patient": patient}, 1),
        ({"sort": "status", "order": "desc"}, 40),
        ({"status": "done", "lesion_types": (2,)}, 1),
        ({"has_predictions": True, "split": "train", "sort": "patient"}, 5),
    ]


def prepare(url: str, seed: int) -> tuple[int, int]:
    """Import-time state a real review has: statuses, flags and predictions on some key slices."""
    from sqlalchemy import insert, select, text, update

    from app.db.models import KeySlice, KeySliceReview, Lesion, utcnow
    from app.db.session import make_engine, make_session_factory
    from app.review.users import create_user

    rng = random.Random(seed)
    engine = make_engine(url)
    with make_session_factory(engine)() as s, s.begin():
        user = create_user(session=s, name="bench", password="bench-password", role="reviewer")
        ids = list(s.execute(select(KeySlice.id)).scalars())
        statuses = [
            {
                "key_slice_id": i,
                "user_id": user.id,
                "status": rng.choice(["in_progress", "done"]),
                "version": 1,
            }
            for i in rng.sample(ids, len(ids) // 5)
        ]
        s.execute(insert(KeySliceReview), statuses)
        flagged = rng.sample(ids, 300)
        s.execute(
            update(Lesion)
            .where(Lesion.key_slice_id.in_(flagged))
            .values(flag_reason="duplicate", flagged_by_id=user.id, flagged_at=utcnow())
        )
        s.execute(update(KeySlice).where(KeySlice.id.in_(flagged)).values(noisy=True))
        for i in rng.sample(ids, 2000):
            s.execute(
                update(KeySlice)
                .where(KeySlice.id == i)
                .values(prediction_count=3, unreviewed_predictions=2, missed_score=round(rng.random(), 3))
            )
        patient = s.execute(select(KeySlice.patient_index).limit(1)).scalar_one()
    # A live database has statistics for its review rows (autovacuum, or the import's own ANALYZE);
    # these rows were bulk-written a moment ago, so refresh them as the server would have by now.
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return user.id, patient


def time_service(url: str, user_id: int, patient: int, repeats: int) -> list[float]:
    """Milliseconds per list_key_slices call over the query mix."""
    from app.db.session import make_engine, make_session_factory
    from app.review.worklist import WorklistFilter, list_key_slices

    engine = make_engine(url)
    factory = make_session_factory(engine)
    times: list[float] = []
    mix = query_mix(patient)
    with factory() as s:  # warm the connection and the database cache
        for params, page in mix:
            list_key_slices(session=s, flt=WorklistFilter(**params), user_id=user_id, page=page)
    for _ in range(repeats):
        for params, page in mix:
            started = time.perf_counter()
            with factory() as s:
                list_key_slices(session=s, flt=WorklistFilter(**params), user_id=user_id, page=page)
            times.append((time.perf_counter() - started) * 1000)
    engine.dispose()
    return times


def time_pandas(url: str, user_id: int, patient: int, repeats: int) -> list[float]:
    """The same queries as a pandas full scan over the lesions (tables loaded once, not timed)."""
    import pandas as pd
    from sqlalchemy import text

    from app.db.session import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        ks = pd.read_sql(
            text(
                "SELECT id, file_name, patient_index, split, prediction_count, missed_score FROM key_slices"
            ),
            conn,
        )
        les = pd.read_sql(
            text("SELECT key_slice_id, lesion_type, size_mm, flag_reason, deleted FROM lesions"), conn
        )
        rev = pd.read_sql(
            text(f"SELECT key_slice_id, status FROM key_slice_reviews WHERE user_id = {user_id}"), conn
        )
    engine.dispose()
    names = {"test": 3, "val": 2, "train": 1}
    rank = {"unreviewed": 0, "in_progress": 1, "done": 2}
    times: list[float] = []
    for _ in range(repeats):
        for params, page in query_mix(patient):
            started = time.perf_counter()
            live = les[~les.deleted.astype(bool)]
            agg = live.groupby("key_slice_id").agg(
                lesion_count=("lesion_type", "size"),
                max_size_mm=("size_mm", "max"),
            )
            # Noisy: a lesion flagged by a reviewer or by the dataset (Possibly_noisy, reason "dataset").
            flagged = live[live.flag_reason.notna()].key_slice_id.unique()
            df = ks.merge(agg, left_on="id", right_index=True, how="left").merge(
                rev, left_on="id", right_on="key_slice_id", how="left"
            )
            df["status"] = df["status"].fillna("unreviewed")
            df["noisy"] = df["id"].isin(flagged)
            if "split" in params:
                df = df[df.split == names[params["split"]]]
            if "lesion_types" in params:
                hit = live[live.lesion_type.isin(params["lesion_types"])].key_slice_id.unique()
                df = df[df.id.isin(hit)]
            if "noisy" in params:
                df = df[df.noisy == params["noisy"]]
            if "status" in params:
                df = df[df.status == params["status"]]
            if "patient" in params:
                df = df[df.patient_index == params["patient"]]
            if "min_size_mm" in params:
                df = df[df.max_size_mm >= params["min_size_mm"]]
            if "max_size_mm" in params:
                df = df[df.max_size_mm <= params["max_size_mm"]]
            if "possible_missed" in params:
                df = df[df.missed_score.notna()]
            if "has_predictions" in params:
                df = df[df.prediction_count > 0]
            key = {"size": "max_size_mm", "patient": "patient_index", "missed_score": "missed_score"}.get(
                params.get("sort", "file_name"), params.get("sort", "file_name")
            )
            if key == "status":
                df = df.assign(status_rank=df.status.map(rank))
                key = "status_rank"
            df = df.sort_values([key, "file_name"], ascending=params.get("order", "asc") == "asc")
            counts = df.status.value_counts().to_dict()
            page_rows = df.iloc[(page - 1) * 50 : page * 50].to_dict("records")
            assert isinstance(counts, dict) and isinstance(page_rows, list)
            times.append((time.perf_counter() - started) * 1000)
    return times


def p95(values: list[float]) -> float:
    """95th percentile."""
    return statistics.quantiles(values, n=20)[18]


def main(argv: list[str]) -> int:
    """Entry point of `python -m bench.bench_worklist` and of `python -m bench`."""
    parser = argparse.ArgumentParser(prog="bench_worklist", description=__doc__)
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--repeats", type=int, default=20, help="passes over the 10-query mix")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/performance.md")
    args = parser.parse_args(argv)
    from app.db.session import make_engine
    from app.review.importer import import_dataset

    ok = True
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_worklist_") as tmpdir:
        tmp = Path(tmpdir)
        csv_path = make_csv(tmp / "data", rows=args.rows)
        kinds = ["sqlite"]
        available, why = postgres_available()
        if available:
            kinds.append("postgresql")
        else:
            print(f"PostgreSQL skipped: {why}")
            ok = False
        for kind in kinds:
            with scratch_database(kind, tmp) as url:
                engine = make_engine(url)
                import_dataset(engine=engine, data_dir=csv_path.parent)
                engine.dispose()
                user_id, patient = prepare(url, seed=1)
                ours = time_service(url, user_id, patient, args.repeats)
                base = time_pandas(url, user_id, patient, max(2, args.repeats // 4))
            ours_p95, base_p95 = p95(ours), p95(base)
            ok &= ours_p95 <= TARGET_P95_MS
            verdict = "OK" if ours_p95 <= TARGET_P95_MS else "SLOW"
            line = (
                f"work list on {kind}, {args.rows} lesions, 10 filter/sort/page sets x {args.repeats}: "
                f"p50 {statistics.median(ours):.1f} ms, p95 {ours_p95:.1f} ms "
                f"(target <= {TARGET_P95_MS:g} ms, {verdict}); "
                f"pandas full-scan baseline p95 {base_p95:.1f} ms: {base_p95 / ours_p95:.1f}x faster"
            )
            print(line, flush=True)
            lines.append(line)
    if not args.no_record:
        append_figures(HEADING, lines)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
