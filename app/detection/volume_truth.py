"""A synthetic dataset's left-out lesions slice by slice, and how much of them a screening queue finds."""

# One truth and one labelling rule serve the key-slice queue and the volume queue, so that their recall
# and precision are comparable: a queue item (one box, or a candidate's boxes on several slices) finds a
# left-out lesion when one of its boxes overlaps the lesion's box on that slice by IoU >= 0.3 (the
# key-slice screen's synthetic check, app.detection.screening.RECALL_IOUS).

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.deeplesion.geometry import box_iou
from app.deeplesion.schema import BOX_PADDING_PX
from app.detection.volume import Box, SliceBox

FOUND_IOU = 0.3


@dataclass(frozen=True)
class LeftOutLesion:
    """One lesion in one study that DL_info.csv leaves out, with its box on every stored slice showing it."""

    lesion_id: str
    study_index: int
    folder: str
    boxes: dict[int, Box]
    # The CSV key slices that show it: only these can a key-slice screen find it on.
    on_key_slices: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueEntry:
    """A queue item to label: the series folder and its boxes (one for a key-slice item)."""

    folder: str
    boxes: tuple[SliceBox, ...]
    score: float


def cut_box(obs: dict[str, Any], lesion: dict[str, Any], z_mm: float, spacing_mm: float) -> Box | None:
    """The padded box of an ellipsoid lesion's cut at z (pixels), or None when the plane misses it."""
    a, b, c = (float(v) for v in obs["semi_axes_mm"])
    u = (z_mm - float(lesion["centre_mm"][2])) / c
    if abs(u) >= 1.0:
        return None
    f = math.sqrt(1.0 - u * u)
    t = math.radians(float(lesion["in_plane_angle_deg"]))
    hx = f * math.hypot(a * math.cos(t), b * math.sin(t)) / spacing_mm
    hy = f * math.hypot(a * math.sin(t), b * math.cos(t)) / spacing_mm
    cx, cy = (float(v) for v in obs["centre_px"])
    # Padded as DL_info.csv boxes are (box_from_recist), so a detector trained on them is judged fairly.
    p = BOX_PADDING_PX
    return (cx - hx - p, cy - hy - p, cx + hx + p, cy + hy + p)


def left_out_lesions(truth: dict[str, Any]) -> list[LeftOutLesion]:
    """Every left-out lesion observation of synth_truth.json that some stored slice shows."""
    series: dict[tuple[int, int, int], dict[str, Any]] = {}
    for p in truth.get("patients", []):
        for st in p.get("studies", []):
            for s in st.get("series", []):
                series[(int(p["patient_index"]), int(st["study_index"]), int(s["series_id"]))] = s
    out: list[LeftOutLesion] = []
    for lesion in truth.get("lesions", []):
        for obs in lesion.get("studies", []):
            shown = obs.get("stored_slices_showing_it") or []
            if obs.get("in_csv") or not shown:
                continue
            key = (int(lesion["patient_index"]), int(obs["study_index"]), int(obs["series_id"]))
            s = series.get(key)
            if s is None:
                continue
            boxes: dict[int, Box] = {}
            for k in shown:
                z = float(s["z_first_mm"]) + (int(k) - 1) * float(s["slice_interval_mm"])
                box = cut_box(obs, lesion, z, float(s["pixel_spacing_mm"]))
                if box is not None:
                    boxes[int(k)] = box
            if boxes:
                keys = tuple(str(v) for v in obs.get("visible_on_csv_key_slices") or [])
                out.append(LeftOutLesion(str(lesion["lesion_id"]), key[1], str(s["folder"]), boxes, keys))
    return out


def load_left_out(data_dir: Path | str) -> list[LeftOutLesion] | None:
    """left_out_lesions of a data folder's synth_truth.json, or None when there is none."""
    from app.deeplesion.objectstore import data_file_exists, read_data_file

    if not data_file_exists(data_dir, "synth_truth.json"):
        return None
    return left_out_lesions(json.loads(read_data_file(data_dir, "synth_truth.json").decode("utf-8")))


def found_lesion(entry: QueueEntry, lesions: Sequence[LeftOutLesion], iou: float = FOUND_IOU) -> int | None:
    """Index of the left-out lesion the entry finds best (highest IoU >= iou on a shared slice), or None."""
    best, best_iou = None, iou
    for i, lesion in enumerate(lesions):
        if lesion.folder != entry.folder:
            continue
        for sb in entry.boxes:
            truth = lesion.boxes.get(sb.slice_index)
            if truth is not None:
                v = box_iou(sb.box, truth)
                if v >= best_iou and (best is None or v > best_iou):
                    best, best_iou = i, v
    return best


@dataclass
class QueueCurve:
    """A queue's precision and left-out lesions found, at every score threshold (longest queue last)."""

    total: int
    points: list[dict[str, Any]] = field(default_factory=list)

    def best_at_precision(self, precision: float) -> dict[str, Any]:
        """The point finding the most left-out lesions with precision >= `precision` (shortest on ties)."""
        ok = [p for p in self.points if p["precision"] is not None and p["precision"] >= precision - 1e-12]
        if not ok:
            return {"threshold": None, "queue_length": 0, "precision": None, "found": 0}
        return max(ok, key=lambda p: (p["found"], -p["queue_length"]))


def queue_curve(entries: Sequence[QueueEntry], lesions: Sequence[LeftOutLesion]) -> QueueCurve:
    """Precision (items finding a left-out lesion / items) and distinct lesions found, per threshold."""
    labelled = sorted(((e.score, found_lesion(e, lesions)) for e in entries), key=lambda t: -t[0])
    curve = QueueCurve(total=len(lesions))
    found: set[int] = set()
    right = 0
    for n, (score, hit) in enumerate(labelled, start=1):
        if hit is not None:
            right += 1
            found.add(hit)
        # A point per distinct score: equal scores enter the queue together.
        if n == len(labelled) or labelled[n][0] != score:
            curve.points.append(
                {
                    "threshold": round(score, 4),
                    "queue_length": n,
                    "precision": round(right / n, 4),
                    "found": len(found),
                }
            )
    return curve
