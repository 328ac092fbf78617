"""The standard DeepLesion FROC, computed as the dataset authors' scripts compute it.

Follows 3DCE `rcnn/utils/evaluation.py` and MULAN `detection_eval.py` (rsummers11/CADLab), checked by
tests/unit/test_froc_parity.py against a line-by-line reimplementation of both:
- ground truth: noisy lesions are dropped (a detection on one is a false positive) and a key slice left
  with no lesion is dropped with its detections (MULAN's `load_split_index` never loads it);
- ranking: key slices in file-name order (MULAN sorts them), their detections concatenated, then
  `argsort(scores)[::-1]`, so tied scores rank later input first (with a stable sort: the authors'
  default quicksort leaves ties in an unspecified order);
- a detection whose IoU (inclusive pixels, >= 0.5: app.deeplesion.geometry) reaches some lesion of its
  slice hits every such lesion not yet hit and is not a false positive, even when they were all hit;
  any other detection is a false positive; every detection adds a point to the curve;
- reading the curve at r false positives per image: "mulan" (default) interpolates linearly as SciPy's
  `interp1d` does today (numpy.interp: on a run of equal FP counts it reads the last point) and holds the
  last sensitivity past the end; "3dce" is SciPy's extrapolating `interp1d` (the first point of such a
  run, linear extrapolation at both ends), which reads lower on small sets. Where MULAN's script raises
  (r below the first point: one slice whose top detection is a false positive) this reads 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from app.deeplesion.geometry import HIT_IOU, iou_matrix

FP_RATES: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
IOU_THRESHOLD = HIT_IOU
SIZE_BINS: tuple[str, ...] = ("<10mm", "10-30mm", ">30mm")
INTERVAL_BINS: tuple[str, ...] = ("<=2mm", ">2mm")
READINGS: tuple[str, ...] = ("mulan", "3dce")
DEFAULT_READING = "mulan"


@dataclass(frozen=True)
class GtLesion:
    """One annotated lesion of an image, with what the breakdowns need."""

    box: tuple[float, float, float, float]
    noisy: bool = False
    lesion_type: int = -1
    size_mm: float = 0.0
    slice_interval_mm: float = 0.0


@dataclass
class ImageCase:
    """One evaluated key slice: its lesions and the detector's scored boxes."""

    key: str
    lesions: list[GtLesion]
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,)))


@dataclass(frozen=True)
class FrocCurve:
    """Ranked curve: cumulative sensitivity and false positives per image after each detection."""

    sensitivity: np.ndarray
    fp_per_image: np.ndarray
    lesions: int
    images: int

    def sens_at(self, rates: Sequence[float] = FP_RATES, reading: str = DEFAULT_READING) -> list[float]:
        """Sensitivity at each false-positive rate, read as MULAN ("mulan") or 3DCE ("3dce") reads it."""
        if reading not in READINGS:
            raise ValueError(f"unknown FROC reading {reading!r}; use one of {', '.join(READINGS)}")
        r = np.asarray(rates, dtype=np.float64)
        fp, sens = self.fp_per_image, self.sensitivity
        if len(fp) == 0:
            return [0.0] * len(r)
        if reading == "3dce":
            return [float(v) for v in _interp1d_extrapolate(fp, sens, r)]
        inside = np.interp(r, fp, sens)
        out = np.where(r > fp[-1], sens[-1], np.where(r < fp[0], 0.0, inside))
        return [float(v) for v in out]


