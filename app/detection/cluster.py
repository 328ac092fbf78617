"""The detector on a Ray cluster: Ray Data over SliceTasks, a pool of ONNX Runtime actors (`--ray ADDRESS`).

Ray is imported only when a cluster runner runs: nothing else in the app needs it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.detection.batch import SliceResult, SliceRunner, SliceTask, detect_one
from app.detection.decode import Detection

log = logging.getLogger(__name__)

# Slices per actor call: big enough that Ray's per-call cost is small next to ~50 ms of inference per slice.
DEFAULT_BATCH = 8
RAY_MISSING = "screening on a Ray cluster needs Ray: pip install 'lesion-review[cluster]'"


def encode_tasks(tasks: Sequence[SliceTask]) -> list[dict[str, Any]]:
    """Tasks as Ray Data rows (an unknown slice interval is NaN: a numpy column has no None)."""
    return [
        {
            "file_name": t.file_name,
            "sx": float(t.spacing_mm[0]),
            "sy": float(t.spacing_mm[1]),
            "sz": math.nan if t.spacing_mm[2] is None else float(t.spacing_mm[2]),
        }
        for t in tasks
    ]


def _task(file_name: Any, sx: Any, sy: Any, sz: Any) -> SliceTask:
    z = float(sz)
    return SliceTask(str(file_name), (float(sx), float(sy), None if math.isnan(z) else z))


def encode_detections(detections: Sequence[Detection]) -> str:
    """Boxes, scores and RECIST proposals as JSON text: Python's float repr reads back to the same float."""
    return json.dumps([[*d.box, d.score, *(d.recist or ())] for d in detections])


def decode_detections(text: str) -> tuple[Detection, ...]:
    """The inverse of encode_detections (a row of 5 numbers has no RECIST proposal, one of 13 has)."""
    return tuple(
        Detection((r[0], r[1], r[2], r[3]), r[4], tuple(r[5:13]) if len(r) > 5 else None)
        for r in json.loads(text)
    )


class SliceDetectorActor:
    """One Ray actor: loads the model once, opens the dataset's store once, runs batches of slices."""

    def __init__(
        self,
        model_path: str,
        data_dir: str,
        threshold: float,
        storage_options: dict[str, Any] | None,
        device: str,
        threads: int,
    ) -> None:
        from app.deeplesion.objectstore import configure_backend, is_url
        from app.deeplesion.store import SliceStore
        from app.detection.runtime import Detector

        if is_url(data_dir):
            # The driver's storage options (endpoint, credentials), not whatever this node's environment has.
            configure_backend(data_dir, storage_options=storage_options)
        self.store = SliceStore(data_dir)
        self.detector = Detector.load(model_path, device=device, threads=threads)
        self.threshold = threshold

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Detections (JSON text) or the error of each slice of the batch."""
        found: list[str] = []
        errors: list[str] = []
        for row in zip(batch["file_name"], batch["sx"], batch["sy"], batch["sz"], strict=True):
            res = detect_one(self.detector, self.store, _task(*row), self.threshold)
            found.append(encode_detections(res.detections))
            errors.append("" if res.error is None else res.error)
        return {
            **batch,
            "detections": np.array(found, dtype=object),
            "error": np.array(errors, dtype=object),
            "model_version": np.array([self.detector.model_version] * len(found), dtype=object),
        }


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RuntimeError(f"{RAY_MISSING} ({exc})") from exc
    # Ray Data prints its INFO lines (execution plans, progress) to stderr, where they would interleave with
    # our progress bar; they stay in Ray's session log file, and its warnings still reach the terminal.
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(max(handler.level, logging.WARNING))
    return ray


def _connect(ray: Any, address: str) -> None:
    # Ray reports usage to its makers unless told not to: a clinical data app does not phone home.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        try:
            # The driver's own logs only: Ray's worker log lines would interleave with the progress bar.
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, TimeoutError, ValueError) as exc:
            raise RuntimeError(f"cannot join the Ray cluster at {address}: {exc}") from exc


def ray_runner(
    address: str,
    model_path: Path | str,
    data_dir: Path | str,
    threshold: float,
    *,
    storage_options: dict[str, Any] | None = None,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    batch_size: int = DEFAULT_BATCH,
    device: str = "cpu",
    model_version: str | None = None,
) -> SliceRunner:
    """A SliceRunner on the Ray cluster at `address`: Ray Data `map_batches` with a pool of detector actors.

    Every node needs the app, the model file at `model_path` and access to `data_dir` (a shared folder, or an
    object-store URL read with `storage_options`). `actors` defaults to the cluster's CPUs / cpus_per_actor.
    With `model_version`, a node whose model file is another version fails the run (its boxes would be
    stored under the wrong version).
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    model = str(Path(model_path).resolve())
    data = str(data_dir) if isinstance(data_dir, str) else str(Path(data_dir).resolve())

    def run(tasks: Sequence[SliceTask]) -> Iterator[SliceResult]:
        if not tasks:
            return
        ray = _ray()
        _connect(ray, address)
        size = actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_actor)
        size = min(size, len(tasks))
        # At least one block per actor, so that every actor gets work even from a short list.
        blocks = max(size, math.ceil(len(tasks) / batch_size))
        per_call = min(batch_size, math.ceil(len(tasks) / blocks))
        by_name = {t.file_name: t for t in tasks}
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items(encode_tasks(tasks), override_num_blocks=blocks)
        ds = ds.map_batches(
            SliceDetectorActor,
            fn_constructor_kwargs={
                "model_path": model,
                "data_dir": data,
                "threshold": float(threshold),
                "storage_options": storage_options,
                "device": device,
                "threads": cpus_per_actor,
            },
            batch_size=per_call,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=cpus_per_actor,
        )
        log.info("%d slices on %d Ray actors at %s", len(tasks), size, address)
        for row in ds.iter_rows():
            if model_version is not None and str(row["model_version"]) != model_version:
                raise RuntimeError(
                    f"a Ray node's {model} is model {row['model_version']}, the driver's is {model_version}"
                )
            task = by_name[str(row["file_name"])]
            error = str(row["error"]) or None
            yield SliceResult(task, () if error else decode_detections(str(row["detections"])), error)

    return run
