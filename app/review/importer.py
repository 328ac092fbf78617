"""Import DL_info.csv and the list of stored slices into the database: one transaction, idempotent, bulk."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, Engine, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import KeySlice, Lesion, OriginalLesion, Patient, Series, Study
from app.deeplesion.objectstore import DataDir, display_name, is_url, local_path, read_data_file
from app.deeplesion.schema import COLUMNS, LesionRecord
from app.review.summary import type_mask
from app.review.vocabulary import ALL_FLAG_REASONS, DATASET_FLAG_REASON, ORIGIN_CSV

log = logging.getLogger(__name__)

# Rows per executemany call: large enough to amortise round trips, small enough for SQLite's
# variable limit when SQLAlchemy batches into multi-row VALUES.
CHUNK = 2000


@dataclass
class ImportSummary:
    """What one import run did."""

    rows: int = 0
    new_key_slices: int = 0
    new_lesions: int = 0
    skipped_key_slices: int = 0
    # Key slices whose CSV rows differ in their lesion values from the imported originals (kept).
    changed_key_slices: list[str] = field(default_factory=list)
    # Key slices whose metadata (window, spacing, size, slice range, patient, split) was brought up to date.
    updated_key_slices: list[str] = field(default_factory=list)
    # DL_info.csv column -> how many key slices it changed on.
    updated_fields: dict[str, int] = field(default_factory=dict)
    # "line N (file): columns" of every row whose lesion values were kept as imported.
    kept_rows: list[str] = field(default_factory=list)
    series_updated: int = 0
    seconds: float = 0.0

    @property
    def changed_anything(self) -> bool:
        """True when the run wrote to the database."""
        return bool(self.new_key_slices or self.new_lesions or self.series_updated or self.updated_key_slices)

    def describe(self) -> str:
        """One line for the console."""
        text = (
            f"{self.rows} rows read: {self.new_key_slices} new key slices, {self.new_lesions} new lesions, "
            f"{self.skipped_key_slices} already imported"
        )
        # Only what happened: a first import should not read as if something had gone missing.
        if self.updated_key_slices:
            text += f", {len(self.updated_key_slices)} key slices updated"
            if self.updated_fields:
                text += " (" + ", ".join(f"{c} on {n}" for c, n in sorted(self.updated_fields.items())) + ")"
        if self.series_updated:
            text += f", {self.series_updated} series with new stored slices"
        text += f" ({self.seconds:.1f} s)"
        if not self.changed_anything:
            text += "; 0 new, nothing changed"
        if self.kept_rows:
            more = f"; and {len(self.kept_rows) - 3} more" if len(self.kept_rows) > 3 else ""
            text += (
                f"; {len(self.kept_rows)} rows differ in their lesion values from the imported originals and "
                f"were kept as imported (reviews refer to them): {'; '.join(self.kept_rows[:3])}{more}"
            )
        return text


def _nums(values: Sequence[float | None] | None) -> str:
    """JSON text of a list of numbers; repr of a finite float is valid JSON, and cheaper than json.dumps."""
    if values is None:
        return "null"
    return "[" + ", ".join("null" if v is None else repr(v) for v in values) + "]"


def _flag(rec: LesionRecord) -> tuple[str | None, str | None]:
    """The noisy flag a row carries: Possibly_noisy,, reason and note from an export's extras."""
    if not rec.possibly_noisy:
        return None, None
    extras = rec.extras or {}
    reason = extras.get("Flag_reason", "")
    if reason not in ALL_FLAG_REASONS:
        return DATASET_FLAG_REASON, None
    return reason, extras.get("Flag_note") or None


RAW_SEPARATOR = "\x1f"


def pack_raw(raw: dict[str, str] | None) -> str | None:
    """The 18 raw cell texts as one string (unit-separator joined): a tenth of the cost of a JSON object."""
    if not raw:
        return None
    return RAW_SEPARATOR.join(raw.get(c, "") for c in COLUMNS)


