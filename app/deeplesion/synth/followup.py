"""Synthetic follow-up: patients scanned several times, the same lesions recurring, identities known."""

# Metadata only (no images), so the full-size set of 32,735 rows takes seconds. Each lesion is a physical
# object in the patient's body frame; each study sees the body shifted and scaled a little, in its own
# pixel grid and slice range, and lesions grow, shrink, appear and disappear between studies. The truth
# file names each CSV row's track (lesion identity) and its true centre in the study's scan frame.

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.deeplesion.csvio import write_dl_info
from app.deeplesion.geometry import box_from_recist, recist_diameters
from app.deeplesion.schema import LesionRecord, csv_coordinates, slice_file_name
from app.deeplesion.synth.generator import GENERATOR_VERSION, SOFT_WINDOWS, SynthSummary, patient_splits
from app.deeplesion.synth.lesions import TYPE_WEIGHTS
from app.deeplesion.synth.metadata import META_INTERVALS, REAL_ROWS, _Picker

# Studies per patient: the real file has 10,594 studies of 4,427 patients (2.4 each), up to 26.
STUDY_COUNTS = (
    (1, 0.3),
    (2, 0.3),
    (3, 0.18),
    (4, 0.1),
    (5, 0.06),
    (6, 0.03),
    (8, 0.02),
    (12, 0.007),
    (26, 0.003),
)
# Share of lesions first seen after the first study, and chance per later study that one resolves.
APPEAR_LATE = 0.2
RESOLVE_PER_STUDY = 0.06
# Chance a present lesion is measured in DL_info.csv in a study (bookmarks are not exhaustive).
MEASURED = 0.88
# Share of lesions placed near another lesion of the patient (same organ): the hard cases for matching.
SIBLING_RATE = 0.35
# Between studies: body scale sd, in-plane shift sd (mm), scan start sd (mm), organ motion sd (mm).
SCALE_SD = 0.02
SHIFT_SD_MM = 10.0
SCAN_START_SD_MM = 15.0
MOTION_SD_MM = (2.0, 2.0, 3.0)
# Normalised location noise (x, y from the body outline; z from a body-part regressor, coarser).
NORM_SD = (0.008, 0.008, 0.012)
SIZE_NOISE = 0.05
FOLLOWUP_DESCRIPTION = (
    "SYNTHETIC follow-up DL_info.csv without images (app/deeplesion/synth/followup.py): not patient data. "
    "'tracks' name each lesion's identity across studies; 'rows' gives, per CSV row in file order, its "
    "track and its true centre (mm) in the study's scan frame (x = col * spacing, y = row * spacing, "
    "z = (slice - 1) * interval)."
)


@dataclass(frozen=True)
class _Track:
    """One physical lesion of a patient: body-frame centre (mm), type, sizes per study (None = absent)."""

    index: int
    lesion_type: int
    centre: tuple[float, float, float]
    short_ratio: float
    angle: float
    long_mm: tuple[float | None, ...]


@dataclass
class FollowupPlan:
    """The CSV rows in file order, the track of each row and the truth document."""

    records: list[LesionRecord]
    row_tracks: list[str]
    truth: dict[str, Any]


def _tracks(rng: np.random.Generator, n_studies: int, body: tuple[float, float, float]) -> list[_Track]:
    """Draw the patient's lesions and how each one's long axis evolves over the studies."""
    width, depth, height = body
    pick_type = _Picker(tuple(TYPE_WEIGHTS.items()))
    n = int(min(9, 1 + rng.poisson(2.2)))
    out: list[_Track] = []
    for i in range(n):
        if out and rng.random() < SIBLING_RATE:
            near = out[int(rng.integers(len(out)))]
            ltype = near.lesion_type
            off = rng.normal(0.0, 1.0, 3)
            off = off / max(1e-6, float(np.linalg.norm(off))) * rng.uniform(15.0, 40.0)
            centre = (
                float(near.centre[0] + off[0]),
                float(near.centre[1] + off[1]),
                float(near.centre[2] + off[2]),
            )
        else:
            ltype = int(pick_type(rng))
            centre = (
                float(rng.uniform(-0.38, 0.38) * width),
                float(rng.uniform(-0.35, 0.35) * depth),
                float(rng.uniform(0.05, 0.95) * height),
            )
        first = 0 if n_studies == 1 or rng.random() >= APPEAR_LATE else int(rng.integers(1, n_studies))
        size = min(150.0, max(4.0, float(rng.lognormal(math.log(19.0), 0.55))))
        trend = float(rng.normal(0.0, 0.18))
        sizes: list[float | None] = [None] * first
        for _ in range(first, n_studies):
            if sizes and sizes[-1] is None and len(sizes) > first:
                sizes.append(None)
                continue
            if len(sizes) > first and rng.random() < RESOLVE_PER_STUDY:
                sizes.append(None)
                continue
            sizes.append(round(size, 3))
            size = min(200.0, max(3.0, size * math.exp(trend + rng.normal(0.0, 0.08))))
        out.append(
            _Track(
                i + 1,
                ltype,
                centre,
                float(rng.uniform(0.45, 0.95)),
                float(rng.uniform(0, math.pi)),
                tuple(sizes),
            )
        )
    return out


