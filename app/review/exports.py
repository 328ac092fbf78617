"""Exports of the original or corrected annotations: DL_info.csv, COCO JSON, NIfTI series zips."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from app.db.models import KeySlice, Lesion, OriginalLesion, Series, User
from app.deeplesion.csvio import format_dl_info, format_number
from app.deeplesion.geometry import recist_diameters
from app.deeplesion.schema import (
    CSV_COORDINATE_DIGITS,
    LESION_TYPES,
    LesionRecord,
    coco_category,
    csv_coordinates,
    slice_file_name,
)
from app.deeplesion.store import IMAGES_DIR
from app.review.errors import InvalidInputError, NotFoundError
from app.review.followup import track_ids
from app.review.importer import unpack_raw
from app.review.lesion_state import geometry_edited, review_state
from app.review.serialize import iso, original_facts
from app.review.vocabulary import BOX_ONLY_CHOICES, EXPORT_STATES, ORIGIN_CSV

STATES = tuple(EXPORT_STATES)


def _record(orig: OriginalLesion, ks: KeySlice) -> LesionRecord:
    """An imported row exactly as it was read (values and cell texts)."""
    recist = orig.measurement_coordinates
    diam = orig.lesion_diameters_px
    return LesionRecord(
        file_name=ks.file_name,
        patient_index=ks.patient_index,
        study_index=ks.study_index,
        series_id=ks.series_index,
        key_slice_index=ks.key_slice_index,
        measurement_coordinates=None if recist is None else tuple(float(v) for v in recist),  # type: ignore[arg-type]
        bounding_box=tuple(float(v) for v in orig.bounding_box),  # type: ignore[arg-type]
        lesion_diameters_px=None if diam is None else tuple(float(v) for v in diam),  # type: ignore[arg-type]
        normalized_location=tuple(None if v is None else float(v) for v in orig.normalized_location),  # type: ignore[arg-type]
        coarse_lesion_type=orig.coarse_lesion_type,
        possibly_noisy=orig.possibly_noisy,
        slice_range=tuple(int(v) for v in orig.slice_range),  # type: ignore[arg-type]
        spacing_mm=tuple(float(v) for v in orig.spacing_mm),  # type: ignore[arg-type]
        image_size=tuple(int(v) for v in orig.image_size),  # type: ignore[arg-type]
        dicom_window=tuple(float(v) for v in orig.dicom_window),  # type: ignore[arg-type]
        patient_gender=orig.patient_gender,
        patient_age=orig.patient_age,
        train_val_test=orig.train_val_test,
        raw=unpack_raw(orig.raw),
    )


@dataclass(frozen=True)
class ExportedLesion:
    """A current lesion as the exports see it: its CSV row, and the facts COCO and the extras add."""

    record: LesionRecord
    lesion: Lesion
    review_state: str


def _geometry_cells(lesion: Lesion, template: LesionRecord, edited: bool) -> dict[str, Any]:
    """The geometry fields of a lesion's row: the template's own (with its texts) unless the marks changed."""
    if not edited:
        return {}
    recist = lesion.recist
    return {
        "measurement_coordinates": None if recist is None else csv_coordinates(recist),
        "bounding_box": csv_coordinates(lesion.box),
        "lesion_diameters_px": None
        if recist is None
        else tuple(round(v, CSV_COORDINATE_DIGITS) for v in recist_diameters(recist)),
    }


def _on_slice(template: LesionRecord, slice_index: int) -> dict[str, Any]:
    """The identity fields of a row for a lesion that lies on `slice_index` of the template's series."""
    if slice_index == template.key_slice_index:
        return {}
    return {
        "file_name": slice_file_name(
            template.patient_index, template.study_index, template.series_id, slice_index
        ),
        "key_slice_index": slice_index,
    }


def _extras(lesion: Lesion, state: str, names: dict[int, str], track: str = "") -> dict[str, str]:
    """The EXTRA_COLUMNS cells of a lesion: who did what, and why."""

    def name(user_id: int | None) -> str:
        return names.get(user_id, "") if user_id is not None else ""

    return {
        "Lesion_id": str(lesion.id) if lesion.id is not None else "",
        "Origin": lesion.origin,
        "Review_state": state,
        "Flag_reason": lesion.flag_reason or "",
        "Flag_note": lesion.flag_note or "",
        "Confirmed_by": name(lesion.confirmed_by_id),
        "Reviewer": name(lesion.updated_by_id),
        "Reviewed_at": iso(lesion.updated_at) or "",
        "Model_version": lesion.model_version or "",
        "Score": "" if lesion.score is None else format_number(lesion.score),
        "Track_id": track,
    }


