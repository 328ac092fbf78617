"""A reference input/output pair of a model (PyTorch's answer), to check ONNX Runtime without torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.detection.preprocess import INPUT_SHAPE, INPUT_SIZE, PIXEL_MEAN

# Parity tolerance between PyTorch and ONNX Runtime outputs, see parity_error.
TOLERANCE = 1e-4


def parity_error(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest difference of two [1,K,5] outputs: scores as is, box coordinates in units of the input side.

    Box corners are pixel positions up to 512, where one float32 step is 6e-5 px: an absolute 1e-4 px
    would demand bit-identical kernels, so boxes are compared as fractions of the 512 px input. TopK may
    order rows whose scores tie within float rounding either way, so each real row (score above the
    tolerance) is matched to its nearest row of the other output; rows below it are empty TopK slots
    (suppressed peaks, score ~0) and only the sorted scores are compared.
    """
    g = np.asarray(got, dtype=np.float64).reshape(-1, 5)
    e = np.asarray(expected, dtype=np.float64).reshape(-1, 5)
    if g.shape != e.shape:
        return float("inf")
    scores = np.abs(np.sort(g[:, 4]) - np.sort(e[:, 4])).max(initial=0.0)
    real = e[:, 4] > TOLERANCE
    if not real.any():
        return float(scores)
    scale = np.array([INPUT_SIZE] * 4 + [1.0])
    diff = np.abs(e[real, None, :] - g[None, :, :]) / scale
    rows = diff.max(axis=2).min(axis=1).max(initial=0.0)
    return float(max(rows, scores))


def reference_input(seed: int = 0) -> np.ndarray:
    """A seeded input in the network's value range (windowed HU minus the mean)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-PIXEL_MEAN, 255.0 - PIXEL_MEAN, size=INPUT_SHAPE).astype(np.float32)


def save_reference(path: Path, rows: np.ndarray, seed: int) -> Path:
    """Write the output rows for reference_input(seed) as JSON."""
    data = {"seed": seed, "shape": list(rows.shape), "rows": np.asarray(rows, dtype=np.float64).tolist()}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def load_reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The (input, expected output) pair stored at `path`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = np.asarray(data["rows"], dtype=np.float32).reshape(data["shape"])
    return reference_input(int(data["seed"])), rows