def unpack_raw(packed: Any) -> dict[str, str] | None:
    """Inverse of pack_raw; also accepts a dict (rows written by other tools)."""
    if not packed:
        return None
    if isinstance(packed, dict):
        return {str(k): str(v) for k, v in packed.items()}
    cells = str(packed).split(RAW_SEPARATOR)
    return dict(zip(COLUMNS, cells, strict=False)) if len(cells) == len(COLUMNS) else None


def _original_row(rec: LesionRecord, key_slice_id: int, row_number: int) -> dict[str, Any]:
    # JSON columns get ready-made JSON text here (see _plain_rows): this is the hot loop of the import.
    return {
        "id": 0,
        "key_slice_id": key_slice_id,
        "row_number": row_number,
        "measurement_coordinates": _nums(rec.measurement_coordinates),
        "bounding_box": _nums(rec.bounding_box),
        "lesion_diameters_px": _nums(rec.lesion_diameters_px),
        "normalized_location": _nums(rec.normalized_location),
        "coarse_lesion_type": rec.coarse_lesion_type,
        "possibly_noisy": rec.possibly_noisy,
        "slice_range": _nums(rec.slice_range),
        "spacing_mm": _nums(rec.spacing_mm),
        "image_size": _nums(rec.image_size),
        "dicom_window": _nums(rec.dicom_window),
        "patient_gender": rec.patient_gender,
        "patient_age": rec.patient_age,
        "train_val_test": rec.train_val_test,
        "raw": json.dumps(pack_raw(rec.raw)),
    }


def _key_slice_metadata(rec: LesionRecord) -> dict[str, Any]:
    """The KeySlice columns that come from DL_info.csv fields a key slice's rows share (its first row)."""
    return {
        "split": rec.train_val_test,
        "spacing_x": rec.spacing_mm[0],
        "spacing_y": rec.spacing_mm[1],
        "spacing_z": rec.spacing_mm[2],
        "image_width": rec.image_size[0],
        "image_height": rec.image_size[1],
        "dicom_min": rec.dicom_window[0],
        "dicom_max": rec.dicom_window[1],
        "slice_first": rec.slice_range[0],
        "slice_last": rec.slice_range[1],
        "gender": rec.patient_gender,
        "age": rec.patient_age,
    }


# original_lesions columns (with their DL_info.csv names) that describe the key slice, its series or its
# patient: a re-import brings them up to date.
METADATA_COLUMNS = {
    "slice_range": "Slice_range",
    "spacing_mm": "Spacing_mm_px_",
    "image_size": "Image_size",
    "dicom_window": "DICOM_windows",
    "patient_gender": "Patient_gender",
    "patient_age": "Patient_age",
    "train_val_test": "Train_Val_Test",
}
# The row's own lesion values: reviews were made against them, so a re-import keeps the imported values and
# names the rows that differ (a fresh database takes the new file).
LESION_COLUMNS = {
    "measurement_coordinates": "Measurement_coordinates",
    "bounding_box": "Bounding_boxes",
    "lesion_diameters_px": "Lesion_diameters_Pixel_",
    "normalized_location": "Normalized_lesion_location",
    "coarse_lesion_type": "Coarse_lesion_type",
    "possibly_noisy": "Possibly_noisy",
}


