"""The 18 columns of DL_info.csv and the typed record for one lesion row."""

from __future__ import annotations

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

HU_OFFSET = 32768
BOX_PADDING_PX = 5.0


@dataclass(frozen=True)
class LesionRecord:
    """One row of DL_info.csv, typed. Geometry is in pixels of the key slice (as in the file)."""

    file_name: str
    patient_index: int
    study_index: int
    series_id: int
    key_slice_index: int
    measurement_coordinates: tuple[float, float, float, float, float, float, float, float]
    bounding_box: tuple[float, float, float, float]
    lesion_diameters_px: tuple[float, float]
    normalized_location: tuple[float, float, float]
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

    @property
    def series_folder(self) -> str:
        """Folder name of the series, e.g. `000001_01_01`."""
        return self.file_name.rsplit("_", 1)[0]

    @property
    def long_axis_mm(self) -> float:
        """Long RECIST diameter in mm (x spacing, as the dataset's own tools use)."""
        return self.lesion_diameters_px[0] * self.spacing_mm[0]

    @property
    def short_axis_mm(self) -> float:
        """Short RECIST diameter in mm."""
        return self.lesion_diameters_px[1] * self.spacing_mm[0]

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
