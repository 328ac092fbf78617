"""Builders for the slice/health API tests: a tiny on-disk dataset with known HU and an imported key slice."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.config import Settings
from app.deeplesion.schema import LesionRecord
from app.deeplesion.store import write_hu_png

SERIES = "000001_01_01"
KEY_SLICE = f"{SERIES}_108.png"
UNIMPORTED_SERIES = "000002_01_01"
SPACING = (0.8, 0.8, 5.0)
DICOM_WINDOW = (-175.0, 275.0)
SIZE = 64


def known_hu(seed: int, size: int = SIZE) -> np.ndarray:
    """A slice covering air to dense bone, different per seed, so every window shows something."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1100, 1600, size * size).reshape(size, size)
    return (ramp + rng.integers(-40, 40, size=(size, size))).astype(np.int16)


def key_record(file_name: str = KEY_SLICE) -> LesionRecord:
    """A DL_info row for a key slice of the test series."""
    recist = (20.0, 20.0, 40.0, 40.0, 22.0, 38.0, 38.0, 22.0)
    return LesionRecord(
        file_name=file_name,
        patient_index=int(file_name[0:6]),
        study_index=int(file_name[7:9]),
        series_id=int(file_name[10:12]),
        key_slice_index=int(file_name[13:16]),
        measurement_coordinates=recist,
        bounding_box=(15.0, 15.0, 45.0, 45.0),
        lesion_diameters_px=(28.28, 22.63),
        normalized_location=(0.5, 0.5, 0.5),
        coarse_lesion_type=4,
        possibly_noisy=0,
        slice_range=(107, 109),
        spacing_mm=SPACING,
        image_size=(SIZE, SIZE),
        dicom_window=DICOM_WINDOW,
        patient_gender="F",
        patient_age=60,
        train_val_test=3,
    )


@dataclass
class SliceDataset:
    """Where the builder put things and the HU it wrote."""

    root: Path
    hu: dict[str, np.ndarray] = field(default_factory=dict)
    corrupt: str = f"{SERIES}_110.png"
    outside_marker: bytes = b"H6-SECRET-OUTSIDE-IMAGES-PNG"

    @property
    def settings(self) -> Settings:
        """Settings for an app on this dataset (SQLite file inside the data folder)."""
        return Settings(data_dir=self.root, model_path=None)


def build_slice_dataset(root: Path, *, import_db: bool = True, database_url: str = "") -> SliceDataset:
    """Write three slices, a corrupt PNG and a secret file outside Images_png; import one key slice."""
    data = SliceDataset(root=root)
    for index, seed in ((107, 1), (108, 2), (109, 3)):
        name = f"{SERIES}_{index:03d}.png"
        data.hu[name] = known_hu(seed)
        write_hu_png(root / "Images_png" / SERIES / f"{index:03d}.png", data.hu[name])
    name = f"{UNIMPORTED_SERIES}_050.png"
    data.hu[name] = known_hu(4)
    write_hu_png(root / "Images_png" / UNIMPORTED_SERIES / "050.png", data.hu[name])
    (root / "Images_png" / SERIES / "110.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a real png")
    (root / "secret.txt").write_bytes(data.outside_marker)
    if import_db:
        from app.db.session import make_engine, make_session_factory, upgrade_database
        from app.review.importer import import_records

        settings = Settings(data_dir=root, database_url=database_url)
        url = settings.resolved_database_url()
        upgrade_database(url)
        engine = make_engine(url)
        try:
            with make_session_factory(engine)() as session, session.begin():
                import_records(
                    session=session, records=[key_record()], stored_slices=lambda _f: [107, 108, 109]
                )
        finally:
            engine.dispose()
    return data
