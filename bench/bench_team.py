"""Team review at full size: 32,735 lesions' key slices with two reads each; next-for-me and the work list.

The baseline is the plain work list (list_key_slices, the query every page load runs) timed in the same run
on the same database, so the ratio says what the team tables cost, whatever the machine's load.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.review_bench_data import REAL_ROWS, append_figures, make_csv, postgres_available, scratch_database

TARGET_P95_MS = 50.0
READERS = 20
HEADING = "## Team review (bench/bench_team.py, issue 13)"


def p95(times: list[float]) -> float:
    """The 95th percentile in ms."""
    return statistics.quantiles(times, n=20)[-1]


def prepare(url: str, seed: int) -> tuple[int, list[int]]:
    """A double-read assignment of every key slice, both reads done on half of them."""
    from sqlalchemy import select, text, update

    from app.db.models import TeamRead
    from app.db.session import make_engine, make_session_factory
    from app.review.team import service
    from app.review.users import create_user
    from app.review.worklist import WorklistFilter

    engine = make_engine(url)
    rng = random.Random(seed)
    with make_session_factory(engine)() as s:
        admin = create_user(session=s, name="boss", password="bench-password", role="admin")
        readers = [
            create_user(session=s, name=f"r{i:02d}", password="bench-password") for i in range(READERS)
        ]
        s.commit()
        a = service.create_assignment(
            session=s,
            user=admin,
            name="bench",
            mode="double",
            flt=WorklistFilter(),
            readers=[r.name for r in readers],
        )
        ids = list(s.execute(select(TeamRead.key_slice_id).where(TeamRead.slot == 0)).scalars())
        done = sorted(rng.sample(ids, len(ids) // 2))
        marks = {"lesions": [], "added": []}
        for start in range(0, len(done), 2000):
            chunk = done[start : start + 2000]
            for slot in (0, 1):
                s.execute(
                    update(TeamRead)
                    .where(TeamRead.key_slice_id.in_(chunk), TeamRead.slot == slot)
                    .values(reader_id=readers[slot].id, status="done", marks=marks, baseline=marks)
                )
        s.commit()
    # A live database has been vacuumed and analysed by now (autovacuum): the counts read the index alone.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    engine.dispose()
    return a["id"], [r.id for r in readers]


def run_kind(kind: str, data_dir: Path, tmp: Path, repeats: int) -> dict[str, float]:
    """Baseline work list, team work list (assignments with progress, my queue) and next-for-me, in ms."""
    from sqlalchemy import text

    from app.db.session import make_engine, make_session_factory
    from app.review.importer import import_dataset
    from app.review.team import service
    from app.review.users import UserInfo
    from app.review.worklist import WorklistFilter, list_key_slices

    with scratch_database(kind, tmp) as url:
        engine = make_engine(url)
        import_dataset(engine=engine, data_dir=data_dir)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        factory = make_session_factory(engine)

        def timed(fn: object, n: int) -> list[float]:
            out = []
            for i in range(n):
                started = time.perf_counter()
                with factory() as s:
                    fn(s, i)  # type: ignore[operator]
                out.append((time.perf_counter() - started) * 1000)
            return out

        def worklist(s: object, i: int) -> None:
            flt = WorklistFilter(split=("train", "val", "test", None)[i % 4])
            list_key_slices(session=s, flt=flt, user_id=None, page=1 + i % 5)  # type: ignore[arg-type]

        timed(worklist, 5)
        baseline = p95(timed(worklist, repeats))  # before any team table holds a row
        assignment, reader_ids = prepare(url, seed=1)
        users = [UserInfo(id=i, name=f"r{n:02d}", role="reviewer") for n, i in enumerate(reader_ids)]

        def assignments(s: object, i: int) -> None:
            service.list_assignments(session=s, user=users[i % READERS])  # type: ignore[arg-type]

        def queue(s: object, i: int) -> None:
            service.my_queue(session=s, user=users[i % READERS])  # type: ignore[arg-type]

        for fn in (worklist, assignments, queue):
            timed(fn, 5)  # warm caches
        figures = {
            "baseline_p95": baseline,
            "worklist_p95": p95(timed(worklist, repeats)),
            "assignments_p95": p95(timed(assignments, repeats)),
            "queue_p95": p95(timed(queue, repeats)),
        }
        claims = []
        for i in range(repeats):
            with factory() as s:
                started = time.perf_counter()
                read = service.next_for_me(session=s, user=users[i % READERS], assignment_id=assignment)
                claims.append((time.perf_counter() - started) * 1000)
                assert read is not None
                service.finish_read(
                    session=s, user=users[i % READERS], read_id=read["id"], version=read["version"]
                )
        figures["next_p95"] = p95(claims)
        engine.dispose()
    return figures


def main(argv: list[str]) -> int:
    """Run on SQLite (and PostgreSQL when it answers); print, optionally record, and check the target."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--record", action="store_true", help="Append the figures to docs/performance.md.")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    kinds = ["sqlite"]
    ok, why = postgres_available()
    if ok and not args.no_postgres:
        kinds.append("postgresql")
    elif not args.no_postgres:
        print(f"PostgreSQL skipped: {why}")
    lines = []
    passed = True
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        make_csv(data_dir, rows=args.rows)
        for kind in kinds:
            f = run_kind(kind, data_dir, Path(tmp), args.repeats)
            worst = max(f["next_p95"], f["assignments_p95"], f["queue_p95"])
            worst = max(worst, f["worklist_p95"])
            line = (
                f"{kind}, {args.rows} lesions, 2 reads per key slice (half done), {READERS} readers: p95 ms "
                f"work list {f['worklist_p95']:.1f} (baseline without team rows {f['baseline_p95']:.1f}, "
                f"{f['worklist_p95'] / f['baseline_p95']:.2f}x), next-for-me {f['next_p95']:.1f} "
                f"({f['next_p95'] / f['baseline_p95']:.2f}x baseline), assignments+progress "
                f"{f['assignments_p95']:.1f}, my queue {f['queue_p95']:.1f}; target <= {TARGET_P95_MS:.0f}"
            )
            passed = passed and worst <= TARGET_P95_MS
            print(line)
            lines.append(line)
    if args.record:
        append_figures(HEADING, lines)
    print("PASS" if passed else "BELOW TARGET")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