def _current(
    lesion: Lesion,
    ks: KeySlice,
    orig: OriginalLesion | None,
    template: LesionRecord,
    names: dict[int, str],
    tracks: dict[int, str],
) -> ExportedLesion:
    """A current lesion's row: unchanged cells keep the original texts, changed ones are written anew."""
    original = original_facts(orig, ks) if orig is not None else None
    state = review_state(lesion, original)
    changes: dict[str, Any] = {
        "coarse_lesion_type": lesion.lesion_type,
        "possibly_noisy": 1 if lesion.is_noisy else 0,
        **_on_slice(template, lesion.slice_index),
    }
    if orig is None:
        # A reviewer's lesion: the key slice's metadata cells as its rows spell them; no invented location.
        z = template.normalized_location[2]
        changes["normalized_location"] = (None, None, z)
        changes.update(_geometry_cells(lesion, template, edited=True))
    else:
        changes.update(_geometry_cells(lesion, template, edited=geometry_edited(lesion, original)))
    record = replace(template, **changes, extras=_extras(lesion, state, names, tracks.get(lesion.id, "")))
    return ExportedLesion(record=record, lesion=lesion, review_state=state)


# Original rows per query of a streamed export: what one chunk holds in memory.
EXPORT_CHUNK_ROWS = 2000


def iter_corrected_lesions(
    *,
    session: Session,
    truth: str = "corrected",
    chunk_rows: int = EXPORT_CHUNK_ROWS,
    key_slice_ids: Select[Any] | None = None,
) -> Iterator[ExportedLesion]:
    """The merged current state, chunk by chunk of original rows (see corrected_lesions for the order).

    `key_slice_ids` (a SELECT of key slice ids, e.g. a work-list filter's) keeps only those key slices' rows.
    """
    from app.review.team.truth import truth_lesions

    names: dict[int, str] = {i: n for i, n in session.execute(select(User.id, User.name))}
    # Track ids of the follow-up lesion graph (app.review.followup), one query for the whole export.
    tracks = track_ids(session)
    # A key slice's added lesions follow its last csv row (its rows may not be next to each other).
    last_rows = select(OriginalLesion.key_slice_id, func.max(OriginalLesion.row_number))
    if key_slice_ids is not None:
        last_rows = last_rows.where(OriginalLesion.key_slice_id.in_(key_slice_ids))
    last_row = dict(session.execute(last_rows.group_by(OriginalLesion.key_slice_id)).all())
    for originals, key_slices in _original_chunks(session, chunk_rows, key_slice_ids):
        ks_ids = set(key_slices)
        ending = {o.key_slice_id for o in originals if last_row[o.key_slice_id] == o.row_number}
        lesions = (
            session.execute(
                select(Lesion)
                .where(
                    Lesion.is_current,
                    or_(
                        Lesion.original_id.in_([o.id for o in originals]),
                        and_(Lesion.original_id.is_(None), Lesion.key_slice_id.in_(ending)),
                    ),
                )
                .order_by(Lesion.id)
            )
            .scalars()
            .all()
        )
        lesions = truth_lesions(session, truth, lesions, key_slice_ids=ks_ids, added_for=ending)
        by_original = {le.original_id: le for le in lesions if le.original_id is not None}
        added: dict[int, list[Lesion]] = {}
        for le in lesions:
            if le.original_id is None:
                added.setdefault(le.key_slice_id, []).append(le)
        for orig in originals:
            ks = key_slices[orig.key_slice_id]
            template = _record(orig, ks)
            current = by_original.get(orig.id)
            if current is not None:
                yield _current(current, ks, orig, template, names, tracks)
            if last_row[ks.id] == orig.row_number:
                yield from (_current(le, ks, None, template, names, tracks) for le in added.get(ks.id, []))


def corrected_lesions(*, session: Session, truth: str = "corrected") -> list[ExportedLesion]:
    """The merged current state: csv lesions in file order, each key slice's added lesions after its rows.

    `truth` "consensus" or "reader:NAME" lays team reads over it (app.review.team.truth).
    """
    return list(iter_corrected_lesions(session=session, truth=truth))


def _check_box_only(box_only: str) -> None:
    if box_only not in BOX_ONLY_CHOICES:
        raise InvalidInputError(f"box_only must be one of {', '.join(BOX_ONLY_CHOICES)}, got {box_only!r}")


