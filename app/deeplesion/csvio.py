"""DL_info.csv reading (typed, fully validated) and writing (in the real file's format, round-tripping)."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from app.deeplesion.errors import CsvValidationError
from app.deeplesion.schema import COLUMNS, EXTRA_COLUMNS, LESION_TYPES, SPLITS, LesionRecord, slice_file_name
from app.deeplesion.store import FILE_NAME_RE

# Record attribute for each CSV column, in column order.
FIELDS: dict[str, str] = {
    "File_name": "file_name",
    "Patient_index": "patient_index",
    "Study_index": "study_index",
    "Series_ID": "series_id",
    "Key_slice_index": "key_slice_index",
    "Measurement_coordinates": "measurement_coordinates",
    "Bounding_boxes": "bounding_box",
    "Lesion_diameters_Pixel_": "lesion_diameters_px",
    "Normalized_lesion_location": "normalized_location",
    "Coarse_lesion_type": "coarse_lesion_type",
    "Possibly_noisy": "possibly_noisy",
    "Slice_range": "slice_range",
    "Spacing_mm_px_": "spacing_mm",
    "Image_size": "image_size",
    "DICOM_windows": "dicom_window",
    "Patient_gender": "patient_gender",
    "Patient_age": "patient_age",
    "Train_Val_Test": "train_val_test",
}
GENDERS = ("F", "M")
# Cells the real file leaves empty or writes as NaN when the age is unknown.
_MISSING = ("", "nan", "NaN", "NAN", "None", "NA")


class _CellError(ValueError):
    """A cell's text is invalid; the message says why, without line or column."""


def format_number(x: float) -> str:
    """A number as short as round-trips: integers without '.0' (5.0 -> '5'), floats by repr (0.976562)."""
    if isinstance(x, bool):
        return str(int(x))
    if isinstance(x, int):
        return str(x)
    f = float(x)
    if math.isfinite(f) and f == int(f) and abs(f) < 1e15:
        return str(int(f))
    return repr(f)


# Every integer must fit the database's 32-bit INTEGER columns, and no number in the file (pixels, mm, HU)
# comes near a million: larger values are typos or attacks, and would overflow sizes computed from them.
MAX_INT = 2**31 - 1
MAX_MAGNITUDE = 1e6


def _check_int(value: int, text: str) -> int:
    if not -MAX_INT - 1 <= value <= MAX_INT:
        raise _CellError(f"integer out of range (at most {MAX_INT}), got {text!r}")
    return value


def _parse_int(text: str) -> int:
    """An integer cell; refuses floats, blanks and integers beyond 32 bits."""
    t = text.strip()
    try:
        value = int(t)
    except ValueError:
        raise _CellError(f"expected an integer, got {text!r}") from None
    return _check_int(value, text)


def _parse_float(text: str) -> float:
    """A finite float of magnitude at most MAX_MAGNITUDE."""
    t = text.strip()
    try:
        value = float(t)
    except ValueError:
        raise _CellError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise _CellError(f"expected a finite number, got {text!r}")
    if abs(value) > MAX_MAGNITUDE:
        raise _CellError(f"number out of range (at most {MAX_MAGNITUDE:g} in magnitude), got {text!r}")
    return value


