"""The detector over many slices: the one unit of work that a local pass and a cluster pass both run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from app.deeplesion.errors import DeepLesionError
from app.detection.decode import Detection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SliceTask:
    """One slice to run the detector on (a key slice, or any stored slice of a sub-volume)."""

    file_name: str
    spacing_mm: tuple[float, float, float | None]


@dataclass(frozen=True)
class SliceResult:
    """The detector's boxes on one slice, or why the slice could not be read (not stored, corrupt)."""

    task: SliceTask
    detections: tuple[Detection, ...] = ()
    error: str | None = None


# Runs the detector over tasks and yields one result per task, in any order; a local loop or a cluster.
SliceRunner = Callable[[Sequence[SliceTask]], Iterator[SliceResult]]


def detect_one(detector: Any, store: Any, task: SliceTask, threshold: float) -> SliceResult:
    """The detector on one slice; a slice that cannot be read becomes an error result, not an exception."""
    try:
        dets = detector.predict(task.file_name, store, spacing_mm=task.spacing_mm, threshold=threshold)
    except DeepLesionError as exc:  # not stored, or a corrupt PNG
        log.info("skipping %s: %s", task.file_name, exc)
        return SliceResult(task, (), str(exc))
    return SliceResult(task, tuple(dets))


def detect_locally(detector: Any, store: Any, threshold: float) -> SliceRunner:
    """A SliceRunner that runs `detector` in this process, one slice after another."""

    def run(tasks: Sequence[SliceTask]) -> Iterator[SliceResult]:
        for task in tasks:
            yield detect_one(detector, store, task, threshold)

    return run


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most `size` items (the unit of a database write)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
