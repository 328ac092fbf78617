"""Turn the graph's decoded rows into Detections in original pixel coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.detection.preprocess import Transform

# Boxes thinner than this (original pixels) after clipping carry no usable location.
MIN_SIDE_PX = 1.0


@dataclass(frozen=True)
class Detection:
    """One predicted lesion: box [x1,y1,x2,y2] in original pixels, a score in 0..1, a proposed RECIST."""

    box: tuple[float, float, float, float]
    score: float
    # Long axis end points, then short axis end points, in original pixels (app.detection.recist).
    recist: tuple[float, ...] | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        out: dict[str, object] = {"box": [round(v, 2) for v in self.box], "score": round(self.score, 4)}
        if self.recist is not None:
            out["recist"] = [round(v, 2) for v in self.recist]
        return out


def decode_output(raw: np.ndarray, transform: Transform, threshold: float = 0.05) -> list[Detection]:
    """Keep rows scoring >= threshold, map their boxes back to original pixels, best first."""
    rows = np.asarray(raw, dtype=np.float64)
    if rows.ndim == 3:
        rows = rows[0]
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise ValueError(f"detector output must be [K,5] rows, got shape {np.asarray(raw).shape}")
    rows = rows[np.isfinite(rows).all(axis=1)]
    rows = rows[rows[:, 4] >= threshold]
    if rows.size == 0:
        return []
    boxes = rows[:, :4].copy()
    # Keep x1<=x2 and y1<=y2 even if a head predicted a negative size.
    boxes[:, [0, 2]] = np.sort(boxes[:, [0, 2]], axis=1)
    boxes[:, [1, 3]] = np.sort(boxes[:, [1, 3]], axis=1)
    orig = transform.to_original(boxes)
    keep = ((orig[:, 2] - orig[:, 0]) >= MIN_SIDE_PX) & ((orig[:, 3] - orig[:, 1]) >= MIN_SIDE_PX)
    orig, scores = orig[keep], rows[keep, 4]
    order = np.argsort(-scores, kind="stable")
    return [
        Detection(box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])), score=float(s))
        for b, s in zip(orig[order], scores[order], strict=True)
    ]