def corrected_records(
    *, session: Session, box_only: str = "nan", truth: str = "corrected"
) -> list[LesionRecord]:
    """DL_info rows of the merged current state (box-only lesions NaN-measured, or omitted)."""
    _check_box_only(box_only)
    return [
        e.record
        for e in corrected_lesions(session=session, truth=truth)
        if box_only == "nan" or e.record.measurement_coordinates is not None
    ]


def original_records(*, session: Session) -> list[LesionRecord]:
    """Rows exactly as imported."""
    key_slices = {ks.id: ks for ks in session.execute(select(KeySlice)).scalars()}
    originals = session.execute(select(OriginalLesion).order_by(OriginalLesion.row_number)).scalars()
    return [_record(o, key_slices[o.key_slice_id]) for o in originals]


def _check_state(state: str) -> None:
    if state not in STATES:
        raise InvalidInputError(f"state must be one of {', '.join(STATES)}, got {state!r}")


def _state_and_truth(state: str, truth: str | None) -> tuple[str, str]:
    """The export state and the truth laid over it: a given truth wins ("original" is the original state)."""
    from app.review.team.truth import check_truth

    _check_state(state)
    if truth is None:
        return state, state
    check_truth(truth)
    return ("original" if truth == "original" else "corrected"), truth


def export_csv(
    *,
    session: Session,
    state: str = "corrected",
    extras: bool = False,
    box_only: str = "nan",
    truth: str | None = None,
) -> bytes:
    """DL_info.csv bytes of the original or corrected state (extras: who, why and where from).

    `truth` (app.review.team.truth.TRUTHS) overrides `state`: "consensus" or "reader:NAME" too.
    """
    state, truth = _state_and_truth(state, truth)
    if state == "original":
        return format_dl_info(original_records(session=session)).encode("utf-8")
    records = corrected_records(session=session, box_only=box_only, truth=truth)
    return format_dl_info(records, extra_columns=extras).encode("utf-8")


def stream_csv(
    *,
    session_factory: Callable[[], Session],
    state: str = "corrected",
    extras: bool = False,
    box_only: str = "nan",
    truth: str | None = None,
    chunk_rows: int = EXPORT_CHUNK_ROWS,
    key_slice_ids: Callable[[Session], Select[Any]] | None = None,
) -> Iterator[bytes]:
    """export_csv's bytes in pieces, one chunk of original rows at a time; bad input fails here, eagerly.

    `key_slice_ids` builds, in a session, the SELECT of the key slices to keep (all when None): the
    corrected rows of just those key slices, e.g. a work list's filter; it is built once up front so that
    a bad filter fails here too.
    """
    from app.review.team.truth import check_truth_known

    state, truth = _state_and_truth(state, truth)
    _check_box_only(box_only)
    if key_slice_ids is not None and state == "original":
        raise InvalidInputError("a key slice filter applies to the corrected state only")
    with session_factory() as session:
        check_truth_known(session, truth)
        if key_slice_ids is not None:
            key_slice_ids(session)

    def pieces() -> Iterator[bytes]:
        with session_factory() as session:
            only = None if key_slice_ids is None else key_slice_ids(session)
            if state == "original":
                records: Iterator[LesionRecord] = _iter_original_records(session, chunk_rows)
            else:
                records = (
                    e.record
                    for e in iter_corrected_lesions(
                        session=session, truth=truth, chunk_rows=chunk_rows, key_slice_ids=only
                    )
                    if box_only == "nan" or e.record.measurement_coordinates is not None
                )
            batch: list[LesionRecord] = []
            first = True
            for record in records:
                batch.append(record)
                if len(batch) >= chunk_rows:
                    yield _csv_piece(batch, extras and state != "original", first)
                    batch, first = [], False
            if batch or first:
                yield _csv_piece(batch, extras and state != "original", first)

    return pieces()


def _original_chunks(
    session: Session, chunk_rows: int, key_slice_ids: Select[Any] | None = None
) -> Iterator[tuple[Sequence[OriginalLesion], dict[int, KeySlice]]]:
    """The imported rows in file order (of one series if given), `chunk_rows` at a time, with key slices."""
    after: int | None = None
    while True:
        query = select(OriginalLesion).order_by(OriginalLesion.row_number).limit(chunk_rows)
        if key_slice_ids is not None:
            query = query.where(OriginalLesion.key_slice_id.in_(key_slice_ids))
        if after is not None:
            query = query.where(OriginalLesion.row_number > after)
        originals = session.execute(query).scalars().all()
        if not originals:
            return
        after = originals[-1].row_number
        ids = {o.key_slice_id for o in originals}
        key_slices = {
            ks.id: ks for ks in session.execute(select(KeySlice).where(KeySlice.id.in_(ids))).scalars()
        }
        yield originals, key_slices