def _as_stored(row: dict[str, Any]) -> dict[str, Any]:
    """An _original_row dict with its JSON text decoded, as the database hands the row back."""
    columns = OriginalLesion.__table__.c
    return {
        k: json.loads(v) if isinstance(columns[k].type, JSON) else v for k, v in row.items() if k in columns
    }


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_cell(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    return str(value)


def _reserve_ids(session: Session, model: type[Any], count: int) -> list[int]:
    """`count` new primary keys: from the sequence on PostgreSQL, after max(id) on SQLite (single writer)."""
    table = model.__table__.name
    if session.get_bind().dialect.name == "postgresql":
        return list(
            session.execute(
                text(f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, :n)"),
                {"n": count},
            ).scalars()
        )
    start = int(session.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar_one())
    return list(range(start + 1, start + 1 + count))


def _bulk_insert(session: Session, model: type[Any], rows: list[dict[str, Any]], bar: Any) -> None:
    """Insert rows through the driver: COPY on PostgreSQL, executemany on SQLite.

    Every row dict has the same keys, and JSON columns already hold their JSON text (the row builders
    encode them): the ORM's bulk path spends most of its time per row in Python, these paths do not.
    """
    if not rows:
        return
    columns = list(rows[0].keys())
    table = model.__table__.name
    dbapi = session.connection().connection.driver_connection
    assert dbapi is not None
    if session.get_bind().dialect.name == "postgresql":
        with dbapi.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for start in range(0, len(rows), CHUNK):
                part = rows[start : start + CHUNK]
                text_block = "".join("\t".join(map(_copy_cell, row.values())) + "\n" for row in part)
                copy.write(text_block.encode("utf-8"))
                if bar is not None:
                    bar.update(len(part))
        return
    placeholders = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
    cur = dbapi.cursor()
    try:
        for start in range(0, len(rows), CHUNK):
            values = [tuple(row.values()) for row in rows[start : start + CHUNK]]
            cur.executemany(sql, values)
            if bar is not None:
                bar.update(len(values))
    finally:
        cur.close()


def import_records(
    *,
    session: Session,
    records: Sequence[LesionRecord],
    stored_slices: Callable[[str], list[int]],
    progress: bool = False,
) -> ImportSummary:
    """Insert records not yet in the database and refresh stored-slice lists; the caller commits."""
    started = time.perf_counter()
    summary = ImportSummary(rows=len(records))

    by_file: dict[str, list[tuple[int, LesionRecord]]] = {}
    for row_number, rec in enumerate(records, start=2):  # line 1 is the header
        by_file.setdefault(rec.file_name, []).append((row_number, rec))

    existing_ks = dict(session.execute(select(KeySlice.file_name, KeySlice.id)).all())
    new_files = [f for f in by_file if f not in existing_ks]
    summary.skipped_key_slices = len(by_file) - len(new_files)
    if existing_ks:
        _refresh_existing(session, by_file, existing_ks, summary)

    existing_patients = set(session.execute(select(Patient.id)).scalars().all())
    existing_studies = {
        (p, s): i for i, p, s in session.execute(select(Study.id, Study.patient_id, Study.study_index))
    }
    existing_series = dict(session.execute(select(Series.folder, Series.id)).all())

    new_patients: dict[int, dict[str, Any]] = {}
    new_studies: dict[tuple[int, int], dict[str, Any]] = {}
    series_needed: dict[str, tuple[int, int, int]] = {}
    for file_name in by_file:
        rec = by_file[file_name][0][1]
        if rec.patient_index not in existing_patients:
            new_patients.setdefault(
                rec.patient_index, {"id": rec.patient_index, "gender": rec.patient_gender}
            )
        key = (rec.patient_index, rec.study_index)
        if key not in existing_studies:
            new_studies.setdefault(
                key, {"patient_id": rec.patient_index, "study_index": rec.study_index, "age": rec.patient_age}
            )
        series_needed.setdefault(rec.series_folder, (rec.patient_index, rec.study_index, rec.series_id))

    if new_patients:
        _bulk_insert(session, Patient, list(new_patients.values()), None)
    if new_studies:
        _bulk_insert(session, Study, list(new_studies.values()), None)
        existing_studies = {
            (p, s): i for i, p, s in session.execute(select(Study.id, Study.patient_id, Study.study_index))
        }

    # Stored slices are re-read every run: a user who unpacks another zip re-imports to see them.
    stored_rows = session.execute(select(Series.id, Series.folder, Series.stored_slices)).all()
    stored_now = {folder: (sid, list(slices or [])) for sid, folder, slices in stored_rows}
    new_series_rows: list[dict[str, Any]] = []
    for folder, (patient, study, series_index) in series_needed.items():
        on_disk = sorted(stored_slices(folder))
        if folder in existing_series:
            if stored_now[folder][1] != on_disk:
                session.execute(
                    update(Series).where(Series.id == existing_series[folder]).values(stored_slices=on_disk)
                )
                summary.series_updated += 1
            continue
        new_series_rows.append(
            {
                "study_id": existing_studies[(patient, study)],
                "series_index": series_index,
                "folder": folder,
                "stored_slices": _nums(on_disk),
            }
        )
    if new_series_rows:
        _bulk_insert(session, Series, new_series_rows, None)
        existing_series = dict(session.execute(select(Series.folder, Series.id)).all())

    if not new_files:
        summary.seconds = time.perf_counter() - started
        return summary

    ks_rows: list[dict[str, Any]] = []
    for file_name in new_files:
        rows = [rec for _, rec in by_file[file_name]]
        first = rows[0]
        sizes = [r.long_axis_mm for r in rows]
        ks_rows.append(
            {
                "id": 0,
                "file_name": file_name,
                "series_id": existing_series[first.series_folder],
                "patient_index": first.patient_index,
                "study_index": first.study_index,
                "series_index": first.series_id,
                "key_slice_index": first.key_slice_index,
                **_key_slice_metadata(first),
                "version": 1,
                "lesion_count": len(rows),
                "max_size_mm": max(sizes),
                "lesion_type_mask": type_mask(r.coarse_lesion_type for r in rows),
                "noisy": any(r.possibly_noisy for r in rows),
                "prediction_count": 0,
                "unreviewed_predictions": 0,
                "missed_score": None,
            }
        )
    total_rows = len(ks_rows) + 2 * sum(len(by_file[f]) for f in new_files)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total_rows, unit="row", desc="import")
    try:
        # Ids are reserved up front, so no inserted row has to be read back to link the next table.
        for row, new_id in zip(ks_rows, _reserve_ids(session, KeySlice, len(ks_rows)), strict=True):
            row["id"] = new_id
        _bulk_insert(session, KeySlice, ks_rows, bar)
        ks_ids = {row["file_name"]: row["id"] for row in ks_rows}
        orig_rows = [
            _original_row(rec, ks_ids[f], row_number) for f in new_files for row_number, rec in by_file[f]
        ]
        for row, new_id in zip(orig_rows, _reserve_ids(session, OriginalLesion, len(orig_rows)), strict=True):
            row["id"] = new_id
        _bulk_insert(session, OriginalLesion, orig_rows, bar)
        orig_ids = {row["row_number"]: row["id"] for row in orig_rows}
        lesion_rows: list[dict[str, Any]] = []
        for f in new_files:
            for row_number, rec in by_file[f]:
                flag_reason, flag_note = _flag(rec)
                lesion_rows.append(
                    {
                        "key_slice_id": ks_ids[f],
                        "original_id": orig_ids[row_number],
                        "origin": ORIGIN_CSV,
                        # The app's 0-based frame; the original row keeps the file's 1-based values.
                        "recist": _nums(rec.recist_px),
                        "box": _nums(rec.box_px),
                        "lesion_type": rec.coarse_lesion_type,
                        "slice_index": rec.key_slice_index,
                        "size_mm": rec.long_axis_mm,
                        "flag_reason": flag_reason,
                        "flag_note": flag_note,
                        "deleted": False,
                        "version": 1,
                    }
                )
        _bulk_insert(session, Lesion, lesion_rows, bar)
    finally:
        if bar is not None:
            bar.close()
    # Fresh statistics let the planner pick the work-list indexes; without them the first queries after
    # an import scan and sort every key slice (3-5x slower on SQLite).
    analyzed = "key_slices, original_lesions, lesions, series, studies, patients"
    session.execute(text("ANALYZE" if session.get_bind().dialect.name == "sqlite" else f"ANALYZE {analyzed}"))
    summary.new_key_slices = len(ks_rows)
    summary.new_lesions = len(orig_rows)
    summary.seconds = time.perf_counter() - started
    return summary


