"""DL_info.csv reading, validation messages and round-trip writing."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.deeplesion.csvio import (
    format_dl_info,
    format_number,
    parse_dl_info_text,
    read_dl_info,
    write_dl_info,
)
from app.deeplesion.errors import CsvValidationError
from app.deeplesion.schema import COLUMNS, LesionRecord, slice_file_name

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SMALL = FIXTURES / "DL_info_small.csv"
HEADER = ",".join(COLUMNS)


def _errors(path_or_text: Path | str) -> list[str]:
    """The validation errors raised for a file or a text."""
    with pytest.raises(CsvValidationError) as info:
        if isinstance(path_or_text, Path):
            read_dl_info(path_or_text)
        else:
            parse_dl_info_text(path_or_text)
    return info.value.errors


def test_fixture_parses_the_real_files_quirks() -> None:
    records = read_dl_info(SMALL)
    assert len(records) == 5
    first = records[0]
    assert first.file_name == "000001_01_01_109.png"
    assert (first.patient_index, first.study_index, first.series_id, first.key_slice_index) == (1, 1, 1, 109)
    assert first.measurement_coordinates == (
        233.537,
        95.0204,
        234.929,
        107.941,
        240.972,
        102.363,
        228.193,
        101.037,
    )
    assert first.bounding_box == (223.193, 90.0204, 245.972, 112.941)
    assert first.lesion_diameters_px == (12.9959, 12.8466)
    assert first.spacing_mm == (0.781, 0.781, 5.0)
    assert first.slice_range == (103, 115)
    assert first.dicom_window == (-175.0, 275.0)
    assert (first.patient_gender, first.patient_age, first.train_val_test) == ("F", 62, 3)
    # Two lesions on one key slice, an empty age, a 0.976562 spacing.
    shared = [r for r in records if r.file_name == "000001_02_01_014.png"]
    assert len(shared) == 2
    assert all(r.patient_age is None and r.coarse_lesion_type == -1 for r in shared)
    assert shared[0].spacing_mm == (0.976562, 0.976562, 2.0)
    assert records[3].image_size == (768, 768)
    assert records[3].dicom_window == (-177.5, 307.5)
    assert records[4].image_size == (1024, 1024)
    assert records[4].possibly_noisy == 1


def test_untouched_file_is_rewritten_byte_for_byte() -> None:
    text = SMALL.read_text(encoding="utf-8")
    assert format_dl_info(read_dl_info(SMALL)) == text


def test_cells_in_a_non_canonical_spelling_are_written_back_verbatim() -> None:
    lines = SMALL.read_text(encoding="utf-8").splitlines()
    odd = (
        lines[1]
        .replace('"0.781, 0.781, 5"', '"0.7810, 0.781, 5.0"')
        .replace(",F,62,", ",F,NaN,")
        .replace('"-175, 275"', '"-175.0,275"')
    )
    text = "\n".join([lines[0], odd]) + "\n"
    (record,) = parse_dl_info_text(text)
    assert record.spacing_mm == (0.781, 0.781, 5.0)
    assert record.patient_age is None
    assert format_dl_info([record]) == text


def test_bom_and_crlf_give_the_same_records() -> None:
    text = SMALL.read_text(encoding="utf-8")
    crlf = "\ufeff" + text.replace("\n", "\r\n")
    assert parse_dl_info_text(crlf) == parse_dl_info_text(text)


def test_bom_file_on_disk_is_read(tmp_path: Path) -> None:
    path = tmp_path / "DL_info.csv"
    path.write_bytes(b"\xef\xbb\xbf" + SMALL.read_bytes().replace(b"\n", b"\r\n"))
    assert read_dl_info(path) == read_dl_info(SMALL)


def test_bad_rows_report_every_error_with_file_line_and_column() -> None:
    assert _errors(FIXTURES / "DL_info_bad_rows.csv") == [
        "DL_info_bad_rows.csv line 3, Bounding_boxes: expected 4 numbers, got 3",
        "DL_info_bad_rows.csv line 4, Coarse_lesion_type: must be -1 or 1..8, got 9",
        "DL_info_bad_rows.csv line 4, Possibly_noisy: must be 0 or 1, got 2",
        "DL_info_bad_rows.csv line 4, Spacing_mm_px_: spacing must be positive, got '0.820312, 0.820312, 0'",
        "DL_info_bad_rows.csv line 4, Patient_gender: must be F or M, got 'X'",
        "DL_info_bad_rows.csv line 4, Train_Val_Test: must be 1 (train), 2 (val) or 3 (test), got 4",
        "DL_info_bad_rows.csv line 5, Slice_range: first slice 174 is after last slice 150",
        "DL_info_bad_rows.csv line 5, Image_size: image size must be positive, got '768, 0'",
        "DL_info_bad_rows.csv line 5, Patient_age: expected an age in years, got 'abc'",
        "DL_info_bad_rows.csv line 5, File_name: '000002_01_01_162.png' does not match the index columns "
        "(000002_01_01_163.png)",
        "DL_info_bad_rows.csv line 6: expected 18 cells, got 17",
    ]


def test_default_source_name_matches_the_issue_example() -> None:
    good = SMALL.read_text(encoding="utf-8").splitlines()
    broken = good[1].replace('"223.193, 90.0204, 245.972, 112.941"', '"223.193, 90.0204, 245.972"')
    # 1202 valid rows first, so the broken one is file line 1203 (the header is line 1).
    text = "\n".join([good[0], *[good[1]] * 1201, broken]) + "\n"
    assert _errors(text) == ["DL_info.csv line 1203, Bounding_boxes: expected 4 numbers, got 3"]


def test_unknown_and_missing_headers_are_rejected_with_the_expected_list() -> None:
    (message,) = _errors(FIXTURES / "DL_info_bad_header.csv")
    assert message.startswith(
        "DL_info_bad_header.csv line 1, header: unknown column(s) 'Filename'; "
        "missing column(s) File_name, Train_Val_Test; expected header: File_name, Patient_index,"
    )
    assert message.endswith("Patient_gender, Patient_age, Train_Val_Test")


def test_file_that_is_not_utf8_is_a_validation_error(tmp_path: Path) -> None:
    path = tmp_path / "DL_info.csv"
    path.write_bytes(SMALL.read_bytes().replace(b",F,62,", b",\xff,62,"))
    assert _errors(path) == ["DL_info.csv line 2: not UTF-8 text (invalid start byte)"]


def test_oversized_cell_is_a_validation_error() -> None:
    text = SMALL.read_text(encoding="utf-8").replace(",F,62,", ',"' + "x" * 200_000 + '",62,')
    (message,) = _errors(text)
    assert message.startswith("DL_info.csv line 2: unreadable CSV (field larger than field limit")


def test_duplicated_header_is_rejected() -> None:
    (message,) = _errors(HEADER + ",File_name\n")
    assert "duplicated column(s) File_name" in message


def test_empty_file_names_the_expected_header() -> None:
    (message,) = _errors("")
    assert message.startswith("DL_info.csv line 1: empty file; expected header: File_name, ")


def test_reordered_columns_are_read_by_name_and_written_in_canonical_order() -> None:
    lines = SMALL.read_text(encoding="utf-8").splitlines()
    rows = list(csv.reader(io.StringIO("\n".join(lines[:3]))))
    swapped = [[r[1], r[0], *r[2:]] for r in rows]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(swapped)
    records = parse_dl_info_text(buf.getvalue())
    assert records == read_dl_info(SMALL)[:2]
    assert format_dl_info(records).splitlines()[0] == HEADER


@pytest.mark.parametrize(
    ("cell", "value", "message"),
    [
        ("Patient_age", "NaN", None),
        ("Patient_age", "62.0", None),
        ("Patient_age", "62.5", "Patient_age: expected a whole number of years, got '62.5'"),
        ("Patient_age", "-3", "Patient_age: age must be 0..130, got '-3'"),
        ("Key_slice_index", "0", "Key_slice_index: must be at least 1, got 0"),
        ("Key_slice_index", "1.5", "Key_slice_index: expected an integer, got '1.5'"),
        (
            "Measurement_coordinates",
            "1, 2, 3, nan, 5, 6, 7, 8",
            "Measurement_coordinates: expected a finite number, got 'nan'",
        ),
        (
            "Measurement_coordinates",
            "1, 2, 3, x, 5, 6, 7, 8",
            "Measurement_coordinates: expected a number, got 'x'",
        ),
        (
            "Lesion_diameters_Pixel_",
            "-1, 2",
            "Lesion_diameters_Pixel_: diameters cannot be negative, got '-1, 2'",
        ),
        ("Slice_range", "100, 105", "Slice_range: key slice 109 is outside 100..105"),
        ("Image_size", "512", "Image_size: expected 2 integers, got 1"),
        ("Coarse_lesion_type", "0", "Coarse_lesion_type: must be -1 or 1..8, got 0"),
        (
            "File_name",
            "../000001_01_01_109.png",
            "File_name: expected a name like 000001_01_01_109.png, got '../000001_01_01_109.png'",
        ),
        ("DICOM_windows", "", "DICOM_windows: expected 2 numbers, got 0"),
        # A box-only lesion (an accepted prediction in a corrected export) has no measurement: all NaN.
        ("Measurement_coordinates", "NaN, NaN, NaN, NaN, NaN, NaN, NaN, NaN", None),
        ("Lesion_diameters_Pixel_", "NaN, NaN", None),
        ("Normalized_lesion_location", "NaN, NaN, 0.5", None),
        # Numbers the database cannot hold, or that overflow sizes computed from them, are refused clearly.
        (
            "Image_size",
            "10000000000000000000000, 512",
            "Image_size: integer out of range (at most 2147483647), got '10000000000000000000000'",
        ),
        (
            "Slice_range",
            "100, 3000000000",
            "Slice_range: integer out of range (at most 2147483647), got '3000000000'",
        ),
        (
            "Lesion_diameters_Pixel_",
            "1e308, 2",
            "Lesion_diameters_Pixel_: number out of range (at most 1e+06 in magnitude), got '1e308'",
        ),
        (
            "Key_slice_index",
            "99999999999",
            "Key_slice_index: integer out of range (at most 2147483647), got '99999999999'",
        ),
    ],
)
def test_single_cell_rules(cell: str, value: str, message: str | None) -> None:
    rows = list(csv.reader(io.StringIO(SMALL.read_text(encoding="utf-8"))))
    rows[1][COLUMNS.index(cell)] = value
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows[:2])
    if message is None:
        (record,) = parse_dl_info_text(buf.getvalue())
        assert record.patient_age in (None, 62)
    else:
        assert _errors(buf.getvalue()) == [f"DL_info.csv line 2, {message}"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5.0, "5"),
        (5, "5"),
        (0.781, "0.781"),
        (0.976562, "0.976562"),
        (-177.5, "-177.5"),
        (-1500.0, "-1500"),
        (0.0, "0"),
        (1e-07, "1e-07"),
        (12.9959, "12.9959"),
    ],
)
def test_format_number_is_short_and_keeps_integers_without_a_decimal_point(value: float, text: str) -> None:
    assert format_number(value) == text


def test_edited_field_is_written_in_the_real_format_and_other_cells_keep_their_text() -> None:
    records = read_dl_info(SMALL)
    edited = dataclasses.replace(records[0], bounding_box=(1.0, 2.5, 30.0, 40.25), patient_age=63)
    line = format_dl_info([edited]).splitlines()[1]
    original = SMALL.read_text(encoding="utf-8").splitlines()[1]
    assert line == original.replace('"223.193, 90.0204, 245.972, 112.941"', '"1, 2.5, 30, 40.25"').replace(
        ",F,62,", ",F,63,"
    )


def test_raw_text_that_no_longer_matches_is_not_reused() -> None:
    record = read_dl_info(SMALL)[1]
    assert record.raw is not None
    changed = dataclasses.replace(record, spacing_mm=(0.5, 0.5, 1.0))
    assert '"0.5, 0.5, 1"' in format_dl_info([changed])


def test_write_dl_info_is_atomic_and_reads_back(tmp_path: Path) -> None:
    records = read_dl_info(SMALL)
    target = tmp_path / "out" / "DL_info.csv"
    write_dl_info(target, records)
    assert read_dl_info(target) == records
    assert target.read_bytes() == SMALL.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["DL_info.csv"]


def test_full_size_file_parses_quickly() -> None:
    lines = SMALL.read_text(encoding="utf-8").splitlines()
    text = "\n".join([lines[0], *(lines[1 + i % 5] for i in range(32735))]) + "\n"
    # CPU time of this process: other processes on a shared machine (or other test workers) do not count.
    start = time.process_time()
    records = parse_dl_info_text(text)
    elapsed = time.process_time() - start
    assert len(records) == 32735
    # About 0.5 s of CPU; generous for slower machines.
    assert elapsed < 5.0, f"parsing 32,735 rows took {elapsed:.2f} s of CPU"


# -- property tests ---------------------------------------------------------------------------------

_coord = st.floats(min_value=-1e5, max_value=1e5, allow_nan=False, allow_infinity=False)
_positive = st.floats(min_value=1e-4, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def lesion_records(draw: st.DrawFn) -> LesionRecord:
    """Any record the validator accepts."""
    patient = draw(st.integers(1, 999999))
    study = draw(st.integers(1, 99))
    series = draw(st.integers(1, 99))
    key = draw(st.integers(1, 9999))
    first = draw(st.integers(1, key))
    last = draw(st.integers(key, 9999))
    return LesionRecord(
        file_name=slice_file_name(patient, study, series, key),
        patient_index=patient,
        study_index=study,
        series_id=series,
        key_slice_index=key,
        # None: a box-only lesion (NaN in the file); likewise an unknown location component.
        measurement_coordinates=draw(st.none() | st.tuples(*[_coord] * 8)),
        bounding_box=tuple(draw(st.lists(_coord, min_size=4, max_size=4))),  # type: ignore[arg-type]
        lesion_diameters_px=draw(st.none() | st.tuples(_positive, _positive)),
        normalized_location=(draw(st.none() | _coord), draw(st.none() | _coord), draw(_coord)),
        coarse_lesion_type=draw(st.sampled_from([-1, 1, 2, 3, 4, 5, 6, 7, 8])),
        possibly_noisy=draw(st.sampled_from([0, 1])),
        slice_range=(first, last),
        spacing_mm=(draw(_positive), draw(_positive), draw(_positive)),
        image_size=(draw(st.integers(1, 4096)), draw(st.integers(1, 4096))),
        dicom_window=(draw(_coord), draw(_coord)),
        patient_gender=draw(st.sampled_from(["F", "M"])),
        patient_age=draw(st.none() | st.integers(0, 130)),
        train_val_test=draw(st.sampled_from([1, 2, 3])),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lesion_records(), min_size=0, max_size=5))
def test_write_then_read_gives_equal_records(records: list[LesionRecord]) -> None:
    text = format_dl_info(records)
    parsed = parse_dl_info_text(text)
    assert parsed == records
    # Text written by format_dl_info survives a further read -> write unchanged.
    assert format_dl_info(parsed) == text


def test_generated_synthetic_dataset_reads_back_clean_and_obeys_the_rules(tmp_path: Path) -> None:
    from app.deeplesion.geometry import box_from_recist, recist_diameters, validate_box, validate_recist
    from app.deeplesion.store import SliceStore
    from app.deeplesion.synth import generate_dataset

    generate_dataset(tmp_path, patients=2, seed=1, max_studies=1, progress=False)
    path = tmp_path / "DL_info.csv"
    records = read_dl_info(path)
    assert records
    assert format_dl_info(records) == path.read_text(encoding="utf-8")
    store = SliceStore(tmp_path)
    for r in records:
        validate_recist(r.measurement_coordinates, r.image_size)
        validate_box(r.bounding_box, r.image_size)
        assert box_from_recist(r.measurement_coordinates) == pytest.approx(r.bounding_box, abs=0.01)
        assert recist_diameters(r.measurement_coordinates) == pytest.approx(r.lesion_diameters_px, abs=0.01)
        assert store.exists(r.file_name)
        assert store.read_hu(r.file_name).shape == (r.image_size[1], r.image_size[0])


_cell_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30
) | st.sampled_from(
    ["NaN", "nan", "1e308", "-0", "10000000000000000000000", "3000000000", "1, 2", "NaN, NaN", "inf", ""]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(column=st.sampled_from(COLUMNS), text=_cell_text)
def test_any_cell_text_parses_or_is_a_validation_error_never_a_crash(column: str, text: str) -> None:
    rows = list(csv.reader(io.StringIO(SMALL.read_text(encoding="utf-8"))))
    rows[1][COLUMNS.index(column)] = text
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows[:2])
    try:
        records = parse_dl_info_text(buf.getvalue())
    except CsvValidationError as exc:
        assert exc.errors and all(e.startswith("DL_info.csv line") for e in exc.errors)
        return
    # What parses must also write and read back to the same record (the importer stores exactly this).
    assert parse_dl_info_text(format_dl_info(records)) == records
