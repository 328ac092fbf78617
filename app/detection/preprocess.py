"""Detector preprocessing shared by training and serving: slice context, window, rescale, optional crop, pad.

Coordinate convention: boxes are in the 0-based pixel frame, where x is the column index and y the
row index of a pixel (a pixel's centre sits on an integer coordinate). The default resize maps pixel
centres exactly as PIL's bilinear resize does, `x_in = (x + 0.5) * scale - 0.5`, so mapping a box to the
network input and back is the identity.

What a model expects is one `Preprocessing` value, read from its ONNX metadata (app.detection.contract);
the defaults are what the shipped model was trained with (3DCE's reading of the data).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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

BORDER_CROPS: tuple[str, ...] = ("none", "mulan")
RESIZES: tuple[str, ...] = ("pil-bilinear", "opencv-linear")
BOX_MAPPINGS: tuple[str, ...] = ("pixel-centre", "scale")
# MULAN's get_mask: raw 16-bit PNG value > 32000, i.e. HU > -768, then a 7x7 binary opening (drops the table).
BODY_HU = 32000.0 - 32768.0
BODY_OPENING_PX = 7


@dataclass(frozen=True)
class Preprocessing:
    """Everything a detector expects of its input; the defaults are the shipped model's training recipe."""

    slice_offsets_mm: tuple[float, ...] = (-SLICE_GAP_MM, 0.0, SLICE_GAP_MM)
    window_hu: tuple[float, float] = (WINDOW_LO_HU, WINDOW_HI_HU)
    value_max: float = 255.0
    pixel_mean: float = PIXEL_MEAN
    pad_value: float = PAD_VALUE
    # Target pixel size; 0 means no spacing normalisation (the longest side is scaled to max_size).
    spacing_mm: float = TARGET_SPACING_MM
    max_size: int = INPUT_SIZE
    border_crop: str = "none"
    resize: str = "pil-bilinear"
    box_mapping: str = "pixel-centre"
    input_name: str = INPUT_NAME
    input_shape: tuple[int, int, int, int] = field(default=INPUT_SHAPE)

    @property
    def channels(self) -> int:
        """Slices stacked as input channels."""
        return len(self.slice_offsets_mm)

    @property
    def key_channel(self) -> int:
        """The channel holding the key slice itself (offset 0, else the middle one)."""
        offsets = list(self.slice_offsets_mm)
        return offsets.index(0.0) if 0.0 in offsets else len(offsets) // 2

    def problems(self) -> list[str]:
        """What makes this preprocessing impossible to run, in words (empty when it is fine)."""
        out: list[str] = []
        if not self.slice_offsets_mm or not all(np.isfinite(self.slice_offsets_mm)):
            out.append(f"slice offsets must be finite mm values, got {self.slice_offsets_mm}")
        lo, hi = self.window_hu
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            out.append(f"window must be two finite HU values, low < high, got {self.window_hu}")
        for name in ("value_max", "pixel_mean", "pad_value"):
            if not np.isfinite(getattr(self, name)):
                out.append(f"{name} must be finite")
        if not self.value_max > 0:
            out.append(f"value_max must be positive, got {self.value_max}")
        if not (np.isfinite(self.spacing_mm) and self.spacing_mm >= 0):
            out.append(f"target spacing must be >= 0 mm (0: none), got {self.spacing_mm}")
        if self.border_crop not in BORDER_CROPS:
            out.append(
                f"border crop {self.border_crop!r} is not supported; use one of {', '.join(BORDER_CROPS)}"
            )
        if self.resize not in RESIZES:
            out.append(f"resize {self.resize!r} is not supported; use one of {', '.join(RESIZES)}")
        if self.box_mapping not in BOX_MAPPINGS:
            out.append(
                f"box mapping {self.box_mapping!r} is not supported; use one of {', '.join(BOX_MAPPINGS)}"
            )
        n, c, h, w = self.input_shape
        if n != 1 or c != self.channels or h != w:
            out.append(
                f"input shape {list(self.input_shape)} must be [1, {self.channels}, S, S]: one image, "
                f"one channel per slice offset ({self.channels}), square"
            )
        if not 16 <= self.max_size <= h:
            out.append(f"max size {self.max_size} must be within 16..{h} (the input side)")
        return out


DEFAULT_PREPROCESSING = Preprocessing()


