"""The shared unit of detector work: one result per slice, unreadable slices as errors, batches."""

from __future__ import annotations

from typing import Any

import pytest

from app.deeplesion.errors import DeepLesionError
from app.detection.batch import SliceTask, batched, detect_locally
from app.detection.decode import Detection


class FakeDetector:
    """Boxes whose score encodes the slice; a name containing 'gone' is not stored."""

    def predict(self, file_name: str, store: Any, *, spacing_mm: Any, threshold: float) -> list[Detection]:
        if "gone" in file_name:
            raise DeepLesionError(f"{file_name} is not stored")
        return [Detection((1.0, 2.0, 3.0, 4.0), float(len(file_name)) / 100)]


def test_local_runner_gives_one_result_per_task_and_turns_unreadable_slices_into_errors() -> None:
    tasks = [SliceTask("a_01_01_001.png", (0.7, 0.7, 2.0)), SliceTask("gone_01_01_002.png", (0.7, 0.7, None))]
    results = list(detect_locally(FakeDetector(), store=None, threshold=0.1)(tasks))
    assert [r.task for r in results] == tasks
    assert results[0].error is None and results[0].detections[0].score == pytest.approx(0.15)
    assert results[1].detections == () and "not stored" in (results[1].error or "")


def test_batched_keeps_order_and_rejects_empty_batches() -> None:
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="at least 1"):
        list(batched([1], 0))
