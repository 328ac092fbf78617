"""Dataset-level detector runs: FROC evaluation of a split (results are stored by app.review.evaluations)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.deeplesion.errors import DeepLesionError
from app.deeplesion.schema import LESION_TYPES, SPLITS, LesionRecord
from app.detection.batch import SliceRunner, SliceTask, detect_locally
from app.detection.decode import Detection
from app.detection.froc import GtLesion, ImageCase, evaluate_cases

log = logging.getLogger(__name__)

SPLIT_CODES: dict[str, int] = {name: code for code, name in SPLITS.items()}
AGAINST = ("original", "corrected")
# Every box counts in a FROC: the curve itself sweeps the score threshold.
EVAL_THRESHOLD = 0.0

# predict(file_name, spacing_mm) -> detections in original pixels, for the ORT detector or a torch model.
PredictFn = Callable[[str, Sequence[float]], list[Detection]]
# on_progress(done, total) after each key slice (and once with done=0 before the first); may raise to stop.
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class KeySliceTruth:
    """The reference lesions of one key slice for evaluation (from the CSV or the reviewers' state)."""

    file_name: str
    spacing_mm: tuple[float, float, float]
    lesions: list[GtLesion]


def split_code(split: str | None) -> int | None:
    """Train_Val_Test code of a split name (train/val/test), None for all; ValueError otherwise."""
    if split in (None, "", "all"):
        return None
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLIT_CODES)} or all")
    return SPLIT_CODES[split]


def group_key_slices(
    records: Iterable[LesionRecord], split: str | None = None
) -> dict[str, list[LesionRecord]]:
    """Records grouped by key slice File_name, in file order, optionally one split only."""
    code = split_code(split)
    out: dict[str, list[LesionRecord]] = {}
    for rec in records:
        if code is None or rec.train_val_test == code:
            out.setdefault(rec.file_name, []).append(rec)
    return out


def gt_from_record(rec: LesionRecord) -> GtLesion:
    """A CSV lesion as an evaluation reference, in the 0-based pixel frame the detector predicts in."""
    b = rec.box_px
    return GtLesion(
        box=(b[0], b[1], b[2], b[3]),
        noisy=rec.possibly_noisy == 1,
        lesion_type=rec.coarse_lesion_type,
        size_mm=rec.size_mm,
        slice_interval_mm=rec.spacing_mm[2],
    )


def truth_from_records(records: Iterable[LesionRecord], split: str | None) -> list[KeySliceTruth]:
    """Original-annotation references for every key slice of a split."""
    truths = []
    for file_name, recs in group_key_slices(records, split).items():
        sp = recs[0].spacing_mm
        truths.append(KeySliceTruth(file_name, (sp[0], sp[1], sp[2]), [gt_from_record(r) for r in recs]))
    return truths


