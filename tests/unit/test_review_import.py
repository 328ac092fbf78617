"""Import of DL_info.csv: idempotent, all-or-nothing with line numbers, stored slices, migration checks."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from app.cli import main
from app.db.models import Base, KeySlice, Lesion, OriginalLesion, Series
from app.db.session import (
    SchemaOutdatedError,
    assert_schema_current,
    make_engine,
    make_session_factory,
    upgrade_database,
)
from app.deeplesion.errors import CsvValidationError
from app.deeplesion.schema import LesionRecord
from app.review.importer import ImportSummary, import_dataset
from tests.api.review_data import STORED, build_review_dataset


def counts(url: str) -> tuple[int, int, int]:
    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        result = (
            s.execute(select(func.count(KeySlice.id))).scalar_one(),
            s.execute(select(func.count(OriginalLesion.id))).scalar_one(),
            s.execute(select(func.count(Lesion.id))).scalar_one(),
        )
    engine.dispose()
    return result


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    build_review_dataset(root)
    return root


def test_import_then_second_import_changes_nothing(data_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    engine = make_engine(url)
    records = build_review_dataset(data_dir)
    first = import_dataset(engine=engine, data_dir=data_dir)
    assert first.new_lesions == len(records)
    assert first.new_key_slices == len({r.file_name for r in records})
    after_first = counts(url)
    second = import_dataset(engine=engine, data_dir=data_dir)
    assert not second.changed_anything and second.new_key_slices == 0
    assert "0 new" in second.describe()
    assert counts(url) == after_first
    engine.dispose()


def test_stored_slices_are_recorded_and_refreshed_on_reimport(data_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    engine = make_engine(url)
    import_dataset(engine=engine, data_dir=data_dir)
    with make_session_factory(engine)() as s:
        stored = {f: list(sl) for f, sl in s.execute(select(Series.folder, Series.stored_slices))}
    assert stored["000001_01_01"] == STORED["000001_01_01"]
    assert stored["000001_02_01"] == []
    # A user unpacks one more slice: re-importing records it without touching anything else.
    shutil.copy(data_dir / "Images_png/000001_01_01/110.png", data_dir / "Images_png/000001_01_01/111.png")
    summary = import_dataset(engine=engine, data_dir=data_dir)
    assert summary.series_updated == 1 and summary.new_lesions == 0
    with make_session_factory(engine)() as s:
        slices = s.execute(select(Series.stored_slices).where(Series.folder == "000001_01_01")).scalar_one()
    assert slices == [*STORED["000001_01_01"], 111]
    engine.dispose()


def test_bad_csv_imports_nothing_and_names_every_line(data_dir: Path, tmp_path: Path) -> None:
    csv_path = data_dir / "DL_info.csv"
    lines = csv_path.read_text().splitlines()
    # Break line 3 (a lesion type) and line 5 (an age), leave the rest valid.
    lines[2] = lines[2].replace(",5,1,", ",banana,1,")
    cells = lines[4].rsplit(",", 2)
    lines[4] = f"{cells[0]},notanage,{cells[2]}"
    csv_path.write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    engine = make_engine(url)
    with pytest.raises(CsvValidationError) as err:
        import_dataset(engine=engine, data_dir=data_dir)
    joined = "\n".join(err.value.errors)
    assert "line 3" in joined and "line 5" in joined
    assert counts(url) == (0, 0, 0)
    engine.dispose()


def test_cli_import_of_bad_csv_exits_1_with_line_numbers(data_dir: Path, tmp_path: Path) -> None:
    csv_path = data_dir / "DL_info.csv"
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].replace(".png,", ".png,x", 1)
    csv_path.write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    result = CliRunner().invoke(main, ["import", str(data_dir), "--database-url", url, "--no-progress"])
    assert result.exit_code == 1
    assert "line 4" in result.output and "nothing was imported" in result.output
    assert counts(url) == (0, 0, 0)


def test_cli_import_twice_reports_zero_new(data_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    args = ["import", str(data_dir), "--database-url", url, "--no-progress"]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "0 new" in again.output


def test_unmigrated_database_is_refused_naming_the_command(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with pytest.raises(SchemaOutdatedError, match="lesion-review migrate"):
        assert_schema_current(engine)
    engine.dispose()


def test_outdated_revision_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade_database(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000old'"))
    with pytest.raises(SchemaOutdatedError, match="revision 0000old"):
        assert_schema_current(engine)
    engine.dispose()


def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade_database(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
    engine.dispose()


def test_user_add_cli_creates_a_user_who_can_sign_in(data_dir: Path, tmp_path: Path) -> None:
    from app.review.users import authenticate

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    result = CliRunner().invoke(
        main,
        ["user", "add", "zoe", "--role", "admin", "--password-stdin", "--database-url", url],
        input="a-long-password\n",
    )
    assert result.exit_code == 0, result.output
    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        assert authenticate(session=s, name="zoe", password="a-long-password") is not None
        assert authenticate(session=s, name="zoe", password="wrong-password") is None
    engine.dispose()


def test_cli_export_writes_csv_coco_and_nifti(data_dir: Path, tmp_path: Path) -> None:
    import json
    import zipfile

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    runner = CliRunner()
    assert (
        runner.invoke(main, ["import", str(data_dir), "--database-url", url, "--no-progress"]).exit_code == 0
    )
    base = ["export", str(data_dir), "--database-url", url]
    out_csv = tmp_path / "out.csv"
    result = runner.invoke(main, [*base, "--format", "csv", "--state", "original", "--out", str(out_csv)])
    assert result.exit_code == 0, result.output
    assert out_csv.read_bytes() == (data_dir / "DL_info.csv").read_bytes()
    out_coco = tmp_path / "coco.json"
    assert runner.invoke(main, [*base, "--format", "coco", "--out", str(out_coco)]).exit_code == 0
    assert len(json.loads(out_coco.read_text())["annotations"]) == len(build_review_dataset(data_dir))
    out_zip = tmp_path / "s.zip"
    args = [*base, "--format", "nifti", "--series", "000001_01_01", "--out", str(out_zip)]
    assert runner.invoke(main, args).exit_code == 0
    with zipfile.ZipFile(out_zip) as zf:
        assert [n.endswith(".nii.gz") for n in zf.namelist()] == [True]
    missing = runner.invoke(main, [*base, "--format", "nifti", "--out", str(out_zip)])
    assert missing.exit_code != 0 and "--series" in missing.output


def test_cli_export_streams_coco_and_gives_nifti_a_truth(data_dir: Path, tmp_path: Path) -> None:
    import zipfile

    from app.review import exports

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    runner = CliRunner()
    assert (
        runner.invoke(main, ["import", str(data_dir), "--database-url", url, "--no-progress"]).exit_code == 0
    )
    base = ["export", str(data_dir), "--database-url", url]
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            whole = exports.export_coco(session=session, truth="original")
            series_rows = exports.series_records(
                session=session, series_folder="000001_01_01", truth="original"
            )
    finally:
        engine.dispose()
    out_coco = tmp_path / "coco.json"
    result = runner.invoke(main, [*base, "--format", "coco", "--truth", "original", "--out", str(out_coco)])
    assert result.exit_code == 0, result.output
    assert out_coco.read_bytes() == whole and not list(tmp_path.glob(".*.partial"))
    out_zip = tmp_path / "s.zip"
    args = [
        *base,
        "--format",
        "nifti",
        "--series",
        "000001_01_01",
        "--truth",
        "original",
        "--out",
        str(out_zip),
    ]
    assert runner.invoke(main, args).exit_code == 0
    with zipfile.ZipFile(out_zip) as zf:
        table = "000001_01_01_DL_info_original.csv"
        assert zf.namelist()[-1] == table
        lines = zf.read(table).decode("utf-8").splitlines()
    original = (data_dir / "DL_info.csv").read_text().splitlines()
    assert lines == [original[0], *[ln for ln in original[1:] if ln.startswith("000001_01_01_")]]
    assert len(lines) == len(series_rows) + 1 > 2
    bad = runner.invoke(main, [*args[:-4], "--truth", "mine", "--out", str(out_zip)])
    assert bad.exit_code != 0 and "truth must be one of" in bad.output


def test_import_of_the_synthetic_dataset_records_its_stored_slices(tmp_path: Path) -> None:
    from app.deeplesion.csvio import read_dl_info
    from app.deeplesion.store import SliceStore
    from app.deeplesion.synth import generate_dataset

    root = tmp_path / "synth"
    generate_dataset(root, patients=2, seed=1, max_studies=1, progress=False)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    engine = make_engine(url)
    summary = import_dataset(engine=engine, data_dir=root)
    records = read_dl_info(root / "DL_info.csv")
    assert summary.new_lesions == len(records)
    store = SliceStore(root)
    with make_session_factory(engine)() as s:
        for folder, slices in s.execute(select(Series.folder, Series.stored_slices)):
            assert list(slices) == store.stored_slices(folder) and slices
    engine.dispose()


def rewrite_csv(data_dir: Path, change: Callable[[LesionRecord], LesionRecord]) -> None:
    """Apply `change` to every row of DL_info.csv (untouched cells keep their text)."""
    from app.deeplesion.csvio import read_dl_info, write_dl_info

    path = data_dir / "DL_info.csv"
    write_dl_info(path, [change(rec) for rec in read_dl_info(path)])


def table_rows(url: str, table: Any) -> list[tuple[Any, ...]]:
    """Every row of a table, in id order."""
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(table).order_by(table.c.id))]
    engine.dispose()
    return rows


def imported(data_dir: Path, tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    engine = make_engine(url)
    import_dataset(engine=engine, data_dir=data_dir)
    engine.dispose()
    return url


def reimport(data_dir: Path, url: str) -> ImportSummary:
    engine = make_engine(url)
    try:
        return import_dataset(engine=engine, data_dir=data_dir)
    finally:
        engine.dispose()


KEY = "000001_01_01_108.png"


def new_metadata(rec: LesionRecord) -> LesionRecord:
    """Key slice KEY gets new DICOM window, spacing, size, slice range, age and split; patient 1 a gender."""
    if rec.patient_index == 1:
        rec = replace(rec, patient_gender="M")
    if rec.file_name != KEY:
        return rec
    return replace(
        rec,
        dicom_window=(-1350.0, 150.0),
        spacing_mm=(0.8, 0.8, 2.5),
        image_size=(256, 256),
        slice_range=(104, 112),
        patient_age=62,
        train_val_test=2,
    )


def test_reimport_updates_changed_key_slice_metadata_and_says_so(data_dir: Path, tmp_path: Path) -> None:
    from app.db.models import Patient, Study

    url = imported(data_dir, tmp_path)
    lesions_before = table_rows(url, Lesion.__table__)
    rewrite_csv(data_dir, new_metadata)
    summary = reimport(data_dir, url)
    assert summary.changed_anything
    # KEY changed everything; the patient's two other key slices changed gender only.
    assert sorted(summary.updated_key_slices) == [
        "000001_01_01_108.png",
        "000001_01_01_112.png",
        "000001_02_01_020.png",
    ]
    assert "3 key slices updated" in summary.describe()
    assert "DICOM_windows" in summary.describe() and "Patient_gender" in summary.describe()
    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        ks = s.execute(select(KeySlice).where(KeySlice.file_name == KEY)).scalar_one()
        assert (ks.dicom_min, ks.dicom_max) == (-1350.0, 150.0)
        assert (ks.spacing_x, ks.spacing_y, ks.spacing_z) == (0.8, 0.8, 2.5)
        assert (ks.image_width, ks.image_height, ks.slice_first, ks.slice_last) == (256, 256, 104, 112)
        assert (ks.age, ks.split, ks.gender) == (62, 2, "M")
        assert s.get(Patient, 1).gender == "M"  # type: ignore[union-attr]
        study = s.execute(select(Study).where(Study.patient_id == 1, Study.study_index == 1)).scalar_one()
        assert study.age == 62
        # Sizes in mm follow the new pixel spacing (0.7 -> 0.8 mm); nothing else of a lesion changes.
        rows = s.execute(select(Lesion.id, Lesion.size_mm).where(Lesion.key_slice_id == ks.id)).all()
        sizes = {int(i): float(v) for i, v in rows}
        assert ks.max_size_mm == pytest.approx(max(sizes.values()))
    engine.dispose()
    size_at = [c.name for c in Lesion.__table__.columns].index("size_mm")
    after = table_rows(url, Lesion.__table__)
    for old, new in zip(lesions_before, after, strict=True):
        scale = 0.8 / 0.7 if new[0] in sizes else 1.0
        assert new[size_at] == pytest.approx(old[size_at] * scale)
        # Reviewers' state is never touched by an import.
        assert new[:size_at] + new[size_at + 1 :] == old[:size_at] + old[size_at + 1 :]
    # The stored originals follow the file: an export of the original state reads back as the new CSV.
    out = tmp_path / "original.csv"
    args = ["export", str(data_dir), "--database-url", url, "--state", "original", "--out", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert out.read_bytes() == (data_dir / "DL_info.csv").read_bytes()
    # Importing the same file again finds nothing to do.
    again = reimport(data_dir, url)
    assert not again.changed_anything and not again.updated_key_slices
    assert "0 new, nothing changed" in again.describe()


def test_reimport_keeps_an_original_whose_lesion_values_changed_and_names_its_line(
    data_dir: Path, tmp_path: Path
) -> None:
    url = imported(data_dir, tmp_path)
    originals_before = table_rows(url, OriginalLesion.__table__)
    lesions_before = table_rows(url, Lesion.__table__)

    def moved(rec: LesionRecord) -> LesionRecord:
        if rec.file_name != "000001_01_01_112.png":
            return rec
        shifted = tuple(v + 1.0 for v in rec.measurement_coordinates)
        return replace(rec, measurement_coordinates=shifted, coarse_lesion_type=3)  # type: ignore[arg-type]

    rewrite_csv(data_dir, moved)
    summary = reimport(data_dir, url)
    # 000001_01_01_112.png is line 4 of the file (header, then the two rows of 108).
    assert summary.kept_rows == ["line 4 (000001_01_01_112.png): Measurement_coordinates, Coarse_lesion_type"]
    assert "kept as imported" in summary.describe() and "line 4" in summary.describe()
    assert not summary.updated_key_slices
    assert table_rows(url, OriginalLesion.__table__) == originals_before
    assert table_rows(url, Lesion.__table__) == lesions_before