def _interp1d_extrapolate(x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    """SciPy's interp1d(x, y, fill_value="extrapolate") for sorted x: its _call_linear, step by step."""
    idx = np.clip(np.searchsorted(x, x_new), 1, len(x) - 1).astype(int)
    lo, hi = idx - 1, idx
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (y[hi] - y[lo]) / (x[hi] - x[lo])
        return np.asarray(slope * (x_new - x[lo]) + y[lo], dtype=np.float64)


def scored_cases(cases: Sequence[ImageCase]) -> list[ImageCase]:
    """The key slices the FROC scores: those with a lesion that is not noisy, in file-name order."""
    kept = [c for c in cases if any(not g.noisy for g in c.lesions)]
    return sorted(kept, key=lambda c: c.key)


def froc_curve(
    cases: Sequence[ImageCase],
    iou_threshold: float = IOU_THRESHOLD,
    counts: Callable[[GtLesion], bool] | None = None,
) -> FrocCurve:
    """Build the FROC curve; `counts` picks the lesions in the denominator (breakdowns), default all."""
    select = counts or (lambda _g: True)
    kept = scored_cases(cases)
    gts = [[g for g in c.lesions if not g.noisy] for c in kept]
    scores = [np.asarray(c.scores, dtype=np.float64).reshape(-1) for c in kept]
    img = np.concatenate([np.full(len(s), i, dtype=int) for i, s in enumerate(scores)] or [np.zeros(0, int)])
    det = np.concatenate([np.arange(len(s)) for s in scores] or [np.zeros(0, int)])
    flat = np.concatenate(scores or [np.zeros(0)])
    order = np.argsort(flat, kind="stable")[::-1]
    ious = [
        iou_matrix(np.asarray(c.boxes).reshape(-1, 4), np.array([g.box for g in gt]).reshape(-1, 4))
        for c, gt in zip(kept, gts, strict=True)
    ]
    hit = [np.zeros(len(gt), dtype=bool) for gt in gts]
    counted = [np.array([select(g) for g in gt], dtype=bool) for gt in gts]
    total = int(sum(int(c.sum()) for c in counted))
    n_hits = n_fp = 0
    sens: list[float] = []
    fpi: list[float] = []
    n_img = max(len(kept), 1)
    for k in order:
        ci, di = int(img[k]), int(det[k])
        matches = ious[ci][di] >= iou_threshold
        if matches.any():
            n_hits += int((matches & counted[ci] & ~hit[ci]).sum())
            hit[ci] |= matches
        else:
            n_fp += 1
        sens.append(n_hits / total if total else 0.0)
        fpi.append(n_fp / n_img)
    return FrocCurve(np.array(sens), np.array(fpi), total, len(kept))


def size_bin(size_mm: float) -> str:
    """Size group of a lesion by its mean diameter: <10, 10-30 (inclusive), >30 mm."""
    if size_mm < 10.0:
        return SIZE_BINS[0]
    return SIZE_BINS[1] if size_mm <= 30.0 else SIZE_BINS[2]


def interval_bin(slice_interval_mm: float) -> str:
    """Slice-interval group: <= 2 mm (thin) or > 2 mm (thick)."""
    return INTERVAL_BINS[0] if slice_interval_mm <= 2.0 else INTERVAL_BINS[1]


def evaluate_cases(
    cases: Sequence[ImageCase],
    *,
    lesion_type_names: Mapping[int, str] | None = None,
    reading: str = DEFAULT_READING,
) -> dict[str, object]:
    """FROC overall and per lesion type, size and slice interval, as a JSON-ready dict."""
    names = dict(lesion_type_names or {})
    overall = froc_curve(cases)
    kept = scored_cases(cases)
    result: dict[str, object] = {
        "fp_rates": list(FP_RATES),
        "iou_threshold": IOU_THRESHOLD,
        "froc_reading": reading,
        "images": overall.images,
        "images_without_lesion_dropped": len(cases) - len(kept),
        "lesions": overall.lesions,
        "noisy_excluded": sum(1 for c in cases for g in c.lesions if g.noisy),
        "detections": int(sum(len(np.asarray(c.scores).reshape(-1)) for c in kept)),
        "sensitivity": overall.sens_at(reading=reading),
        "curve": _thin_curve(overall),
    }
    breakdowns: dict[str, list[dict[str, object]]] = {}
    types = sorted({g.lesion_type for c in cases for g in c.lesions if not g.noisy})
    group = partial(_group, cases, reading=reading)
    breakdowns["lesion_type"] = [group(str(t), names.get(t, str(t)), _type_key) for t in types]
    breakdowns["size"] = [group(name, name, _size_key) for name in SIZE_BINS]
    breakdowns["slice_interval"] = [group(name, name, _interval_key) for name in INTERVAL_BINS]
    result["breakdowns"] = breakdowns
    return result


def _type_key(g: GtLesion) -> str:
    return str(g.lesion_type)


def _size_key(g: GtLesion) -> str:
    return size_bin(g.size_mm)


def _interval_key(g: GtLesion) -> str:
    return interval_bin(g.slice_interval_mm)


def _group(
    cases: Sequence[ImageCase], key: str, label: str, key_of: Callable[[GtLesion], str], *, reading: str
) -> dict[str, object]:
    # False positives stay those of all images (a hit on another group's lesion is none).
    curve = froc_curve(cases, counts=lambda g: key_of(g) == key)
    sens = curve.sens_at(reading=reading)
    return {"key": key, "label": label, "lesions": curve.lesions, "sensitivity": sens}


def _thin_curve(curve: FrocCurve, max_points: int = 200) -> dict[str, list[float]]:
    n = len(curve.sensitivity)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int)) if n else np.zeros(0, int)
    return {
        "fp_per_image": [round(float(v), 4) for v in curve.fp_per_image[idx]],
        "sensitivity": [round(float(v), 4) for v in curve.sensitivity[idx]],
    }