def _refresh_existing(
    session: Session,
    by_file: dict[str, list[tuple[int, LesionRecord]]],
    existing_ks: dict[str, int],
    summary: ImportSummary,
) -> None:
    """Bring already imported key slices, their original rows, patients and studies up to date with the CSV.

    Metadata follows the file; a row's own lesion values stay as imported and the row is named in the
    summary; the reviewers' lesions are never touched.
    """
    if not by_file:
        return
    table = OriginalLesion.__table__
    imported: dict[int, list[Any]] = {}
    brief = select(table.c.id, table.c.key_slice_id, table.c.raw)
    for row in session.execute(brief.order_by(table.c.key_slice_id, table.c.row_number)):
        imported.setdefault(row.key_slice_id, []).append(row)
    # Rows whose cell texts are as imported need no closer look: the common case, and the cheap one.
    suspects: dict[str, list[tuple[int, int, LesionRecord]]] = {}
    for file_name, csv_rows in by_file.items():
        ks_id = existing_ks.get(file_name)
        if ks_id is None:
            continue
        rows_db = imported.get(ks_id, [])
        if len(rows_db) != len(csv_rows):
            summary.changed_key_slices.append(file_name)
            summary.kept_rows.append(
                f"{file_name}: {len(csv_rows)} rows in DL_info.csv, {len(rows_db)} imported"
            )
        for i, db_row in enumerate(rows_db):
            row_number, rec = csv_rows[min(i, len(csv_rows) - 1)]
            if db_row.raw is None or db_row.raw != pack_raw(rec.raw):
                suspects.setdefault(file_name, []).append((db_row.id, row_number, rec))
    ids = [db_id for items in suspects.values() for db_id, _, _ in items]
    full: dict[int, Any] = {}
    for start in range(0, len(ids), 500):
        chunk = select(table).where(table.c.id.in_(ids[start : start + 500]))
        full.update((m["id"], m) for m in session.execute(chunk).mappings())
    ks_table = KeySlice.__table__
    meta_columns = list(_key_slice_metadata(next(iter(by_file.values()))[0][1]))
    ks_meta = {
        m["id"]: m
        for m in session.execute(select(ks_table.c.id, *(ks_table.c[c] for c in meta_columns))).mappings()
    }
    updated_fields: dict[str, int] = {}
    for file_name, csv_rows in by_file.items():
        ks_id = existing_ks.get(file_name)
        if ks_id is None:
            continue
        fields: set[str] = set()
        kept = False
        for db_id, row_number, rec in suspects.get(file_name, []):
            db_row = full[db_id]
            want = _as_stored(_original_row(rec, ks_id, row_number))
            meta = {c: want[c] for c in METADATA_COLUMNS if db_row[c] != want[c]}
            own = [name for c, name in LESION_COLUMNS.items() if db_row[c] != want[c]]
            if own and file_name not in summary.changed_key_slices:
                kept = True
                summary.kept_rows.append(f"line {row_number} ({file_name}): {', '.join(own)}")
            elif meta and not own:
                # The raw cell texts follow the file only while the whole row does.
                meta["raw"] = want["raw"]
            if meta:
                fields.update(METADATA_COLUMNS[c] for c in meta if c in METADATA_COLUMNS)
                session.execute(update(OriginalLesion).where(table.c.id == db_id).values(**meta))
        if kept:
            summary.changed_key_slices.append(file_name)
        want_ks = _key_slice_metadata(csv_rows[0][1])
        ks_changes = {c: v for c, v in want_ks.items() if ks_meta[ks_id][c] != v}
        if ks_changes:
            old_spacing = ks_meta[ks_id].get("spacing_x")
            if "spacing_x" in ks_changes and old_spacing:
                # Sizes in mm are pixels times the spacing: scale them with it (the reviewers' marks stay).
                ratio = float(ks_changes["spacing_x"]) / float(old_spacing)
                session.execute(
                    update(Lesion).where(Lesion.key_slice_id == ks_id).values(size_mm=Lesion.size_mm * ratio)
                )
                ks_changes["max_size_mm"] = ks_table.c.max_size_mm * ratio
            session.execute(update(KeySlice).where(KeySlice.id == ks_id).values(**ks_changes))
        if fields or ks_changes:
            summary.updated_key_slices.append(file_name)
            for name in fields:
                updated_fields[name] = updated_fields.get(name, 0) + 1
    summary.updated_fields = updated_fields
    _refresh_patients_and_studies(session, by_file)
    if summary.kept_rows:
        log.warning(
            "%d rows of DL_info.csv differ in their lesion values from the imported originals, kept as "
            "imported: %s",
            len(summary.kept_rows),
            "; ".join(summary.kept_rows),
        )