@dataclass(frozen=True)
class Transform:
    """Where an original slice went in the network input: crop origin, scale per axis, top-left placement."""

    scale_x: float
    scale_y: float
    width: int
    height: int
    offset_x: int = 0
    offset_y: int = 0
    # True: pixel centres map ((x + 0.5) * s - 0.5, PIL/OpenCV resampling); False: x * s (MULAN's boxes).
    centred: bool = True

    @property
    def _scales(self) -> np.ndarray:
        return np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])

    @property
    def _offsets(self) -> np.ndarray:
        return np.array([self.offset_x, self.offset_y, self.offset_x, self.offset_y], dtype=np.float64)

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N,4) boxes from original pixels to network-input pixels."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - self._offsets
        half = 0.5 if self.centred else 0.0
        return (b + half) * self._scales - half

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N,4) boxes from network-input pixels back to original pixels, clipped to the image."""
        half = 0.5 if self.centred else 0.0
        b = (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) + half) / self._scales - half + self._offsets
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0.0, self.width - 1.0)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0.0, self.height - 1.0)
        return b


def scale_for(
    spacing_mm: float, width: int, height: int, pre: Preprocessing = DEFAULT_PREPROCESSING
) -> float:
    """Resize factor that makes a pixel the target spacing, reduced so the longest side fits in max_size."""
    if not np.isfinite(spacing_mm) or spacing_mm <= 0:
        raise ValueError(f"pixel spacing must be a positive number of mm, got {spacing_mm!r}")
    longest = max(width, height)
    scale = spacing_mm / pre.spacing_mm if pre.spacing_mm > 0 else pre.max_size / longest
    if longest * scale > pre.max_size:
        scale = pre.max_size / longest
    return float(scale)


def window_hu(hu: np.ndarray, pre: Preprocessing = DEFAULT_PREPROCESSING) -> np.ndarray:
    """Detector window: low..high HU to 0..value_max (clipped), minus the pixel mean, float32."""
    lo, hi = pre.window_hu
    x = np.asarray(hu, dtype=np.float32)
    out = (x - np.float32(lo)) * np.float32(pre.value_max / (hi - lo))
    np.clip(out, 0.0, pre.value_max, out=out)
    out -= np.float32(pre.pixel_mean)
    return out


def _resize_channel(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32), mode="F")
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def _linear_coords(n_out: int, n_in: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source index pairs and weights of OpenCV's INTER_LINEAR along one axis (edges replicated)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) / scale - 0.5
    src = np.clip(src, 0.0, n_in - 1.0)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_linear(channel: np.ndarray, size: tuple[int, int], scale: float) -> np.ndarray:
    """cv2.resize(fx=fy=scale, INTER_LINEAR) in numpy: bilinear on pixel centres, no antialiasing."""
    x0, x1, wx = _linear_coords(size[0], channel.shape[1], scale)
    y0, y1, wy = _linear_coords(size[1], channel.shape[0], scale)
    a = np.asarray(channel, dtype=np.float32)
    rows = a[y0] * (1.0 - wy)[:, None] + a[y1] * wy[:, None]
    return np.asarray(rows[:, x0] * (1.0 - wx) + rows[:, x1] * wx, dtype=np.float32)


def _square_filter(mask: np.ndarray, size: int, *, erode: bool) -> np.ndarray:
    """Binary erosion or dilation by a size x size square, the outside counting as background."""
    r = size // 2
    padded = np.pad(mask.astype(np.int32), r)
    csum = padded.cumsum(0).cumsum(1)
    csum = np.pad(csum, ((1, 0), (1, 0)))
    h, w = mask.shape
    window = csum[size:, size:] - csum[:-size, size:] - csum[size:, :-size] + csum[:-size, :-size]
    window = window[:h, :w]
    return window == size * size if erode else window > 0


def body_range(key_hu: np.ndarray) -> tuple[int, int, int, int]:
    """MULAN's border crop (get_mask + get_range): rows u..d and columns l..r holding the body."""
    mask = np.asarray(key_hu) > BODY_HU
    opened = _square_filter(_square_filter(mask, BODY_OPENING_PX, erode=True), BODY_OPENING_PX, erode=False)
    if not opened.any():  # an atypical slice: MULAN keeps it whole
        return 0, mask.shape[0] - 1, 0, mask.shape[1] - 1
    rows = np.flatnonzero(opened.any(axis=1))
    cols = np.flatnonzero(opened.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def prepare_input(
    context_hu: np.ndarray, spacing_mm: float, pre: Preprocessing = DEFAULT_PREPROCESSING
) -> tuple[np.ndarray, Transform]:
    """Turn a (C,H,W) HU context into the model's float32 input and its Transform."""
    ctx = np.asarray(context_hu)
    if ctx.ndim != 3 or ctx.shape[0] != pre.channels or ctx.shape[1] < 1 or ctx.shape[2] < 1:
        raise ValueError(f"context must have shape ({pre.channels}, H, W), got {ctx.shape}")
    height, width = int(ctx.shape[1]), int(ctx.shape[2])
    off_x = off_y = 0
    if pre.border_crop == "mulan":
        u, d, left, r = body_range(ctx[pre.key_channel])
        ctx = ctx[:, u : d + 1, left : r + 1]
        off_x, off_y = left, u
    h, w = int(ctx.shape[1]), int(ctx.shape[2])
    scale = scale_for(spacing_mm, w, h, pre)
    new_w = max(1, min(pre.max_size, round(w * scale)))
    new_h = max(1, min(pre.max_size, round(h * scale)))
    windowed = window_hu(ctx, pre)
    out = np.full(pre.input_shape, pre.pad_value, dtype=np.float32)
    for c in range(pre.channels):
        if (new_w, new_h) == (w, h):
            out[0, c, :h, :w] = windowed[c]
        elif pre.resize == "opencv-linear":
            out[0, c, :new_h, :new_w] = resize_linear(windowed[c], (new_w, new_h), scale)
        else:
            out[0, c, :new_h, :new_w] = _resize_channel(windowed[c], (new_w, new_h))
    # PIL maps by the rounded size (keep the exact per-axis scale); OpenCV with fx=fy maps by the factor.
    same = (new_w, new_h) == (w, h)
    sx, sy = (scale, scale) if pre.resize == "opencv-linear" and not same else (new_w / w, new_h / h)
    centred = pre.box_mapping == "pixel-centre"
    return out, Transform(sx, sy, width, height, off_x, off_y, centred)


def load_context(
    store: Any,
    file_name: str,
    slice_interval_mm: float | None,
    offsets_mm: Sequence[float] = DEFAULT_PREPROCESSING.slice_offsets_mm,
) -> np.ndarray:
    """Read the key slice and its neighbours at the given mm offsets as a (C,H,W) float32 HU array."""
    from app.deeplesion.context import store_context

    dz = slice_interval_mm if slice_interval_mm and slice_interval_mm > 0 else None
    # One rule for a neighbour at d mm (3DCE's: nearest stored, interpolated): the context's outer channels.
    stacks: dict[float, np.ndarray] = {}
    channels = []
    any_gap = next((abs(float(o)) for o in offsets_mm if o), SLICE_GAP_MM)
    for o in offsets_mm:
        d = abs(float(o)) or any_gap
        if d not in stacks:
            stacks[d] = np.asarray(store_context(store, file_name, dz, offset_mm=d), dtype=np.float32)
        channels.append(stacks[d][1 if o == 0 else (0 if o < 0 else 2)])
    return np.stack(channels)


def load_key_context(
    store: Any, file_name: str, spacing_mm: Sequence[float], pre: Preprocessing = DEFAULT_PREPROCESSING
) -> tuple[np.ndarray, float]:
    """A key slice's (C,H,W) HU context at the model's offsets and its pixel spacing, from a SliceStore."""
    if len(spacing_mm) < 1:
        raise ValueError("spacing_mm needs at least the pixel spacing")
    dz = float(spacing_mm[2]) if len(spacing_mm) >= 3 else None
    return load_context(store, file_name, dz, pre.slice_offsets_mm), float(spacing_mm[0])


def preprocess_key_slice(
    store: Any, file_name: str, spacing_mm: Sequence[float], pre: Preprocessing = DEFAULT_PREPROCESSING
) -> tuple[np.ndarray, Transform]:
    """Load a key slice's slice context from a SliceStore and prepare the network input."""
    ctx, pixel_mm = load_key_context(store, file_name, spacing_mm, pre)
    return prepare_input(ctx, pixel_mm, pre)