def _iter_original_records(
    session: Session, chunk_rows: int, key_slice_ids: Select[Any] | None = None
) -> Iterator[LesionRecord]:
    """The imported rows in file order, read a chunk at a time."""
    for originals, key_slices in _original_chunks(session, chunk_rows, key_slice_ids):
        yield from (_record(o, key_slices[o.key_slice_id]) for o in originals)


def _csv_piece(records: list[LesionRecord], extras: bool, header: bool) -> bytes:
    text = format_dl_info(records, extra_columns=extras)
    return (text if header else text.split("\n", 1)[1]).encode("utf-8")


def image_path(file_name: str) -> str:
    """Where a slice's PNG lies below the data folder, e.g. Images_png/000001_01_01/110.png."""
    folder, slice_png = file_name.rsplit("_", 1)
    return f"{IMAGES_DIR}/{folder}/{slice_png}"


def _coco_annotation(
    record: LesionRecord, extras: dict[str, str] | None, image_id: int, ann_id: int
) -> dict[str, Any]:
    x1, y1, x2, y2 = record.box_px
    recist = record.recist_px
    keypoints: list[float] = [0.0] * 12
    if recist is not None:
        keypoints = [v for i in range(4) for v in (recist[2 * i], recist[2 * i + 1], 2)]
    extras = extras or {}
    score = extras.get("Score", "")
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": coco_category(record.coarse_lesion_type),
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "area": (x2 - x1) * (y2 - y1),
        "iscrowd": 0,
        "keypoints": keypoints,
        "num_keypoints": 0 if recist is None else 4,
        "recist": None if recist is None else list(recist),
        "attributes": {
            "lesion_id": int(extras["Lesion_id"]) if extras.get("Lesion_id") else None,
            "origin": extras.get("Origin") or ORIGIN_CSV,
            "review_state": extras.get("Review_state") or None,
            "possibly_noisy": record.possibly_noisy,
            "flag_reason": extras.get("Flag_reason") or None,
            "flag_note": extras.get("Flag_note") or None,
            "confirmed_by": extras.get("Confirmed_by") or None,
            "reviewer": extras.get("Reviewer") or None,
            "reviewed_at": extras.get("Reviewed_at") or None,
            "model_version": extras.get("Model_version") or None,
            "score": float(score) if score else None,
            "slice_index": record.key_slice_index,
            "diameters_px": None if record.lesion_diameters_px is None else list(record.lesion_diameters_px),
            "track_id": extras.get("Track_id") or None,
        },
    }


def _coco_image(rec: LesionRecord, image_id: int) -> dict[str, Any]:
    """The COCO image of the slice a row lies on."""
    return {
        "id": image_id,
        "file_name": image_path(rec.file_name),
        "key_slice": rec.file_name,
        "width": rec.image_size[0],
        "height": rec.image_size[1],
        "spacing_mm": list(rec.spacing_mm),
        "split": rec.train_val_test,
    }


def _coco_info(truth: str) -> dict[str, str]:
    return {
        "description": f"DeepLesion annotations ({truth}) exported by Lesion Review",
        "coordinates": "0-based pixels; DL_info.csv counts from 1",
        "images_root": "the dataset folder (file_name is relative to it)",
    }


def _coco_categories() -> list[dict[str, Any]]:
    return [
        {
            "id": coco_category(t),
            "name": name,
            "supercategory": "lesion",
            "keypoints": ["long_a", "long_b", "short_a", "short_b"],
            "skeleton": [[1, 2], [3, 4]],
        }
        for t, name in sorted(LESION_TYPES.items(), key=lambda item: coco_category(item[0]))
    ]


def export_coco(*, session: Session, state: str = "corrected", truth: str | None = None) -> bytes:
    """COCO detection JSON: images are the slices holding lesions (0-based bbox), RECIST keypoints."""
    state, truth = _state_and_truth(state, truth)
    records = (
        original_records(session=session)
        if state == "original"
        else corrected_records(session=session, truth=truth)
    )
    images: dict[str, dict[str, Any]] = {}
    annotations: list[dict[str, Any]] = []
    for rec in records:
        if rec.file_name not in images:
            images[rec.file_name] = _coco_image(rec, len(images) + 1)
        image_id = images[rec.file_name]["id"]
        annotations.append(_coco_annotation(rec, rec.extras, image_id, len(annotations) + 1))
    doc = {
        "info": _coco_info(truth),
        "images": list(images.values()),
        "annotations": annotations,
        "categories": _coco_categories(),
    }
    return json.dumps(doc).encode("utf-8")


