"""A tiny hand-made dataset for the review API tests: known lesions, types, splits and stored slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.deeplesion.csvio import write_dl_info
from app.deeplesion.geometry import box_from_recist, recist_diameters
from app.deeplesion.schema import LesionRecord
from app.deeplesion.store import write_hu_png

SIZE = 128
SPACING = (0.7, 0.7, 5.0)


def _lesion(
    file_name: str,
    recist: tuple[float, ...],
    lesion_type: int,
    *,
    noisy: int = 0,
    split: int = 3,
    slice_range: tuple[int, int] = (106, 110),
    age: int | None = 61,
    gender: str = "F",
    diameters: tuple[float, float] | None = None,
) -> LesionRecord:
    box = tuple(round(v, 3) for v in box_from_recist(recist))
    diam = diameters or tuple(round(v, 3) for v in recist_diameters(recist))
    return LesionRecord(
        file_name=file_name,
        patient_index=int(file_name[0:6]),
        study_index=int(file_name[7:9]),
        series_id=int(file_name[10:12]),
        key_slice_index=int(file_name[13:-4]),
        measurement_coordinates=recist,  # type: ignore[arg-type]
        bounding_box=box,  # type: ignore[arg-type]
        lesion_diameters_px=diam,  # type: ignore[arg-type]
        normalized_location=(0.4, 0.6, 0.5),
        coarse_lesion_type=lesion_type,
        possibly_noisy=noisy,
        slice_range=slice_range,
        spacing_mm=SPACING,
        image_size=(SIZE, SIZE),
        dicom_window=(-175.0, 275.0),
        patient_gender=gender,
        patient_age=age,
        train_val_test=split,
        # The real file spells an unknown age NaN (MULAN's reader does float() on it; an empty cell raises).
        raw=None if age is not None else {"Patient_age": "NaN"},
    )


def review_records() -> list[LesionRecord]:
    """Four key slices, six lesions: two lesion types on one slice, one noisy, one unlabelled train slice."""
    return [
        _lesion("000001_01_01_108.png", (30.0, 40.0, 70.0, 40.0, 50.0, 30.0, 50.0, 50.0), 4),
        _lesion("000001_01_01_108.png", (80.0, 80.0, 90.0, 80.0, 85.0, 76.0, 85.0, 84.0), 5, noisy=1),
        # Digits like the real file's: fractional end points, and diameters as the annotation tool measured
        # them, not what recomputing them from the end points gives (9.999, 6.0105). (The long one is 10 so
        # that the work list's 2-decimal size of it is exact: 7 mm.)
        _lesion(
            "000001_01_01_112.png",
            (20.537, 20.0204, 30.536, 20.0211, 25.5368, 17.0306, 25.5364, 23.0411),
            2,
            slice_range=(110, 114),
            diameters=(10.0, 6.0126),
        ),
        _lesion(
            "000001_02_01_020.png",
            (60.0, 60.0, 100.0, 60.0, 80.0, 50.0, 80.0, 70.0),
            4,
            split=2,
            slice_range=(18, 22),
        ),
        _lesion(
            "000002_01_01_050.png",
            (40.0, 40.0, 56.0, 40.0, 48.0, 34.0, 48.0, 46.0),
            -1,
            split=1,
            slice_range=(48, 52),
            gender="M",
            age=None,
        ),
        _lesion(
            "000002_01_01_050.png",
            (90.0, 90.0, 100.0, 90.0, 95.0, 86.0, 95.0, 94.0),
            -1,
            split=1,
            slice_range=(48, 52),
            gender="M",
            age=None,
        ),
    ]


# Series 000001_01_01 has 106..110 on disk (111..114 missing); 000001_02_01 has nothing on disk.
STORED = {"000001_01_01": list(range(106, 111)), "000002_01_01": [49, 50, 51]}


def build_review_dataset(root: Path) -> list[LesionRecord]:
    """Write DL_info.csv and the stored PNGs under root; return the records."""
    records = review_records()
    write_dl_info(root / "DL_info.csv", records)
    rng = np.random.default_rng(3)
    for folder, indices in STORED.items():
        for index in indices:
            hu = rng.integers(-1000, 400, size=(SIZE, SIZE)).astype(np.int16)
            write_hu_png(root / "Images_png" / folder / f"{index:03d}.png", hu)
    return records
