"""The possible-missed-lesions queue and how much of a known set of hidden lesions it finds."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.detection.froc import iou_matrix

log = logging.getLogger(__name__)
RECALL_IOUS: tuple[float, ...] = (0.3, 0.5)


@dataclass(frozen=True)
class QueueItem:
    """A pending prediction that matches no annotation: a candidate missed lesion."""

    file_name: str
    box: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class HiddenLesion:
    """A lesion known to be present but deliberately left out of DL_info.csv (synthetic data)."""

    file_name: str
    box: tuple[float, float, float, float]


def rank_queue(items: Sequence[QueueItem]) -> list[QueueItem]:
    """Queue order: highest score first, ties by file name for a stable order."""
    return sorted(items, key=lambda q: (-q.score, q.file_name))


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


def load_hidden_lesions(data_dir: Path) -> list[HiddenLesion] | None:
    """Deliberately unannotated lesions from synth_truth.json, or None when the file is absent."""
    path = Path(data_dir) / "synth_truth.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
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
