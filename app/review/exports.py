"""Exports of the original or corrected annotations: DL_info.csv, COCO JSON, NIfTI series zips."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import KeySlice, Lesion, OriginalLesion, Series
from app.deeplesion.csvio import format_dl_info
from app.deeplesion.geometry import recist_diameters
from app.deeplesion.schema import BOX_PADDING_PX, LESION_TYPES, LesionRecord
from app.review.errors import InvalidInputError, NotFoundError
from app.review.importer import unpack_raw

STATES = ("original", "corrected")


def _record(orig: OriginalLesion, ks: KeySlice) -> LesionRecord:
    return LesionRecord(
        file_name=ks.file_name,
        patient_index=ks.patient_index,
        study_index=ks.study_index,
        series_id=ks.series_index,
        key_slice_index=ks.key_slice_index,
        measurement_coordinates=tuple(float(v) for v in orig.measurement_coordinates),  # type: ignore[arg-type]
        bounding_box=tuple(float(v) for v in orig.bounding_box),  # type: ignore[arg-type]
        lesion_diameters_px=tuple(float(v) for v in orig.lesion_diameters_px),  # type: ignore[arg-type]
        normalized_location=tuple(float(v) for v in orig.normalized_location),  # type: ignore[arg-type]
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


def recist_from_box(box: list[float]) -> list[float]:
    """A RECIST cross inside a box (without its 5 px padding): long axis along the longer side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    pad_x = min(BOX_PADDING_PX, (x2 - x1) / 4)
    pad_y = min(BOX_PADDING_PX, (y2 - y1) / 4)
    ix1, iy1, ix2, iy2 = x1 + pad_x, y1 + pad_y, x2 - pad_x, y2 - pad_y
    cx, cy = (ix1 + ix2) / 2, (iy1 + iy2) / 2
    horizontal = [ix1, cy, ix2, cy]
    vertical = [cx, iy1, cx, iy2]
    return horizontal + vertical if ix2 - ix1 >= iy2 - iy1 else vertical + horizontal


def _r3(values: list[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 3) for v in values)


def _current_record(lesion: Lesion, ks: KeySlice, template: LesionRecord) -> LesionRecord:
    """A CSV row for the lesion's current state, metadata from the key slice's first original row."""
    recist = list(lesion.recist) if lesion.recist is not None else recist_from_box(lesion.box)
    box = _r3(lesion.box)
    noisy = 1 if (lesion.review == "flagged" or lesion.noisy) else 0
    if lesion.origin == "original" and lesion.review in ("unreviewed", "confirmed", "flagged"):
        # Geometry untouched: keep the imported values (and raw texts) so the row reads back equal.
        return replace(template, coarse_lesion_type=lesion.lesion_type, possibly_noisy=noisy)
    cx = (box[0] + box[2]) / 2 / max(1, ks.image_width)
    cy = (box[1] + box[3]) / 2 / max(1, ks.image_height)
    return replace(
        template,
        measurement_coordinates=_r3(recist),  # type: ignore[arg-type]
        bounding_box=box,  # type: ignore[arg-type]
        lesion_diameters_px=_r3(list(recist_diameters(recist))),  # type: ignore[arg-type]
        normalized_location=(round(cx, 4), round(cy, 4), template.normalized_location[2]),
        coarse_lesion_type=lesion.lesion_type,
        possibly_noisy=noisy,
        raw=None,
    )


def corrected_records(*, session: Session) -> list[LesionRecord]:
    """Rows of the merged current state: originals as reviewed, then added lesions; deleted ones omitted."""
    originals = session.execute(select(OriginalLesion).order_by(OriginalLesion.row_number)).scalars().all()
    key_slices = {ks.id: ks for ks in session.execute(select(KeySlice)).scalars()}
    lesions = (
        session.execute(select(Lesion).where(Lesion.review != "deleted").order_by(Lesion.id)).scalars().all()
    )
    by_original = {le.original_id: le for le in lesions if le.original_id is not None}
    added: dict[int, list[Lesion]] = {}
    for le in lesions:
        if le.origin == "added":
            added.setdefault(le.key_slice_id, []).append(le)
    out: list[LesionRecord] = []
    seen: set[int] = set()
    for orig in originals:
        ks = key_slices[orig.key_slice_id]
        template = _record(orig, ks)
        current = by_original.get(orig.id)
        if current is not None:
            out.append(_current_record(current, ks, template))
        if ks.id not in seen:
            seen.add(ks.id)
            out.extend(_current_record(le, ks, replace(template, raw=None)) for le in added.get(ks.id, []))
    return out


def original_records(*, session: Session) -> list[LesionRecord]:
    """Rows exactly as imported."""
    key_slices = {ks.id: ks for ks in session.execute(select(KeySlice)).scalars()}
    originals = session.execute(select(OriginalLesion).order_by(OriginalLesion.row_number)).scalars()
    return [_record(o, key_slices[o.key_slice_id]) for o in originals]


def _records(session: Session, state: str) -> list[LesionRecord]:
    if state not in STATES:
        raise InvalidInputError(f"state must be original or corrected, got {state!r}")
    return original_records(session=session) if state == "original" else corrected_records(session=session)


def export_csv(*, session: Session, state: str = "corrected") -> bytes:
    """DL_info.csv bytes of the original or corrected state."""
    return format_dl_info(_records(session, state)).encode("utf-8")


def export_coco(*, session: Session, state: str = "corrected") -> bytes:
    """COCO detection JSON: images are key slices, bbox [x, y, w, h], RECIST as 4 keypoints and a field."""
    records = _records(session, state)
    images: dict[str, dict[str, Any]] = {}
    annotations: list[dict[str, Any]] = []
    for rec in records:
        if rec.file_name not in images:
            images[rec.file_name] = {
                "id": len(images) + 1,
                "file_name": rec.file_name,
                "width": rec.image_size[0],
                "height": rec.image_size[1],
                "spacing_mm": list(rec.spacing_mm),
                "split": rec.train_val_test,
            }
        x1, y1, x2, y2 = rec.bounding_box
        r = list(rec.measurement_coordinates)
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": images[rec.file_name]["id"],
                "category_id": rec.coarse_lesion_type,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
                "keypoints": [v for i in range(4) for v in (r[2 * i], r[2 * i + 1], 2)],
                "num_keypoints": 4,
                "recist": r,
                "diameters_px": list(rec.lesion_diameters_px),
                "possibly_noisy": rec.possibly_noisy,
            }
        )
    doc = {
        "info": {"description": f"DeepLesion annotations ({state}) exported by Lesion Review"},
        "images": list(images.values()),
        "annotations": annotations,
        "categories": [
            {
                "id": t,
                "name": name,
                "supercategory": "lesion",
                "keypoints": ["long_a", "long_b", "short_a", "short_b"],
                "skeleton": [[1, 2], [3, 4]],
            }
            for t, name in sorted(LESION_TYPES.items())
        ],
    }
    return json.dumps(doc).encode("utf-8")


def export_nifti_zip(*, session: Session, store: Any, series_folder: str) -> bytes:
    """A zip of the series' NIfTI volumes (one per run of consecutive stored slices)."""
    from app.deeplesion.nifti import write_series_nifti

    series = session.execute(select(Series).where(Series.folder == series_folder)).scalar_one_or_none()
    if series is None:
        raise NotFoundError(f"no series {series_folder}")
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
    return buf.getvalue()
