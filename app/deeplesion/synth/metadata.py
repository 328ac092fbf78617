"""A full-size DL_info.csv without images (32,735 rows in seconds), for import and work-list benchmarks."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from app.deeplesion.csvio import write_dl_info
from app.deeplesion.geometry import box_from_recist, recist_diameters
from app.deeplesion.schema import LesionRecord, slice_file_name
from app.deeplesion.synth.generator import (
    BONE_WINDOWS,
    GENERATOR_VERSION,
    LUNG_WINDOWS,
    SOFT_WINDOWS,
    SynthSummary,
    _choice,
    patient_splits,
)
from app.deeplesion.synth.lesions import TYPE_WEIGHTS

REAL_ROWS = 32735
# Slice intervals of the real file: 48.3% 1 mm, 48.9% 5 mm, the rest spread from 0.25 to 22.5 mm.
META_INTERVALS = (
    (1.0, 0.483),
    (5.0, 0.489),
    (2.0, 0.01),
    (2.5, 0.006),
    (0.625, 0.004),
    (1.25, 0.004),
    (3.0, 0.002),
    (0.8, 0.001),
    (10.0, 0.0005),
    (0.25, 0.0002),
    (22.5, 0.0001),
)
META_SIZES = ((512, 0.9988), (768, 0.0007), (1024, 0.0005))
# Noisy share of the real file: 35 of 32,735.
META_NOISY_RATE = 35 / 32735
# Rows per key slice: the real file has 32,735 lesions on 32,120 key slices.
LESIONS_PER_KEY = ((1, 0.978), (2, 0.019), (3, 0.003))


def generate_metadata_only(out_dir: Path, *, lesions: int = REAL_ROWS, seed: int = 0) -> SynthSummary:
    """Write DL_info.csv with `lesions` rows whose value distributions follow the real file; no images."""
    if lesions < 1:
        raise ValueError(f"lesions must be at least 1, got {lesions}")
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 32735])
    # Real ratios: 7.4 rows per patient, 3.1 per study.
    n_patients = max(1, int(round(lesions / 7.39)))
    splits = patient_splits(n_patients, seed)
    types = list(TYPE_WEIGHTS)
    tw = np.array([TYPE_WEIGHTS[t] for t in types])
    tw /= tw.sum()
    records: list[LesionRecord] = []
    studies = series_count = key_count = 0
    patient = 0
    while len(records) < lesions:
        patient += 1
        split = splits.get(patient) or int(rng.choice([1, 2, 3], p=[0.7, 0.15, 0.15]))
        gender = "M" if rng.random() < 0.52 else "F"
        age = int(rng.integers(18, 90))
        for study in range(1, int(rng.choice([1, 2, 3, 4, 5], p=[0.35, 0.27, 0.18, 0.12, 0.08])) + 1):
            studies += 1
            size = int(_choice(rng, META_SIZES))
            spacing = round(float(rng.choice([340, 360, 380, 400, 420, 440, 460, 480, 500])) / size, 6)
            dz = float(_choice(rng, META_INTERVALS))
            n_slices = int(min(999, max(20, 660 / dz * rng.uniform(0.4, 1.0))))
            series_count += 1
            n_keys = int(rng.integers(1, 6))
            for key in sorted(int(k) + 1 for k in rng.choice(n_slices, size=n_keys, replace=False)):
                key_count += 1
                half = int(round(30.0 / dz))
                slice_range = (max(1, key - half), min(n_slices, key + half))
                per_key = int(_choice(rng, LESIONS_PER_KEY))
                ltype = int(rng.choice(types, p=tw))
                windows = LUNG_WINDOWS if ltype == 5 else BONE_WINDOWS if ltype == 1 else SOFT_WINDOWS
                window = _choice(rng, windows)
                for _ in range(per_key):
                    long_mm = float(np.clip(rng.lognormal(math.log(19.0), 0.6), 2.0, 250.0))
                    long_px = long_mm / spacing
                    short_px = long_px * rng.uniform(0.45, 0.95)
                    ang = rng.uniform(0, math.pi)
                    cx = size * rng.uniform(0.25, 0.75)
                    cy = size * rng.uniform(0.25, 0.7)
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
                    recist = tuple(float(np.clip(v, 0.0, size - 1.0)) for v in recist)
                    loc = (round(cx / size, 5), round(cy / size, 5), round(float(rng.uniform(0.05, 0.95)), 5))
                    records.append(
                        LesionRecord(
                            file_name=slice_file_name(patient, study, 1, key),
                            patient_index=patient,
                            study_index=study,
                            series_id=1,
                            key_slice_index=key,
                            measurement_coordinates=recist,  # type: ignore[arg-type]
                            bounding_box=tuple(round(v, 3) for v in box_from_recist(recist)),  # type: ignore[arg-type]
                            lesion_diameters_px=tuple(round(v, 3) for v in recist_diameters(recist)),  # type: ignore[arg-type]
                            normalized_location=loc,
                            coarse_lesion_type=-1 if split == 1 else ltype,
                            possibly_noisy=int(rng.random() < META_NOISY_RATE),
                            slice_range=slice_range,
                            spacing_mm=(spacing, spacing, dz),
                            image_size=(size, size),
                            dicom_window=window,
                            patient_gender=gender,
                            patient_age=age + study // 3,
                            train_val_test=split,
                        )
                    )
                    if len(records) >= lesions:
                        break
                if len(records) >= lesions:
                    break
            if len(records) >= lesions:
                break
    write_dl_info(out / "DL_info.csv", records)
    truth = {
        "synthetic": True,
        "metadata_only": True,
        "description": "SYNTHETIC DL_info.csv without images, for import and work-list benchmarks; "
        "not patient data.",
        "generator": {"version": GENERATOR_VERSION, "seed": seed, "rows": len(records)},
    }
    (out / "synth_truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return SynthSummary(
        patients=len({r.patient_index for r in records}),
        studies=studies,
        series=series_count,
        key_slices=len({r.file_name for r in records}),
        lesions_annotated=len(records),
        lesions_unannotated=0,
        slices_written=0,
        seconds=round(time.perf_counter() - start, 2),
        out_dir=str(out),
    )
