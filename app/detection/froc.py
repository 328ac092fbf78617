"""The standard DeepLesion FROC: IoU >= 0.5 hits, sensitivity at 0.5..16 false positives per image.

Follows the lab's `sens_at_FP`: detections of all images are ranked by score together; a detection
whose IoU with some lesion of its image reaches the threshold is not a false positive and hits
every such lesion not yet hit (each lesion counts once); any other detection is a false positive.
Noisy lesions are not counted, and a detection that only matches a noisy lesion is neither a hit
nor a false positive. IoU uses the lab's inclusive-pixel convention (width = x2 - x1 + 1).
Sensitivity at a rate r is the highest sensitivity reached while false positives per image <= r
(a step reading of the curve; the lab interpolates linearly between ranked detections).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from app.deeplesion.geometry import HIT_IOU, iou_matrix

FP_RATES: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
IOU_THRESHOLD = HIT_IOU
SIZE_BINS: tuple[str, ...] = ("<10mm", "10-30mm", ">30mm")
INTERVAL_BINS: tuple[str, ...] = ("<=2mm", ">2mm")


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
    """Ranked curve: cumulative sensitivity and false positives per image after each counted detection."""

    sensitivity: np.ndarray
    fp_per_image: np.ndarray
    lesions: int
    images: int

    def sens_at(self, rates: Sequence[float] = FP_RATES) -> list[float]:
        """Highest sensitivity reached while false positives per image stay <= each rate."""
        out: list[float] = []
        for r in rates:
            ok = self.fp_per_image <= r + 1e-12
            out.append(float(self.sensitivity[ok].max()) if ok.any() else 0.0)
        return out


def froc_curve(
    cases: Sequence[ImageCase],
    iou_threshold: float = IOU_THRESHOLD,
    counts: Callable[[GtLesion], bool] | None = None,
) -> FrocCurve:
    """Build the FROC curve; `counts` picks the lesions in the denominator (breakdowns), default all."""
    select = counts or (lambda _g: True)
    entries: list[tuple[float, int, int]] = []
    for ci, case in enumerate(cases):
        scores = np.asarray(case.scores, dtype=np.float64).reshape(-1)
        entries.extend((float(s), ci, di) for di, s in enumerate(scores))
    # Stable order for ties: higher score first, then input order.
    entries.sort(key=lambda e: -e[0])
    ious = [
        iou_matrix(np.asarray(c.boxes).reshape(-1, 4), np.array([g.box for g in c.lesions]).reshape(-1, 4))
        for c in cases
    ]
    hit = [np.zeros(len(c.lesions), dtype=bool) for c in cases]
    counted = [np.array([(not g.noisy) and select(g) for g in c.lesions], dtype=bool) for c in cases]
    clean = [np.array([not g.noisy for g in c.lesions], dtype=bool) for c in cases]
    total = int(sum(int(c.sum()) for c in counted))
    n_hits = 0
    n_fp = 0
    sens: list[float] = [0.0]
    fpi: list[float] = [0.0]
    n_img = max(len(cases), 1)
    for _score, ci, di in entries:
        row = ious[ci][di] if ious[ci].shape[1] else np.zeros(0)
        matches = row >= iou_threshold
        if matches.any():
            new = matches & counted[ci] & ~hit[ci]
            n_hits += int(new.sum())
            hit[ci] |= matches
            if not (matches & clean[ci]).any():
                continue  # only a noisy lesion matched: ignored, neither hit nor FP
        else:
            n_fp += 1
        sens.append(n_hits / total if total else 0.0)
        fpi.append(n_fp / n_img)
    return FrocCurve(np.array(sens), np.array(fpi), total, len(cases))


def size_bin(size_mm: float) -> str:
    """Size group of a lesion by its mean diameter: <10, 10-30 (inclusive), >30 mm."""
    if size_mm < 10.0:
        return SIZE_BINS[0]
    return SIZE_BINS[1] if size_mm <= 30.0 else SIZE_BINS[2]


def interval_bin(slice_interval_mm: float) -> str:
    """Slice-interval group: <= 2 mm (thin) or > 2 mm (thick)."""
    return INTERVAL_BINS[0] if slice_interval_mm <= 2.0 else INTERVAL_BINS[1]


def evaluate_cases(
    cases: Sequence[ImageCase], *, lesion_type_names: Mapping[int, str] | None = None
) -> dict[str, object]:
    """FROC overall and per lesion type, size and slice interval, as a JSON-ready dict."""
    names = dict(lesion_type_names or {})
    overall = froc_curve(cases)
    result: dict[str, object] = {
        "fp_rates": list(FP_RATES),
        "iou_threshold": IOU_THRESHOLD,
        "images": len(cases),
        "lesions": overall.lesions,
        "noisy_excluded": sum(1 for c in cases for g in c.lesions if g.noisy),
        "detections": int(sum(len(np.asarray(c.scores).reshape(-1)) for c in cases)),
        "sensitivity": overall.sens_at(),
        "curve": _thin_curve(overall),
    }
    breakdowns: dict[str, list[dict[str, object]]] = {}
    types = sorted({g.lesion_type for c in cases for g in c.lesions if not g.noisy})
    breakdowns["lesion_type"] = [_group(cases, str(t), names.get(t, str(t)), _type_key) for t in types]
    breakdowns["size"] = [_group(cases, name, name, _size_key) for name in SIZE_BINS]
    breakdowns["slice_interval"] = [_group(cases, name, name, _interval_key) for name in INTERVAL_BINS]
    result["breakdowns"] = breakdowns
    return result


def _type_key(g: GtLesion) -> str:
    return str(g.lesion_type)


def _size_key(g: GtLesion) -> str:
    return size_bin(g.size_mm)


def _interval_key(g: GtLesion) -> str:
    return interval_bin(g.slice_interval_mm)


def _group(
    cases: Sequence[ImageCase], key: str, label: str, key_of: Callable[[GtLesion], str]
) -> dict[str, object]:
    # False positives stay those of all images, as the papers' per-group curves do.
    curve = froc_curve(cases, counts=lambda g: key_of(g) == key)
    return {"key": key, "label": label, "lesions": curve.lesions, "sensitivity": curve.sens_at()}


def _thin_curve(curve: FrocCurve, max_points: int = 200) -> dict[str, list[float]]:
    n = len(curve.sensitivity)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int)) if n else np.zeros(0, int)
    return {
        "fp_per_image": [round(float(v), 4) for v in curve.fp_per_image[idx]],
        "sensitivity": [round(float(v), 4) for v in curve.sensitivity[idx]],
    }