def evaluate_truths(
    truths: Sequence[KeySliceTruth],
    predict: PredictFn,
    *,
    progress: bool = False,
    skip_missing: Callable[[str], bool] | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run `predict` on every key slice and score it with the DeepLesion FROC."""
    from tqdm import tqdm

    cases: list[ImageCase] = []
    missing: list[str] = []
    start = time.perf_counter()
    total = len(truths)
    if on_progress is not None:
        on_progress(0, total)
    for done, truth in enumerate(tqdm(truths, desc="evaluate", unit="slice", disable=not progress), 1):
        if skip_missing is not None and skip_missing(truth.file_name):
            missing.append(truth.file_name)
        else:
            dets = predict(truth.file_name, truth.spacing_mm)
            boxes = np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4)
            scores = np.array([d.score for d in dets], dtype=np.float64)
            cases.append(ImageCase(truth.file_name, truth.lesions, boxes, scores))
        if on_progress is not None:
            on_progress(done, total)
    result = evaluate_cases(cases, lesion_type_names=LESION_TYPES)
    result["missing_key_slices"] = len(missing)
    result["seconds"] = round(time.perf_counter() - start, 2)
    if missing:
        log.warning("%d key slices are not stored and were left out, e.g. %s", len(missing), missing[0])
    return result


def evaluate_dataset(
    data_dir: Path | str,
    detector: Any,
    *,
    split: str | None = "test",
    truths: Sequence[KeySliceTruth] | None = None,
    against: str = "original",
    threshold: float = EVAL_THRESHOLD,
    progress: bool = False,
    on_progress: ProgressFn | None = None,
    pool_with: Sequence[Path] = (),
    runner: SliceRunner | None = None,
) -> dict[str, Any]:
    """FROC of a Detector on a split; `truths` replaces the CSV; `pool_with` pools more datasets' split.

    `runner` runs the detector on the dataset's slices (default: in this process, e.g. a cluster's runner).
    """
    from app.deeplesion.csvio import parse_dl_info_bytes, read_dl_info
    from app.deeplesion.objectstore import normalize_data_dir, read_data_file
    from app.deeplesion.store import SliceStore

    if against not in AGAINST:
        raise ValueError(f"against must be one of {AGAINST}, got {against!r}")
    if pool_with and against != "original":
        raise ValueError("pooling datasets scores against their original CSVs only")
    # The dataset itself may be on object storage (a URL); pooled ones are local folders.
    dirs: list[Path | str] = [normalize_data_dir(data_dir), *(Path(d) for d in pool_with)]
    if truths is None:
        csv = read_data_file(dirs[0], "DL_info.csv")
        truths = truth_from_records(parse_dl_info_bytes(csv, source="DL_info.csv"), split)
    if runner is not None and pool_with:
        raise ValueError("a pooled evaluation runs in this process: --pool-with cannot run on a cluster")
    start = time.perf_counter()
    # Key slice names repeat across datasets, so a pooled run labels each with its folder.
    labelled: list[KeySliceTruth] = []
    # Per folder: the runner of its slices and each task's label.
    work: list[tuple[SliceRunner, list[tuple[str, SliceTask]]]] = []
    missing: set[str] = set()
    for i, folder in enumerate(dirs):
        store = SliceStore(folder)
        part = truths if i == 0 else truth_from_records(read_dl_info(Path(folder) / "DL_info.csv"), split)
        tasks: list[tuple[str, SliceTask]] = []
        for t in part:
            label = f"{Path(folder).name}/{t.file_name}" if pool_with else t.file_name
            labelled.append(KeySliceTruth(label, t.spacing_mm, t.lesions))
            if store.exists(t.file_name):
                tasks.append((label, SliceTask(t.file_name, t.spacing_mm)))
            else:
                missing.add(label)
        here = runner if runner is not None else detect_locally(detector, store, threshold)
        work.append((here, tasks))
    found = _run_all(work, len(labelled), len(missing), progress=progress, on_progress=on_progress)

    def predict(label: str, spacing: Sequence[float]) -> list[Detection]:
        return list(found[label])

    result = evaluate_truths(labelled, predict, skip_missing=missing.__contains__)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result.update(
        {
            "split": split or "all",
            "against": against,
            "model_version": detector.model_version,
            "provider": detector.provider,
            "synthetic_model": detector.synthetic,
            "data_dir": str(data_dir),
            "pooled_with": [str(d) for d in pool_with],
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    return result


def _run_all(
    work: Sequence[tuple[SliceRunner, list[tuple[str, SliceTask]]]],
    total: int,
    absent: int,
    *,
    progress: bool,
    on_progress: ProgressFn | None,
) -> dict[str, tuple[Detection, ...]]:
    """Each label's detections from its folder's runner; progress counts the absent key slices first."""
    from tqdm import tqdm

    found: dict[str, tuple[Detection, ...]] = {}
    with tqdm(total=total, desc="evaluate", unit="slice", disable=not progress) as bar:
        done = 0

        def advance() -> None:
            nonlocal done
            done += 1
            bar.update(1)
            if on_progress is not None:
                on_progress(done, total)

        if on_progress is not None:
            on_progress(0, total)
        for _ in range(absent):
            advance()
        for run, tasks in work:
            labels = {task.file_name: label for label, task in tasks}
            for res in run([task for _, task in tasks]):
                if res.error is not None:
                    # Stored but unreadable (a corrupt PNG): the FROC would silently leave it out.
                    raise DeepLesionError(res.error)
                found[labels[res.task.file_name]] = res.detections
                advance()
    return found
