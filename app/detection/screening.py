"""The possible-missed-lesions queue and how much of a known set of hidden lesions it finds."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.deeplesion.geometry import hits, iou_matrix, matches_any

log = logging.getLogger(__name__)
RECALL_IOUS: tuple[float, ...] = (0.3, 0.5)


@dataclass(frozen=True)
class QueueItem:
    """A pending prediction that matches no annotation: a candidate missed lesion."""

    file_name: str
    box: tuple[float, float, float, float]
    score: float
    # The calibrated probability that it is a real lesion, when the model carries a calibration.
    probability: float | None = None


@dataclass(frozen=True)
class HiddenLesion:
    """A lesion known to be present but deliberately left out of DL_info.csv (synthetic data)."""

    file_name: str
    box: tuple[float, float, float, float]


def rank_queue(items: Sequence[QueueItem]) -> list[QueueItem]:
    """Queue order: highest calibrated probability (else score) first, then score, then file name."""
    return sorted(
        items, key=lambda q: (-(q.score if q.probability is None else q.probability), -q.score, q.file_name)
    )


def hidden_recall(
    queue: Sequence[QueueItem], hidden: Sequence[HiddenLesion], *, top_n: int | None = None
) -> dict[str, Any]:
    """Share of hidden lesions matched (IoU >= 0.3 and >= 0.5) by an item in the top N of the queue."""
    n = len(hidden) if top_n is None else top_n
    top = rank_queue(queue)[:n]
    by_file: dict[str, list[QueueItem]] = {}
    for item in top:
        by_file.setdefault(item.file_name, []).append(item)
    found = dict.fromkeys(RECALL_IOUS, 0)
    for lesion in hidden:
        items = by_file.get(lesion.file_name, [])
        if not items:
            continue
        best = float(iou_matrix(np.array([lesion.box]), np.array([i.box for i in items])).max())
        for thr in RECALL_IOUS:
            found[thr] += best >= thr
    total = len(hidden)
    out: dict[str, Any] = {
        "total": total,
        "top_n": n,
        "queue_length": len(queue),
        "ranks_iou_0_3": queue_ranks(queue, hidden, 0.3),
    }
    for thr in RECALL_IOUS:
        key = f"{thr:.1f}".replace(".", "_")
        out[f"found_top_n_iou_{key}"] = found[thr]
        out[f"recall_top_n_iou_{key}"] = round(found[thr] / total, 4) if total else None
    return out


def queue_ranks(queue: Sequence[QueueItem], hidden: Sequence[HiddenLesion], iou: float) -> list[int | None]:
    """1-based queue position of the first item matching each hidden lesion at `iou`, None when none does."""
    ranked = rank_queue(queue)
    ranks: list[int | None] = []
    for lesion in hidden:
        rank = None
        for pos, item in enumerate(ranked, start=1):
            if (
                item.file_name == lesion.file_name
                and iou_matrix(np.array([lesion.box]), np.array([item.box]))[0, 0] >= iou
            ):
                rank = pos
                break
        ranks.append(rank)
    return ranks


def load_hidden_lesions(data_dir: Path | str) -> list[HiddenLesion] | None:
    """Deliberately unannotated lesions from synth_truth.json, or None when the file is absent."""
    from app.deeplesion.objectstore import data_file_exists, read_data_file

    if not data_file_exists(data_dir, "synth_truth.json"):
        return None
    data = json.loads(read_data_file(data_dir, "synth_truth.json").decode("utf-8"))
    entries = data.get("unannotated") if isinstance(data, dict) else None
    if entries is None and isinstance(data, dict):
        entries = [e for e in data.get("lesions", []) if not e.get("annotated", True)]
    out: list[HiddenLesion] = []
    for e in entries or []:
        box = e.get("box") or e.get("bounding_box")
        if e.get("file_name") and box and len(box) == 4:
            out.append(
                HiddenLesion(
                    str(e["file_name"]), (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
                )
            )
    return out


@dataclass(frozen=True)
class Calibration:
    """A monotone map from raw detector score to the probability that a detection is a real lesion.

    Isotonic regression (pool adjacent violators) fitted on val detections, read between its points
    linearly (as scikit-learn's IsotonicRegression does) and held flat beyond them.
    """

    scores: tuple[float, ...]
    probabilities: tuple[float, ...]

    def __call__(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw scores."""
        s = np.asarray(scores, dtype=np.float64)
        if not self.scores:
            return np.zeros_like(s)
        return np.interp(s, np.array(self.scores), np.array(self.probabilities))

    def as_dict(self) -> dict[str, list[float]]:
        """JSON-ready form (also stored in a model's metadata as `score_calibration`)."""
        return {
            "scores": [round(v, 6) for v in self.scores],
            "probabilities": [round(v, 6) for v in self.probabilities],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Read the as_dict form back, checking that it is monotone."""
        xs = tuple(float(v) for v in data["scores"])
        ys = tuple(float(v) for v in data["probabilities"])
        if len(xs) != len(ys) or any(b < a for a, b in zip(xs, xs[1:], strict=False)):
            raise ValueError("a calibration needs as many probabilities as ascending scores")
        if any(b < a for a, b in zip(ys, ys[1:], strict=False)) or not all(0.0 <= y <= 1.0 for y in ys):
            raise ValueError("calibrated probabilities must be ascending within 0..1")
        return cls(xs, ys)


def fit_calibration(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> Calibration:
    """Isotonic fit of labels (1 = real lesion) on scores; tied scores share one value."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if s.shape != y.shape:
        raise ValueError("scores and labels must have the same length")
    if s.size == 0:
        return Calibration((), ())
    xs, inverse = np.unique(s, return_inverse=True)
    sums = np.bincount(inverse, weights=y)
    counts = np.bincount(inverse).astype(np.float64)
    # Pool adjacent violators over the distinct scores, ascending: blocks of (sum, count, first, last).
    blocks: list[list[float]] = []
    for i in range(len(xs)):
        blocks.append([sums[i], counts[i], i, i])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            merged = blocks.pop()
            blocks[-1][0] += merged[0]
            blocks[-1][1] += merged[1]
            blocks[-1][3] = merged[3]
    # A run of equal values is flat: its first and last score carry it exactly (np.interp is linear
    # between them), so the stored calibration stays small.
    points: list[tuple[float, float]] = []
    for total, count, first, last in blocks:
        value = float(total / count)
        if len(points) >= 2 and points[-1][1] == value and points[-2][1] == value:
            points.pop()
        points.append((float(xs[int(first)]), value))
        if last != first:
            if len(points) >= 2 and points[-2][1] == value and points[-1][1] == value:
                points.pop()
            points.append((float(xs[int(last)]), value))
    return Calibration(tuple(p[0] for p in points), tuple(p[1] for p in points))


@dataclass(frozen=True)
class ScoredDetection:
    """One detection of a screened key slice with its labels against the truth."""

    file_name: str
    box: tuple[float, float, float, float]
    score: float
    matches_annotation: bool  # a hit on a lesion of the CSV: not a queue item
    hidden_index: int | None = None  # the left-out lesion it hits, if any


def label_detections(
    detections: Sequence[tuple[str, tuple[float, float, float, float], float]],
    annotated: dict[str, list[tuple[float, float, float, float]]],
    hidden: Sequence[HiddenLesion],
) -> list[ScoredDetection]:
    """Each detection, whether it hits an annotated lesion, and the left-out lesion it hits best, if any."""
    by_file: dict[str, list[int]] = {}
    for i, h in enumerate(hidden):
        by_file.setdefault(h.file_name, []).append(i)
    out: list[ScoredDetection] = []
    for file_name, box, score in detections:
        matched = matches_any(box, annotated.get(file_name, []))
        idx = by_file.get(file_name, [])
        best: int | None = None
        if idx:
            ious = iou_matrix([box], [hidden[i].box for i in idx])[0]
            j = int(np.argmax(ious))
            best = idx[j] if bool(hits(ious[j])) else None
        out.append(ScoredDetection(file_name, box, float(score), matched, best))
    return out


def queue_report(
    detections: Sequence[ScoredDetection], hidden_total: int, calibration: Calibration, threshold: float
) -> dict[str, Any]:
    """Precision and recall of left-out lesions of the queue: unmatched detections with P >= threshold."""
    queue = [d for d in detections if not d.matches_annotation]
    prob = calibration([d.score for d in queue]) if queue else np.zeros(0)
    kept = [d for d, p in zip(queue, prob, strict=True) if p >= threshold]
    right = sum(1 for d in kept if d.hidden_index is not None)
    found = len({d.hidden_index for d in kept if d.hidden_index is not None})
    return {
        "threshold": round(float(threshold), 4),
        "queue_length": len(kept),
        "queue_key_slices": len({d.file_name for d in kept}),
        "queue_hits_left_out": right,
        "precision": round(right / len(kept), 4) if kept else None,
        "left_out_found": found,
        "left_out_total": hidden_total,
        "recall": round(found / hidden_total, 4) if hidden_total else None,
    }


def choose_threshold(
    detections: Sequence[ScoredDetection], hidden_total: int, calibration: Calibration
) -> float:
    """The calibrated probability threshold whose queue has the best F1 on left-out lesions (val)."""
    queue = [d for d in detections if not d.matches_annotation]
    if not queue or not hidden_total:
        return 0.5
    best, best_f1 = 1.0, -1.0
    # Candidates: every calibrated value of a queue item; ties keep the higher (shorter queue).
    for t in sorted({float(p) for p in calibration([d.score for d in queue])}, reverse=True):
        r = queue_report(detections, hidden_total, calibration, t)
        p, rc = r["precision"] or 0.0, r["recall"] or 0.0
        f1 = 2 * p * rc / (p + rc) if p + rc else 0.0
        if f1 > best_f1 + 1e-12:
            best, best_f1 = t, f1
    return best


def _split_detections(
    data_dir: Path, detector: Any, splits: str, store_threshold: float, progress: bool
) -> tuple[list[ScoredDetection], int, int]:
    """Labelled detections of some splits (comma-separated), their left-out lesion and key slice counts."""
    from tqdm import tqdm

    from app.deeplesion.csvio import read_dl_info
    from app.deeplesion.store import SliceStore
    from app.detection.pipeline import truth_from_records

    store = SliceStore(data_dir)
    records = read_dl_info(data_dir / "DL_info.csv")
    truths = [
        t
        for split in splits.split(",")
        for t in truth_from_records(records, split.strip())
        if store.exists(t.file_name)
    ]
    names = {t.file_name for t in truths}
    hidden = [h for h in (load_hidden_lesions(data_dir) or []) if h.file_name in names]
    # Every lesion of the CSV counts as annotated, noisy or not: the review queue matches them all.
    annotated = {t.file_name: [g.box for g in t.lesions] for t in truths}
    raw: list[tuple[str, tuple[float, float, float, float], float]] = []
    for t in tqdm(truths, desc=f"screen {splits}", unit="slice", disable=not progress):
        for d in detector.predict(t.file_name, store, spacing_mm=t.spacing_mm, threshold=store_threshold):
            raw.append((t.file_name, d.box, d.score))
    return label_detections(raw, annotated, hidden), len(hidden), len(truths)


IDENTITY = Calibration((0.0, 1.0), (0.0, 1.0))


def screening_study(
    data_dir: Path,
    detector: Any,
    *,
    fit_split: str = "val",
    report_split: str = "test",
    report_dir: Path | None = None,
    store_threshold: float = 0.05,
    compare_raw: float = 0.3,
    progress: bool = False,
) -> dict[str, Any]:
    """Calibrate scores and choose the queue threshold on one split, report the queue on another.

    The labels need synth_truth.json: a detection is a real lesion when it hits an annotated or a
    deliberately left-out lesion; the queue is the detections hitting no annotated lesion. `report_dir`
    reports on another dataset (its `report_split`) than the one calibrated on.
    """
    data_dir = Path(data_dir)
    other = Path(report_dir) if report_dir is not None else data_dir
    for folder in dict.fromkeys([data_dir, other]):
        if load_hidden_lesions(folder) is None:
            raise ValueError(
                f"{folder} has no synth_truth.json: the queue's precision needs the left-out lesions"
            )
    fit, fit_hidden, fit_slices = _split_detections(data_dir, detector, fit_split, store_threshold, progress)
    cal = fit_calibration(
        [d.score for d in fit], [d.matches_annotation or d.hidden_index is not None for d in fit]
    )
    threshold = choose_threshold(fit, fit_hidden, cal)
    test, test_hidden, test_slices = _split_detections(
        other, detector, report_split, store_threshold, progress
    )
    raw_at = [s for s, p in zip(cal.scores, cal.probabilities, strict=True) if p >= threshold]
    return {
        "model_version": detector.model_version,
        "data_dir": str(data_dir),
        "report_dir": str(other),
        "match": "IoU >= 0.5 (the dataset's hit criterion)",
        "store_threshold": store_threshold,
        "calibration": cal.as_dict(),
        "threshold": round(threshold, 4),
        "threshold_raw_score": round(min(raw_at), 4) if raw_at else None,
        fit_split: {
            "key_slices": fit_slices,
            "detections": len(fit),
            **queue_report(fit, fit_hidden, cal, threshold),
        },
        report_split: {
            "key_slices": test_slices,
            "detections": len(test),
            **queue_report(test, test_hidden, cal, threshold),
        },
        f"{report_split}_at_raw_{compare_raw:g}": queue_report(test, test_hidden, IDENTITY, compare_raw),
    }


def queue_at_threshold(
    queue: Sequence[QueueItem], hidden: Sequence[HiddenLesion], calibration: Calibration, threshold: float
) -> dict[str, Any]:
    """queue_report for a stored queue (its items already match no annotation)."""
    labelled = label_detections([(q.file_name, q.box, q.score) for q in queue], {}, hidden)
    return queue_report(labelled, len(hidden), calibration, threshold)