# Bytes per piece when the spooled annotations are read back.
SPOOL_READ_BYTES = 1 << 20


def stream_coco(
    *,
    session_factory: Callable[[], Session],
    state: str = "corrected",
    truth: str | None = None,
    chunk_rows: int | None = None,
) -> Iterator[bytes]:
    """export_coco's bytes in pieces; bad input fails here, eagerly.

    One pass over the rows, a chunk at a time: the images go out as they are met, the annotations (which
    follow them in the document) are spooled to a temporary file and read back after; only the image ids
    of the slices met stay in memory.
    """
    from app.review.team.truth import check_truth_known

    state, truth = _state_and_truth(state, truth)
    rows = chunk_rows or EXPORT_CHUNK_ROWS
    with session_factory() as session:
        check_truth_known(session, truth)

    def pieces() -> Iterator[bytes]:
        # The same text json.dumps gives the whole document: ", " between items, ": " after keys.
        yield (json.dumps({"info": _coco_info(truth)})[:-1] + ', "images": [').encode("utf-8")
        image_ids: dict[str, int] = {}
        with session_factory() as session, tempfile.TemporaryFile() as spool:
            records = (
                _iter_original_records(session, rows)
                if state == "original"
                else (e.record for e in iter_corrected_lesions(session=session, truth=truth, chunk_rows=rows))
            )
            batch: list[str] = []
            for count, rec in enumerate(records, start=1):
                if rec.file_name not in image_ids:
                    image_ids[rec.file_name] = len(image_ids) + 1
                    batch.append(json.dumps(_coco_image(rec, image_ids[rec.file_name])))
                ann = _coco_annotation(rec, rec.extras, image_ids[rec.file_name], count)
                spool.write(((", " if count > 1 else "") + json.dumps(ann)).encode("utf-8"))
                if count % rows == 0 and batch:
                    yield _coco_items(batch, first=len(image_ids) == len(batch))
                    batch = []
            if batch:
                yield _coco_items(batch, first=len(image_ids) == len(batch))
            yield b'], "annotations": ['
            spool.seek(0)
            while block := spool.read(SPOOL_READ_BYTES):
                yield block
        yield ('], "categories": ' + json.dumps(_coco_categories()) + "}").encode("utf-8")

    return pieces()


def _coco_items(items: list[str], *, first: bool) -> bytes:
    """A run of JSON list items, with the separator before it unless it opens the list."""
    return (("" if first else ", ") + ", ".join(items)).encode("utf-8")


def _series(session: Session, series_folder: str) -> Series:
    series = session.execute(select(Series).where(Series.folder == series_folder)).scalar_one_or_none()
    if series is None:
        raise NotFoundError(f"no series {series_folder}")
    return series


def series_records(*, session: Session, series_folder: str, truth: str) -> list[LesionRecord]:
    """The DL_info rows (with extras, but for the original) of one series under a truth, in export order."""
    state, truth = _state_and_truth("corrected", truth)
    of_series = select(KeySlice.id).where(KeySlice.series_id == _series(session, series_folder).id)
    if state == "original":
        return list(_iter_original_records(session, EXPORT_CHUNK_ROWS, of_series))
    return [e.record for e in iter_corrected_lesions(session=session, truth=truth, key_slice_ids=of_series)]


def export_nifti_zip(*, session: Session, store: Any, series_folder: str, truth: str | None = None) -> bytes:
    """A zip of the series' NIfTI volumes (one per run of consecutive stored slices).

    With a `truth` (app.review.team.truth.TRUTHS) the zip also holds the series' DL_info rows under it.
    """
    from app.deeplesion.nifti import write_series_nifti
    from app.review.team.truth import check_truth_known, file_label

    if truth is not None:
        check_truth_known(session, truth)
    series = _series(session, series_folder)
    ks = session.execute(select(KeySlice).where(KeySlice.series_id == series.id).limit(1)).scalar_one()
    if not series.stored_slices:
        raise NotFoundError(f"no slices of series {series_folder} are stored on disk")
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="lr-nifti-") as tmp:
        paths = write_series_nifti(
            store, series_folder, Path(tmp), (ks.spacing_x, ks.spacing_y, ks.spacing_z)
        )
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            for p in paths:
                zf.write(p, arcname=p.name)
            if truth is not None:
                rows = series_records(session=session, series_folder=series_folder, truth=truth)
                text = format_dl_info(rows, extra_columns=truth != "original")
                zf.writestr(f"{series_folder}_DL_info_{file_label(truth)}.csv", text.encode("utf-8"))
    return buf.getvalue()
