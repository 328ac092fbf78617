"""Detector preprocessing shared by training and serving: 3-slice context, window, 0.8 mm rescale, pad.

Coordinate convention: boxes are in the DL_info.csv frame, where x is the column index and y the
row index of a pixel (a pixel's centre sits on an integer coordinate). The resize maps pixel centres
exactly as PIL's bilinear resize does, `x_in = (x + 0.5) * scale - 0.5`, so mapping a box to the
network input and back is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

INPUT_NAME = "image"
INPUT_SIZE = 512
INPUT_SHAPE: tuple[int, int, int, int] = (1, 3, INPUT_SIZE, INPUT_SIZE)
WINDOW_LO_HU = -1024.0
WINDOW_HI_HU = 3071.0
PIXEL_MEAN = 50.0
TARGET_SPACING_MM = 0.8
SLICE_GAP_MM = 2.0
# Air after windowing and mean subtraction: the padding looks like the air around a body.
PAD_VALUE = -PIXEL_MEAN


@dataclass(frozen=True)
class Transform:
    """How an original slice was placed in the network input: scale per axis, top-left placement."""

    scale_x: float
    scale_y: float
    width: int
    height: int

    @property
    def _scales(self) -> np.ndarray:
        return np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N,4) boxes from original pixels to network-input pixels."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return (b + 0.5) * self._scales - 0.5

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N,4) boxes from network-input pixels back to original pixels, clipped to the image."""
        b = (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) + 0.5) / self._scales - 0.5
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0.0, self.width - 1.0)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0.0, self.height - 1.0)
        return b


def scale_for(spacing_mm: float, width: int, height: int) -> float:
    """Resize factor that makes a pixel 0.8 mm, reduced so the longest side fits in 512."""
    if not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise ValueError(f"pixel spacing must be a positive number of mm, got {spacing_mm!r}")
    scale = spacing_mm / TARGET_SPACING_MM
    longest = max(width, height)
    if longest * scale > INPUT_SIZE:
        scale = INPUT_SIZE / longest
    return float(scale)


def window_hu(hu: np.ndarray) -> np.ndarray:
    """Detector window: -1024..3071 HU to 0..255 (clipped), minus the pixel mean 50, float32."""
    x = np.asarray(hu, dtype=np.float32)
    out = (x - np.float32(WINDOW_LO_HU)) * np.float32(255.0 / (WINDOW_HI_HU - WINDOW_LO_HU))
    np.clip(out, 0.0, 255.0, out=out)
    out -= np.float32(PIXEL_MEAN)
    return out


def _resize_channel(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32), mode="F")
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def prepare_input(context_hu: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, Transform]:
    """Turn a (3,H,W) HU context into the (1,3,512,512) float32 network input and its Transform."""
    ctx = np.asarray(context_hu)
    if ctx.ndim != 3 or ctx.shape[0] != 3 or ctx.shape[1] < 1 or ctx.shape[2] < 1:
        raise ValueError(f"context must have shape (3, H, W), got {ctx.shape}")
    height, width = int(ctx.shape[1]), int(ctx.shape[2])
    scale = scale_for(spacing_mm, width, height)
    new_w = max(1, min(INPUT_SIZE, round(width * scale)))
    new_h = max(1, min(INPUT_SIZE, round(height * scale)))
    windowed = window_hu(ctx)
    out = np.full(INPUT_SHAPE, PAD_VALUE, dtype=np.float32)
    for c in range(3):
        if (new_w, new_h) == (width, height):
            out[0, c, :height, :width] = windowed[c]
        else:
            out[0, c, :new_h, :new_w] = _resize_channel(windowed[c], (new_w, new_h))
    # Rounding to whole pixels makes the applied scale differ slightly per axis; keep the exact ones.
    return out, Transform(scale_x=new_w / width, scale_y=new_h / height, width=width, height=height)


def load_context(store: Any, file_name: str, slice_interval_mm: float | None) -> np.ndarray:
    """Read the key slice and its neighbours 2 mm above and below as a (3,H,W) float32 HU array."""
    from app.deeplesion.context import store_context

    dz = slice_interval_mm if slice_interval_mm and slice_interval_mm > 0 else None
    return np.asarray(store_context(store, file_name, dz, offset_mm=SLICE_GAP_MM), dtype=np.float32)


def preprocess_key_slice(
    store: Any, file_name: str, spacing_mm: Sequence[float]
) -> tuple[np.ndarray, Transform]:
    """Load a key slice's 3-slice context from a SliceStore and prepare the network input."""
    if len(spacing_mm) < 1:
        raise ValueError("spacing_mm needs at least the pixel spacing")
    dz = float(spacing_mm[2]) if len(spacing_mm) >= 3 else None
    ctx = load_context(store, file_name, dz)
    return prepare_input(ctx, float(spacing_mm[0]))