def _refresh_patients_and_studies(
    session: Session, by_file: dict[str, list[tuple[int, LesionRecord]]]
) -> None:
    """Patient gender and study age as the CSV says now (each from the first row that names them)."""
    genders: dict[int, str] = {}
    ages: dict[tuple[int, int], int | None] = {}
    for csv_rows in by_file.values():
        rec = csv_rows[0][1]
        genders.setdefault(rec.patient_index, rec.patient_gender)
        ages.setdefault((rec.patient_index, rec.study_index), rec.patient_age)
    for pid, gender in session.execute(select(Patient.id, Patient.gender)).all():
        if pid in genders and genders[pid] != gender:
            session.execute(update(Patient).where(Patient.id == pid).values(gender=genders[pid]))
    for sid, pid, index, age in session.execute(
        select(Study.id, Study.patient_id, Study.study_index, Study.age)
    ):
        if (pid, index) in ages and ages[(pid, index)] != age:
            session.execute(update(Study).where(Study.id == sid).values(age=ages[(pid, index)]))


def _stored_slices_reader(data_dir: DataDir) -> Callable[[str], list[int]]:
    if is_url(data_dir):
        return _stored_objects_reader(str(data_dir))
    data_dir = local_path(data_dir)
    images = data_dir / "Images_png"
    if not images.is_dir():
        log.info("no Images_png folder in %s: every slice is recorded as missing", data_dir)
        return lambda _folder: []
    from app.deeplesion.store import SliceStore

    store = SliceStore(data_dir)

    def read(folder: str) -> list[int]:
        try:
            return list(store.stored_slices(folder))
        except Exception as exc:  # an unreadable folder must not abort the import of the rest
            log.warning("cannot list stored slices of %s: %s", folder, exc)
            return []

    return read


