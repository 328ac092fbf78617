"""A full-size DL_info.csv without images (32,735 rows in seconds), for import and work-list benchmarks."""

from __future__ import annotations

import bisect
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.deeplesion.csvio import write_dl_info
from app.deeplesion.geometry import box_from_recist, recist_diameters
from app.deeplesion.schema import LesionRecord, csv_coordinates, slice_file_name
from app.deeplesion.synth.generator import (
    BONE_WINDOWS,
    GENERATOR_VERSION,
    LUNG_WINDOWS,
    SOFT_WINDOWS,
    SynthSummary,
    patient_splits,
)
from app.deeplesion.synth.lesions import SIZE_MEDIAN_MM, SIZE_SIGMA, TYPE_WEIGHTS

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


class _Picker:
    """Weighted choice among fixed options by one uniform draw (rng.choice with p= is slow per call)."""

    def __init__(self, options: tuple[tuple[Any, float], ...]) -> None:
        self.values = [v for v, _ in options]
        total = sum(w for _, w in options)
        self.cum = list(itertools.accumulate(w / total for _, w in options))

    def __call__(self, rng: np.random.Generator) -> Any:
        return self.values[min(len(self.values) - 1, bisect.bisect_right(self.cum, rng.random()))]


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
    pick_type = _Picker(tuple(TYPE_WEIGHTS.items()))
    pick_split = _Picker(((1, 0.7), (2, 0.15), (3, 0.15)))
    pick_studies = _Picker(((1, 0.35), (2, 0.27), (3, 0.18), (4, 0.12), (5, 0.08)))
    pick_size = _Picker(META_SIZES)
    pick_fov = _Picker(tuple((float(f), 1.0) for f in (340, 360, 380, 400, 420, 440, 460, 480, 500)))
    pick_dz = _Picker(META_INTERVALS)
    pick_per_key = _Picker(LESIONS_PER_KEY)
    pick_window = {5: _Picker(LUNG_WINDOWS), 1: _Picker(BONE_WINDOWS), 0: _Picker(SOFT_WINDOWS)}
    records: list[LesionRecord] = []
    studies = series_count = key_count = 0
    patient = 0
    while len(records) < lesions:
        patient += 1
        split = splits.get(patient) or pick_split(rng)
        gender = "M" if rng.random() < 0.52 else "F"
        age = int(rng.integers(18, 90))
        for study in range(1, pick_studies(rng) + 1):
            studies += 1
            size = int(pick_size(rng))
            spacing = round(pick_fov(rng) / size, 6)
            dz = float(pick_dz(rng))
            n_slices = int(min(999, max(20, 660 / dz * rng.uniform(0.4, 1.0))))
            series_count += 1
            n_keys = int(rng.integers(1, 6))
            for key in sorted(int(k) + 1 for k in rng.choice(n_slices, size=n_keys, replace=False)):
                key_count += 1
                half = int(round(30.0 / dz))
                slice_range = (max(1, key - half), min(n_slices, key + half))
                per_key = int(pick_per_key(rng))
                ltype = int(pick_type(rng))
                window = pick_window.get(ltype, pick_window[0])(rng)
                for _ in range(per_key):
                    long_mm = min(250.0, max(2.0, float(rng.lognormal(math.log(SIZE_MEDIAN_MM), SIZE_SIGMA))))
                    cx = size * rng.uniform(0.25, 0.75)
                    cy = size * rng.uniform(0.25, 0.7)
                    # Keep the whole measurement inside the image.
                    long_px = min(long_mm / spacing, 2.0 * min(cx, size - cx, cy, size - cy) - 2.0)
                    short_px = long_px * rng.uniform(0.45, 0.95)
                    ang = rng.uniform(0, math.pi)
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
                    loc = (round(cx / size, 5), round(cy / size, 5), round(float(rng.uniform(0.05, 0.95)), 5))
                    records.append(
                        LesionRecord(
                            file_name=slice_file_name(patient, study, 1, key),
                            patient_index=patient,
                            study_index=study,
                            series_id=1,
                            key_slice_index=key,
                            # 0-based geometry, written in the file's 1-based frame.
                            measurement_coordinates=csv_coordinates(recist),  # type: ignore[arg-type]
                            bounding_box=csv_coordinates(  # type: ignore[arg-type]
                                tuple(round(v, 3) for v in box_from_recist(recist))
                            ),
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
