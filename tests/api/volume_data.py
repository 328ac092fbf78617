"""A fixed fake detector for the volume screening tests: known boxes on known slices of the review dataset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.deeplesion.errors import SliceNotFoundError
from app.detection.decode import Detection

# Series 000001_01_01 stores 106..110 (key slices 108: context 106..110, 112: 110..114); 000002_01_01 stores
# 49..51 (key slice 50). The lesion of 108 is the box about (25, 25, 75, 55), 28 mm long at 5 mm slices.
NEW_A = (90.0, 10.0, 110.0, 30.0)  # away from every lesion: a candidate on 106..108, largest on 107
NEW_A_BIG = (88.0, 8.0, 112.0, 32.0)
ON_LESION = (40.0, 35.0, 60.0, 45.0)  # inside the marked lesion's box, on 109..110: not queued
NEW_C = (10.0, 100.0, 30.0, 120.0)  # series 000002_01_01, 49..51
BOXES: dict[str, list[tuple[tuple[float, float, float, float], float]]] = {
    "000001_01_01_106.png": [(NEW_A, 0.6)],
    "000001_01_01_107.png": [(NEW_A_BIG, 0.8)],
    "000001_01_01_108.png": [(NEW_A, 0.7)],
    "000001_01_01_109.png": [(ON_LESION, 0.9)],
    "000001_01_01_110.png": [(ON_LESION, 0.85), ((5.0, 5.0, 9.0, 9.0), 0.1)],  # the second under threshold
    "000002_01_01_049.png": [(NEW_C, 0.4)],
    "000002_01_01_050.png": [(NEW_C, 0.5)],
    "000002_01_01_051.png": [(NEW_C, 0.45)],
}
MODEL_VERSION = "fake-volume-1"


class FakeDetector:
    """Answers BOXES for a slice that is stored, SliceNotFoundError for one that is not."""

    model_version = MODEL_VERSION
    provider = "fake"
    synthetic = True
    calibration = None

    def __init__(self) -> None:
        self.calls: list[str] = []

    def predict(
        self, file_name: str, store: Any, *, spacing_mm: Sequence[float], threshold: float = 0.05
    ) -> list[Detection]:
        """The fixed boxes of a slice at or above the threshold."""
        self.calls.append(file_name)
        if not store.exists(file_name):
            raise SliceNotFoundError(file_name, "not stored")
        return [Detection(b, s) for b, s in BOXES.get(file_name, []) if s >= threshold]

    def info(self) -> dict[str, object]:
        """What /api/health reports."""
        return {"loaded": True, "provider": self.provider, "model_version": self.model_version,
                "synthetic_model": True, "error": None}  # fmt: skip