def _stored_objects_reader(url: str) -> Callable[[str], list[int]]:
    """Stored slices of a dataset on object storage, from one recursive listing of Images_png/."""
    from app.deeplesion.store import SliceStore

    # The database keeps what this finds: requests never list the bucket.
    index = SliceStore(url).stored_index()
    log.info("import: %d series folders with stored slices in %s", len(index), display_name(url))
    return lambda folder: list(index.get(folder, []))


def import_dataset(
    *,
    data_dir: DataDir,
    session_factory: sessionmaker[Session] | None = None,
    engine: Engine | None = None,
    progress: bool = False,
) -> ImportSummary:
    """Import DATA_DIR/DL_info.csv in one transaction; CsvValidationError imports nothing."""
    from app.deeplesion.csvio import parse_dl_info_bytes

    if session_factory is None:
        if engine is None:
            raise ValueError("import_dataset needs session_factory or engine")
        from app.db.session import make_session_factory

        session_factory = make_session_factory(engine)
    records = parse_dl_info_bytes(read_data_file(data_dir, "DL_info.csv"), source="DL_info.csv")
    reader = _stored_slices_reader(data_dir)
    with session_factory() as session, session.begin():
        summary = import_records(session=session, records=records, stored_slices=reader, progress=progress)
    log.info("import: %s", summary.describe())
    return summary
