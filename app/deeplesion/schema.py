"""The 18 columns of DL_info.csv and the typed record for one lesion row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

COLUMNS: tuple[str, ...] = (
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
)

LESION_TYPES: dict[int, str] = {
    -1: "unlabelled",
    1: "bone",
    2: "abdomen",
    3: "mediastinum",
    4: "liver",
    5: "lung",
    6: "kidney",
    7: "soft tissue",
    8: "pelvis",
}

SPLITS: dict[int, str] = {1: "train", 2: "val", 3: "test"}
# The split filter that takes every split (evaluation, screening, export).
ALL_SPLITS = "all"

HU_OFFSET = 32768
BOX_PADDING_PX = 5.0

# DL_info.csv counts pixels from 1 (the authors' readers do `boxes -= 1`); the app, its API and COCO use a
# 0-based pixel frame. These are the only places that cross between the two.
CSV_COORDINATE_ORIGIN = 1.0
# Decimal digits of every coordinate, in both frames: more than the real file holds (4), and rounding on each
# crossing makes the trip exact: an app value written to the CSV and read back is the very same float.
CSV_COORDINATE_DIGITS = 6

# Optional columns a corrected export may append (and the importer reads back): who did what, and why.
EXTRA_COLUMNS: tuple[str, ...] = (
    "Lesion_id",
    "Origin",
    "Review_state",
    "Flag_reason",
    "Flag_note",
    "Confirmed_by",
    "Reviewer",
    "Reviewed_at",
    "Model_version",
    "Score",
    "Track_id",  # follow-up: the same lesion across the patient's studies (app/review/followup.py)
)

# COCO category ids must be positive: the dataset's types 1..8 keep their number, unlabelled (-1) becomes 9.
COCO_UNLABELLED_CATEGORY = 9


def coco_category(lesion_type: int) -> int:
    """The COCO category id of a coarse lesion type."""
    return COCO_UNLABELLED_CATEGORY if lesion_type == -1 else lesion_type


def pixel_coordinates(values: Sequence[float]) -> tuple[float, ...]:
    """DL_info.csv coordinates (1-based) in the app's 0-based pixel frame."""
    return tuple(round(float(v) - CSV_COORDINATE_ORIGIN, CSV_COORDINATE_DIGITS) for v in values)


def csv_coordinates(values: Sequence[float]) -> tuple[float, ...]:
    """0-based pixel coordinates as DL_info.csv writes them (1-based)."""
    return tuple(round(float(v) + CSV_COORDINATE_ORIGIN, CSV_COORDINATE_DIGITS) for v in values)


@dataclass(frozen=True)
class LesionRecord:
    """One row of DL_info.csv, typed, values as in the file (1-based coordinates: use box_px / recist_px).

    A lesion known only by its box (no RECIST measured) has measurement_coordinates and lesion_diameters_px
    None, written as NaN; a location component that is not known is None, written as NaN.
    """

    file_name: str
    patient_index: int
    study_index: int
    series_id: int
    key_slice_index: int
    measurement_coordinates: tuple[float, float, float, float, float, float, float, float] | None
    bounding_box: tuple[float, float, float, float]
    lesion_diameters_px: tuple[float, float] | None
    normalized_location: tuple[float | None, float | None, float | None]
    coarse_lesion_type: int
    possibly_noisy: int
    slice_range: tuple[int, int]
    spacing_mm: tuple[float, float, float]
    image_size: tuple[int, int]
    dicom_window: tuple[float, float]
    patient_gender: str
    patient_age: int | None
    train_val_test: int
    # The cell texts as read, so that writing an untouched record reproduces the file byte for byte.
    raw: dict[str, str] | None = field(default=None, compare=False, repr=False, hash=False)
    # Cells of the optional EXTRA_COLUMNS, when the file has them (a corrected export with extras).
    extras: dict[str, str] | None = field(default=None, compare=False, repr=False, hash=False)

    @property
    def box_px(self) -> tuple[float, float, float, float]:
        """The bounding box in the app's 0-based pixel frame."""
        return pixel_coordinates(self.bounding_box)  # type: ignore[return-value]

    @property
    def recist_px(self) -> tuple[float, ...] | None:
        """The RECIST end points in the 0-based pixel frame; None when the lesion was not measured."""
        if self.measurement_coordinates is None:
            return None
        return pixel_coordinates(self.measurement_coordinates)

    @property
    def series_folder(self) -> str:
        """Folder name of the series, e.g. `000001_01_01`."""
        return self.file_name.rsplit("_", 1)[0]

    @property
    def _diameters(self) -> tuple[float, float]:
        """Measured diameters; for a box only, the sides of the box without its padding."""
        if self.lesion_diameters_px is not None:
            return self.lesion_diameters_px
        from app.deeplesion.geometry import box_diameters  # geometry imports this module

        return box_diameters(self.bounding_box)

    @property
    def long_axis_mm(self) -> float:
        """Long RECIST diameter in mm (x spacing, as the dataset's own tools use)."""
        return self._diameters[0] * self.spacing_mm[0]

    @property
    def short_axis_mm(self) -> float:
        """Short RECIST diameter in mm."""
        return self._diameters[1] * self.spacing_mm[0]

    @property
    def size_mm(self) -> float:
        """Mean of the two diameters in mm, the size used by the evaluation breakdowns."""
        return (self.long_axis_mm + self.short_axis_mm) / 2.0


def series_folder_name(patient: int, study: int, series: int) -> str:
    """Folder of a series in Images_png, e.g. `000001_01_01`."""
    return f"{patient:06d}_{study:02d}_{series:02d}"


def slice_file_name(patient: int, study: int, series: int, slice_index: int) -> str:
    """DL_info.csv style file name of a slice, e.g. `000001_01_01_109.png`."""
    return f"{series_folder_name(patient, study, series)}_{slice_index:03d}.png"
