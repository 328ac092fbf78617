"""A small phantom dataset for the cluster tests and bench_ray: many key slices, bright round lesions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.deeplesion.csvio import write_dl_info
from app.deeplesion.geometry import box_from_recist, recist_diameters
from app.deeplesion.schema import LesionRecord
from app.deeplesion.store import write_hu_png

SPACING = (0.8, 0.8, 2.0)
# Slices stored around each key slice: the detector reads the key slice and its neighbours.
CONTEXT = 2


def _record(
    file_name: str, center: tuple[float, float], radius: float, size: int, split: int
) -> LesionRecord:
    cx, cy = center
    recist = (cx - radius, cy, cx + radius, cy, cx, cy - radius * 0.8, cx, cy + radius * 0.8)
    key = int(file_name[13:-4])
    return LesionRecord(
        file_name=file_name,
        patient_index=int(file_name[0:6]),
        study_index=int(file_name[7:9]),
        series_id=int(file_name[10:12]),
        key_slice_index=key,
        measurement_coordinates=recist,
        bounding_box=tuple(round(v, 3) for v in box_from_recist(recist)),  # type: ignore[arg-type]
        lesion_diameters_px=tuple(round(v, 3) for v in recist_diameters(recist)),  # type: ignore[arg-type]
        normalized_location=(0.5, 0.5, 0.5),
        coarse_lesion_type=4,
        possibly_noisy=0,
        slice_range=(key - CONTEXT, key + CONTEXT),
        spacing_mm=SPACING,
        image_size=(size, size),
        dicom_window=(-175.0, 275.0),
        patient_gender="F",
        patient_age=60,
        train_val_test=split,
    )


def build_cluster_dataset(root: Path, *, key_slices: int = 24, size: int = 256, seed: int = 0) -> int:
    """Write DL_info.csv and the PNGs: `key_slices` key slices (2 lesions each, one left out of the CSV)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    records = []
    per_series = 4
    for i in range(key_slices):
        patient, series = 1 + i // (per_series * 2), 1 + (i // per_series) % 2
        key = 10 + 8 * (i % per_series)
        file_name = f"{patient:06d}_01_{series:02d}_{key:03d}.png"
        lesions = []
        for _ in range(2):
            r = float(rng.uniform(size * 0.03, size * 0.07))
            c = (float(rng.uniform(size * 0.3, size * 0.7)), float(rng.uniform(size * 0.3, size * 0.7)))
            lesions.append((c, r))
        # Train, val and test key slices alike: evaluate and screen both find work in every split.
        records.append(_record(file_name, lesions[0][0], lesions[0][1], size, 1 + i % 3))
        folder = root / "Images_png" / file_name[:12]
        body = ((xx - size / 2) / (size * 0.42)) ** 2 + ((yy - size / 2) / (size * 0.33)) ** 2 <= 1
        for index in range(key - CONTEXT, key + CONTEXT + 1):
            hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 12, (size, size))
            for (cx, cy), r in lesions:
                hu[(xx - cx) ** 2 + (yy - cy) ** 2 <= r**2] = 110.0 + rng.normal(0, 8)
            write_hu_png(folder / f"{index:03d}.png", np.clip(hu, -1024, 3071).astype(np.int16))
    write_dl_info(root / "DL_info.csv", records)
    return key_slices
