"""Import of 32,735 DL_info rows on SQLite and PostgreSQL vs a naive row-by-row ORM import, same run."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.review_bench_data import (
    REAL_ROWS,
    append_figures,
    make_csv,
    postgres_available,
    scratch_database,
)

TARGET_SECONDS = 10.0
HEADING = "## Import and work list (bench/bench_import.py, bench/bench_worklist.py, H3)"


def naive_import(url: str, csv_path: Path, rows: int) -> float:
    """Seconds to import the first `rows` rows the obvious way: one ORM object and one flush per row."""
    from sqlalchemy import select

    from app.db.models import KeySlice, Lesion, OriginalLesion, Patient, Series, Study
    from app.db.session import make_engine, make_session_factory
    from app.deeplesion.csvio import read_dl_info
    from app.review.importer import pack_raw
    from app.review.vocabulary import DATASET_FLAG_REASON, ORIGIN_CSV

    records = read_dl_info(csv_path)[:rows]
    engine = make_engine(url)
    started = time.perf_counter()
    with make_session_factory(engine)() as s, s.begin():
        for n, r in enumerate(records, start=2):
            if s.get(Patient, r.patient_index) is None:
                s.add(Patient(id=r.patient_index, gender=r.patient_gender))
                s.flush()
            study = s.execute(
                select(Study).where(Study.patient_id == r.patient_index, Study.study_index == r.study_index)
            ).scalar_one_or_none()
            if study is None:
                study = Study(patient_id=r.patient_index, study_index=r.study_index, age=r.patient_age)
                s.add(study)
                s.flush()
            series = s.execute(select(Series).where(Series.folder == r.series_folder)).scalar_one_or_none()
            if series is None:
                series = Series(
                    study_id=study.id, series_index=r.series_id, folder=r.series_folder, stored_slices=[]
                )
                s.add(series)
                s.flush()
            ks = s.execute(select(KeySlice).where(KeySlice.file_name == r.file_name)).scalar_one_or_none()
            if ks is None:
                ks = KeySlice(
                    file_name=r.file_name, series_id=series.id, patient_index=r.patient_index,
                    study_index=r.study_index, series_index=r.series_id, key_slice_index=r.key_slice_index,
                    split=r.train_val_test, spacing_x=r.spacing_mm[0], spacing_y=r.spacing_mm[1],
                    spacing_z=r.spacing_mm[2], image_width=r.image_size[0], image_height=r.image_size[1],
                    dicom_min=r.dicom_window[0], dicom_max=r.dicom_window[1], slice_first=r.slice_range[0],
                    slice_last=r.slice_range[1], gender=r.patient_gender, age=r.patient_age,
                )  # fmt: skip
                s.add(ks)
                s.flush()
            recist = r.measurement_coordinates
            diameters = r.lesion_diameters_px
            orig = OriginalLesion(
                key_slice_id=ks.id, row_number=n,
                measurement_coordinates=None if recist is None else list(recist),
                bounding_box=list(r.bounding_box),
                lesion_diameters_px=None if diameters is None else list(diameters),
                normalized_location=list(r.normalized_location),
                coarse_lesion_type=r.coarse_lesion_type,
                possibly_noisy=r.possibly_noisy, slice_range=list(r.slice_range),
                spacing_mm=list(r.spacing_mm), image_size=list(r.image_size),
                dicom_window=list(r.dicom_window),
                patient_gender=r.patient_gender, patient_age=r.patient_age, train_val_test=r.train_val_test,
                raw=pack_raw(r.raw),
            )  # fmt: skip
            s.add(orig)
            s.flush()
            s.add(
                Lesion(
                    key_slice_id=ks.id,
                    original_id=orig.id,
                    origin=ORIGIN_CSV,
                    # The app's 0-based frame, as the real importer stores it.
                    recist=None if r.recist_px is None else list(r.recist_px),
                    box=list(r.box_px),
                    lesion_type=r.coarse_lesion_type,
                    slice_index=r.key_slice_index,
                    size_mm=r.long_axis_mm,
                    flag_reason=DATASET_FLAG_REASON if r.possibly_noisy else None,
                    deleted=False,
                )  # fmt: skip
            )
            s.flush()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def bench_backend(kind: str, csv_path: Path, tmp: Path, naive_rows: int) -> dict[str, float]:
    """Time the real import, the idempotent re-run and the naive baseline on one backend."""
    from app.db.session import make_engine
    from app.review.importer import import_dataset

    with scratch_database(kind, tmp) as url:
        engine = make_engine(url)
        started = time.perf_counter()
        first = import_dataset(engine=engine, data_dir=csv_path.parent)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        second = import_dataset(engine=engine, data_dir=csv_path.parent)
        rerun = time.perf_counter() - started
        engine.dispose()
        assert first.new_lesions == first.rows and not second.changed_anything
    with scratch_database(kind, tmp) as url:
        naive = naive_import(url, csv_path, naive_rows) * (first.rows / naive_rows)
    return {"rows": first.rows, "seconds": seconds, "rerun": rerun, "naive": naive}


def main(argv: list[str]) -> int:
    """Entry point of `python -m bench.bench_import` and of `python -m bench`."""
    parser = argparse.ArgumentParser(prog="bench_import", description=__doc__)
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument(
        "--naive-rows", type=int, default=1000, help="rows imported naively, then extrapolated"
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/performance.md")
    args = parser.parse_args(argv)
    ok = True
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_import_") as tmpdir:
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
            r = bench_backend(kind, csv_path, tmp, min(args.naive_rows, args.rows))
            verdict = "OK" if r["seconds"] <= TARGET_SECONDS else "SLOW"
            ok &= r["seconds"] <= TARGET_SECONDS
            line = (
                f"import {int(r['rows'])} rows on {kind}: {r['seconds']:.2f} s "
                f"(target <= {TARGET_SECONDS:g} s, {verdict}); re-run (0 new) {r['rerun']:.2f} s; "
                "naive row-by-row ORM baseline "
                f"{r['naive']:.1f} s (extrapolated from {min(args.naive_rows, args.rows)} rows): "
                f"{r['naive'] / r['seconds']:.1f}x faster"
            )
            print(line, flush=True)
            lines.append(line)
    if not args.no_record:
        append_figures(HEADING, lines)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