def _floats(count: int) -> Callable[[str], tuple[float, ...]]:
    """Parser of a cell holding exactly `count` comma-separated numbers."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            # Fast path for the common, valid cell; float() itself ignores the spaces after commas.
            values = tuple(map(float, text.split(",")))
        except ValueError:
            values = ()
        # A finite sum proves every value finite; an overflowing sum just takes the careful path below.
        if len(values) == count and math.isfinite(sum(values)) and max(map(abs, values)) <= MAX_MAGNITUDE:
            return values
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        if len(parts) != count:
            raise _CellError(f"expected {count} numbers, got {len(parts)}")
        return tuple(_parse_float(p) for p in parts)

    return parse


def _is_missing(text: str) -> bool:
    """True for a cell part that spells 'not known' (NaN, empty)."""
    return text.strip() in _MISSING


def _optional_floats(count: int) -> Callable[[str], tuple[float, ...] | None]:
    """Parser of `count` numbers, or None when every one is NaN (a box-only lesion's RECIST and diameters)."""
    numbers = _floats(count)

    def parse(text: str) -> tuple[float, ...] | None:
        parts = text.split(",")
        if len(parts) == count and _is_missing(parts[0]) and all(_is_missing(p) for p in parts):
            return None
        return numbers(text)

    return parse


def _location(text: str) -> tuple[float | None, ...]:
    """Normalized_lesion_location: 3 numbers, each NaN when not known (a reviewer-added lesion's x and y)."""
    parts = text.split(",")
    try:
        values = tuple(map(float, parts))  # fast path: three plain numbers
        if len(values) == 3 and math.isfinite(sum(values)) and max(map(abs, values)) <= MAX_MAGNITUDE:
            return values
    except ValueError:
        pass
    if len(parts) != 3:
        raise _CellError(f"expected 3 numbers, got {len(parts) if text.strip() else 0}")
    return tuple(None if _is_missing(p) else _parse_float(p) for p in parts)


def _ints(count: int) -> Callable[[str], tuple[int, ...]]:
    """Parser of a cell holding exactly `count` comma-separated integers."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            fast = tuple(map(int, text.split(",")))
        except ValueError:
            fast = ()
        if len(fast) == count and max(map(abs, fast)) <= MAX_INT:
            return fast
        parts = [p.strip() for p in text.split(",")] if text.strip() else []
        if len(parts) != count:
            raise _CellError(f"expected {count} integers, got {len(parts)}")
        return tuple(_parse_int(p) for p in parts)

    return parse


def _positive_int(text: str) -> int:
    """An integer >= 1 (patient, study, series and slice numbers start at 1)."""
    value = _parse_int(text)
    if value < 1:
        raise _CellError(f"must be at least 1, got {value}")
    return value


def _file_name(text: str) -> str:
    """A key slice name like 000001_01_01_109.png."""
    if FILE_NAME_RE.match(text) is None:
        raise _CellError(f"expected a name like 000001_01_01_109.png, got {text!r}")
    return text


def _lesion_type(text: str) -> int:
    """Coarse lesion type -1 or 1..8."""
    value = _parse_int(text)
    if value not in LESION_TYPES:
        raise _CellError(f"must be -1 or 1..8, got {value}")
    return value


def _noisy(text: str) -> int:
    """Possibly_noisy flag, 0 or 1."""
    value = _parse_int(text)
    if value not in (0, 1):
        raise _CellError(f"must be 0 or 1, got {value}")
    return value


def _slice_range(text: str) -> tuple[int, ...]:
    """First and last stored context slice, first <= last."""
    first, last = _ints(2)(text)
    if first < 1:
        raise _CellError(f"first slice must be at least 1, got {first}")
    if first > last:
        raise _CellError(f"first slice {first} is after last slice {last}")
    return (first, last)


def _spacing(text: str) -> tuple[float, ...]:
    """x, y pixel spacing and slice interval in mm, all positive."""
    values = _floats(3)(text)
    if any(v <= 0 for v in values):
        raise _CellError(f"spacing must be positive, got {text!r}")
    return values


def _image_size(text: str) -> tuple[int, ...]:
    """Width and height in pixels, positive."""
    values = _ints(2)(text)
    if any(v <= 0 for v in values):
        raise _CellError(f"image size must be positive, got {text!r}")
    return values


def _diameters(text: str) -> tuple[float, ...] | None:
    """Long and short diameter in px, not negative; None (NaN, NaN) when not measured."""
    values = _optional_floats(2)(text)
    if values is not None and any(v < 0 for v in values):
        raise _CellError(f"diameters cannot be negative, got {text!r}")
    return values


def _gender(text: str) -> str:
    """F or M (empty when unknown)."""
    if text not in (*GENDERS, ""):
        raise _CellError(f"must be F or M, got {text!r}")
    return text


def _age(text: str) -> int | None:
    """Age in years; empty or NaN means unknown."""
    t = text.strip()
    if t in _MISSING:
        return None
    try:
        value = float(t)
    except ValueError:
        raise _CellError(f"expected an age in years, got {text!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise _CellError(f"expected a whole number of years, got {text!r}")
    if not 0 <= value <= 130:
        raise _CellError(f"age must be 0..130, got {text!r}")
    return int(value)


def _split(text: str) -> int:
    """Train_Val_Test: 1, 2 or 3."""
    value = _parse_int(text)
    if value not in SPLITS:
        raise _CellError(f"must be 1 (train), 2 (val) or 3 (test), got {value}")
    return value


PARSERS: dict[str, Callable[[str], Any]] = {
    "File_name": _file_name,
    "Patient_index": _positive_int,
    "Study_index": _positive_int,
    "Series_ID": _positive_int,
    "Key_slice_index": _positive_int,
    "Measurement_coordinates": _optional_floats(8),
    "Bounding_boxes": _floats(4),
    "Lesion_diameters_Pixel_": _diameters,
    "Normalized_lesion_location": _location,
    "Coarse_lesion_type": _lesion_type,
    "Possibly_noisy": _noisy,
    "Slice_range": _slice_range,
    "Spacing_mm_px_": _spacing,
    "Image_size": _image_size,
    "DICOM_windows": _floats(2),
    "Patient_gender": _gender,
    "Patient_age": _age,
    "Train_Val_Test": _split,
}


def _check_header(header: list[str], source: str) -> tuple[list[int], dict[str, int]]:
    """Positions of the 18 columns and of any optional extra columns; CsvValidationError names bad ones."""
    expected = ", ".join(COLUMNS)
    names = [h.strip() for h in header]
    unknown = [h for h in names if h not in COLUMNS and h not in EXTRA_COLUMNS]
    missing = [c for c in COLUMNS if c not in names]
    duplicated = sorted({h for h in names if names.count(h) > 1})
    problems = []
    if unknown:
        problems.append(f"unknown column(s) {', '.join(repr(u) for u in unknown)}")
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if duplicated:
        problems.append(f"duplicated column(s) {', '.join(duplicated)}")
    if problems:
        message = f"{source} line 1, header: {'; '.join(problems)}; expected header: {expected}"
        raise CsvValidationError([message])
    return [names.index(c) for c in COLUMNS], {c: names.index(c) for c in EXTRA_COLUMNS if c in names}


def _cross_check(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules between columns of one row: (column, message) pairs."""
    problems: list[tuple[str, str]] = []
    index_cols = ("Patient_index", "Study_index", "Series_ID", "Key_slice_index")
    if "File_name" in values and all(c in values for c in index_cols):
        expected = slice_file_name(*(values[c] for c in index_cols))
        if values["File_name"] != expected:
            message = f"{values['File_name']!r} does not match the index columns ({expected})"
            problems.append(("File_name", message))
    if "Key_slice_index" in values and "Slice_range" in values:
        first, last = values["Slice_range"]
        key = values["Key_slice_index"]
        if not first <= key <= last:
            problems.append(("Slice_range", f"key slice {key} is outside {first}..{last}"))
    return problems


_PARSER_LIST = [PARSERS[c] for c in COLUMNS]
# _fast_record builds records positionally, so the dataclass must list its fields in column order.
assert [f.name for f in dataclasses.fields(LesionRecord)][: len(COLUMNS)] == [FIELDS[c] for c in COLUMNS]


def _fast_record(cells: list[str]) -> LesionRecord | None:
    """The record of a valid row, or None when any rule fails (the slow path then names the problems)."""
    try:
        values = [parse(text) for parse, text in zip(_PARSER_LIST, cells, strict=True)]
    except _CellError:
        return None
    file_name, patient, study, series, key = values[:5]
    first, last = values[11]
    if not first <= key <= last or file_name != slice_file_name(patient, study, series, key):
        return None
    return LesionRecord(*values, raw=dict(zip(COLUMNS, cells, strict=True)))  # type: ignore[misc]


def _rows_to_records(
    rows: Iterable[list[str]], reader_line: Callable[[], int], source: str
) -> list[LesionRecord]:
    """Parse csv rows (header first) into records, collecting every error."""
    iterator = iter(rows)
    try:
        header = next(iterator)
    except StopIteration:
        message = f"{source} line 1: empty file; expected header: {', '.join(COLUMNS)}"
        raise CsvValidationError([message]) from None
    order, extra_at = _check_header(header, source)
    canonical = order == list(range(len(COLUMNS)))
    errors: list[str] = []
    records: list[LesionRecord] = []
    ncols = len(header)
    for row in iterator:
        line = reader_line()
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line, e.g. a trailing newline
        if len(row) != ncols:
            errors.append(f"{source} line {line}: expected {ncols} cells, got {len(row)}")
            continue
        cells = row if canonical and not extra_at else [row[i] for i in order]
        extras = {c: row[i] for c, i in extra_at.items()} or None
        if not errors:
            record = _fast_record(cells)
            if record is not None:
                records.append(record if extras is None else dataclasses.replace(record, extras=extras))
                continue
        # Slow path: a row with a problem (or any row after one), parsed cell by cell to name every error.
        values: dict[str, Any] = {}
        row_ok = True
        for column, text in zip(COLUMNS, cells, strict=True):
            try:
                values[column] = PARSERS[column](text)
            except _CellError as exc:
                errors.append(f"{source} line {line}, {column}: {exc}")
                row_ok = False
        for column, message in _cross_check(values):
            errors.append(f"{source} line {line}, {column}: {message}")
            row_ok = False
        if row_ok and not errors:
            kwargs = {FIELDS[c]: values[c] for c in COLUMNS}
            records.append(LesionRecord(**kwargs, raw=dict(zip(COLUMNS, cells, strict=True)), extras=extras))
    if errors:
        raise CsvValidationError(errors)
    return records


def parse_dl_info_text(text: str, source: str = "DL_info.csv") -> list[LesionRecord]:
    """Parse DL_info.csv text (BOM, CRLF tolerated) into records; CsvValidationError lists every problem."""
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _rows_to_records(reader, lambda: reader.line_num, source)
    except csv.Error as exc:
        message = f"{source} line {max(reader.line_num, 1)}: unreadable CSV ({exc})"
        raise CsvValidationError([message]) from None


def read_dl_info(path: Path | str) -> list[LesionRecord]:
    """Read and validate a DL_info.csv file into typed records."""
    p = Path(path)
    return parse_dl_info_bytes(p.read_bytes(), source=p.name)


def parse_dl_info_bytes(data: bytes, *, source: str) -> list[LesionRecord]:
    """Validate the bytes of a DL_info.csv file (read from disk or object storage) into typed records."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CsvValidationError([f"{source} line {line}: not UTF-8 text ({exc.reason})"]) from None
    return parse_dl_info_text(text, source=source)


# Cells that hold several numbers, and how many: a None value there is written as that many NaNs.
_COUNTS = {"Measurement_coordinates": 8, "Lesion_diameters_Pixel_": 2, "Normalized_lesion_location": 3}
MISSING_TEXT = "NaN"


def _cell(column: str, value: Any) -> str:
    """The text of one cell in the real file's format."""
    if value is None:
        return ", ".join([MISSING_TEXT] * _COUNTS[column]) if column in _COUNTS else ""
    if isinstance(value, tuple):
        return ", ".join(MISSING_TEXT if v is None else format_number(v) for v in value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_number(value)
    return str(value)


def record_cells(record: LesionRecord) -> list[str]:
    """The 18 cell texts of a record; a raw cell is reused when it still parses to the record's value."""
    raw = record.raw or {}
    cells = []
    for column in COLUMNS:
        value = getattr(record, FIELDS[column])
        text = raw.get(column)
        if text is not None:
            try:
                if PARSERS[column](text) == value:
                    cells.append(text)
                    continue
            except _CellError:
                pass
        cells.append(_cell(column, value))
    return cells


def format_dl_info(records: Iterable[LesionRecord], extra_columns: bool = False) -> str:
    """DL_info.csv text: the header then one row per record, multi-value cells quoted and ', ' separated.

    With extra_columns the optional EXTRA_COLUMNS follow the 18, filled from each record's extras.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow((*COLUMNS, *EXTRA_COLUMNS) if extra_columns else COLUMNS)
    for record in records:
        cells = record_cells(record)
        if extra_columns:
            extras = record.extras or {}
            cells.extend(extras.get(c, "") for c in EXTRA_COLUMNS)
        writer.writerow(cells)
    return buf.getvalue()


def write_dl_info(path: Path | str, records: Iterable[LesionRecord]) -> None:
    """Write DL_info.csv atomically (temporary file, then rename)."""
    target = Path(path)
    text = format_dl_info(records)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