def plan_followup(lesions: int = REAL_ROWS, seed: int = 0) -> FollowupPlan:
    """Draw patients with several studies until `lesions` CSV rows exist; renders nothing."""
    if lesions < 1:
        raise ValueError(f"lesions must be at least 1, got {lesions}")
    rng = np.random.default_rng([seed, 14_000])
    pick_studies = _Picker(STUDY_COUNTS)
    pick_dz = _Picker(META_INTERVALS)
    pick_window = _Picker(SOFT_WINDOWS)
    n_patients_guess = max(3, int(round(lesions / 7.39)))
    splits = patient_splits(n_patients_guess, seed)
    rows: list[tuple[LesionRecord, str, list[float]]] = []
    tracks_out: list[dict[str, Any]] = []
    studies_out: list[dict[str, Any]] = []
    patient = 0
    while len(rows) < lesions:
        patient += 1
        split = splits.get(patient, 1)
        gender = "M" if rng.random() < 0.52 else "F"
        age = int(rng.integers(18, 86))
        body = (float(rng.uniform(290, 360)), float(rng.uniform(200, 260)), float(rng.uniform(560, 680)))
        n_studies = int(pick_studies(rng))
        tracks = _tracks(rng, n_studies, body)
        study_no = 0
        months = 0.0
        patient_rows: list[tuple[LesionRecord, str, list[float]]] = []
        for k in range(n_studies):
            months += 0.0 if k == 0 else float(rng.uniform(2.0, 9.0))
            present = [t for t in tracks if t.long_mm[k] is not None and rng.random() < MEASURED]
            if not present:
                continue
            study_no += 1
            scale = float(rng.normal(1.0, SCALE_SD))
            shift = rng.normal(0.0, SHIFT_SD_MM, 2)
            size = 512
            spacing = round(float(rng.uniform(0.62, 0.98)), 6)
            dz = float(pick_dz(rng))
            z_start = float(rng.normal(0.0, SCAN_START_SD_MM))
            n_slices = int(min(999, (body[2] * scale + 60.0) // dz + 1))
            studies_out.append(
                {
                    "patient_index": patient,
                    "study_index": study_no,
                    "months_after_first": round(months, 2),
                    "body_scale": round(scale, 4),
                    "shift_mm": [round(float(v), 3) for v in shift],
                    "scan_start_mm": round(z_start, 3),
                }
            )
            for t in present:
                motion = rng.normal(0.0, 1.0, 3) * np.array(MOTION_SD_MM)
                x = t.centre[0] * scale + shift[0] + motion[0]
                y = t.centre[1] * scale + shift[1] + motion[1]
                z = t.centre[2] * scale - z_start + 30.0 + motion[2]
                cx, cy = size / 2.0 + x / spacing, size / 2.0 - 18.0 / spacing + y / spacing
                key = int(min(n_slices, max(1, round(z / dz) + 1)))
                long_mm = float(t.long_mm[k]) * float(rng.normal(1.0, SIZE_NOISE))  # type: ignore[arg-type]
                long_px = min(long_mm / spacing, 2.0 * min(cx, size - cx, cy, size - cy) - 2.0)
                short_px = long_px * t.short_ratio * float(rng.normal(1.0, SIZE_NOISE))
                ang = t.angle + float(rng.normal(0.0, 0.2))
                ux, uy = math.cos(ang), math.sin(ang)
                recist = tuple(
                    round(v, 3)
                    for v in (
                        cx - ux * long_px / 2,
                        cy - uy * long_px / 2,
                        cx + ux * long_px / 2,
                        cy + uy * long_px / 2,
                        cx + uy * short_px / 2,
                        cy - ux * short_px / 2,
                        cx - uy * short_px / 2,
                        cy + ux * short_px / 2,
                    )
                )
                norm = (
                    (t.centre[0] + body[0] / 2) / body[0],
                    (t.centre[1] + body[1] / 2) / body[1],
                    t.centre[2] / body[2],
                )
                loc = tuple(
                    round(min(1.0, max(0.0, v + float(rng.normal(0.0, sd)))), 5)
                    for v, sd in zip(norm, NORM_SD, strict=True)
                )
                half = int(round(30.0 / dz))
                record = LesionRecord(
                    file_name=slice_file_name(patient, study_no, 1, key),
                    patient_index=patient,
                    study_index=study_no,
                    series_id=1,
                    key_slice_index=key,
                    measurement_coordinates=csv_coordinates(recist),  # type: ignore[arg-type]
                    bounding_box=csv_coordinates(tuple(round(v, 3) for v in box_from_recist(recist))),  # type: ignore[arg-type]
                    lesion_diameters_px=tuple(round(v, 3) for v in recist_diameters(recist)),  # type: ignore[arg-type]
                    normalized_location=loc,  # type: ignore[arg-type]
                    coarse_lesion_type=-1 if split == 1 else t.lesion_type,
                    possibly_noisy=0,
                    slice_range=(max(1, key - half), min(n_slices, key + half)),
                    spacing_mm=(spacing, spacing, dz),
                    image_size=(size, size),
                    dicom_window=pick_window(rng),
                    patient_gender=gender,
                    patient_age=age + int(months // 12),
                    train_val_test=split,
                )
                scan = [round(cx * spacing, 3), round(cy * spacing, 3), round(z, 3)]
                patient_rows.append((record, f"{patient:06d}-T{t.index:02d}", scan))
        patient_rows.sort(key=lambda r: (r[0].study_index, r[0].key_slice_index, r[1]))
        rows.extend(patient_rows)
        for t in tracks:
            tid = f"{patient:06d}-T{t.index:02d}"
            tracks_out.append(
                {"track_id": tid, "patient_index": patient, "type": t.lesion_type, "long_mm": list(t.long_mm)}
            )
    rows = rows[:lesions]
    kept = {tid for _, tid, _ in rows}
    patients_kept = {r.patient_index for r, _, _ in rows}
    truth = {
        "synthetic": True,
        "metadata_only": True,
        "followup": True,
        "description": FOLLOWUP_DESCRIPTION,
        "generator": {"version": GENERATOR_VERSION, "seed": seed, "rows": len(rows), "mode": "followup"},
        "studies": [s for s in studies_out if s["patient_index"] in patients_kept],
        "tracks": [t for t in tracks_out if t["track_id"] in kept],
        "rows": [{"file_name": r.file_name, "track_id": tid, "scan_mm": scan} for r, tid, scan in rows],
    }
    return FollowupPlan([r for r, _, _ in rows], [tid for _, tid, _ in rows], truth)


def generate_followup_metadata(out_dir: Path, *, lesions: int = REAL_ROWS, seed: int = 0) -> SynthSummary:
    """Write a follow-up DL_info.csv (no images) and its synth_truth.json with the lesion tracks."""
    start = time.perf_counter()
    plan = plan_followup(lesions, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_dl_info(out / "DL_info.csv", plan.records)
    (out / "synth_truth.json").write_text(json.dumps(plan.truth) + "\n", encoding="utf-8")
    return SynthSummary(
        patients=len({r.patient_index for r in plan.records}),
        studies=len({(r.patient_index, r.study_index) for r in plan.records}),
        series=len({(r.patient_index, r.study_index) for r in plan.records}),
        key_slices=len({r.file_name for r in plan.records}),
        lesions_annotated=len(plan.records),
        lesions_unannotated=0,
        slices_written=0,
        seconds=round(time.perf_counter() - start, 2),
        out_dir=str(out),
    )
