"""Burn RECIST marks and boxes into an 8-bit slice image (exports, docs images)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class OverlayMark:
    """One mark to draw: RECIST end points (8 floats) and/or a box (4 floats), a label and a colour."""

    # Colours are the caller's: the review overlay picks them from the palette by layer (app.review.overlay).

    recist: Sequence[float] | None
    box: Sequence[float] | None
    label: str
    color: RGB


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A small font; Pillow's built-in one when no TrueType font is installed."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_overlays(
    gray: npt.NDArray[np.uint8], marks: Sequence[OverlayMark], *, scale: float = 1.0
) -> Image.Image:
    """An RGB image of `gray` (scaled by `scale`) with each mark's RECIST axes, box and label drawn on it."""
    arr = np.asarray(gray)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"gray must be a 2-D uint8 array, got {arr.dtype} with shape {arr.shape}")
    if not (scale > 0 and np.isfinite(scale)):
        raise ValueError(f"scale must be a positive number, got {scale}")
    image = Image.fromarray(arr).convert("RGB")
    if scale != 1.0:
        size = (max(1, round(arr.shape[1] * scale)), max(1, round(arr.shape[0] * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    width = max(1, round(scale))
    font = _font(max(10, round(11 * max(1.0, scale))))
    for mark in marks:
        anchor: tuple[float, float] | None = None
        if mark.box is not None:
            box = [float(v) for v in mark.box]
            if len(box) != 4:
                raise ValueError(f"box must have 4 numbers, got {len(box)}")
            # Pixel coordinates are 0-based centres: pixel i spans [i - 0.5, i + 0.5] before scaling.
            x1, y1, x2, y2 = ((v + 0.5) * scale - 0.5 for v in box)
            draw.rectangle(
                [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=mark.color, width=width
            )
            anchor = (min(x1, x2), min(y1, y2))
        if mark.recist is not None:
            pts = [float(v) for v in mark.recist]
            if len(pts) != 8:
                raise ValueError(f"recist must have 8 numbers, got {len(pts)}")
            p = [(pts[i] + 0.5) * scale - 0.5 for i in range(8)]
            draw.line([(p[0], p[1]), (p[2], p[3])], fill=mark.color, width=width)
            draw.line([(p[4], p[5]), (p[6], p[7])], fill=mark.color, width=width)
            if anchor is None:
                anchor = (min(p[0::2]), min(p[1::2]))
        if mark.label and anchor is not None:
            x, y = anchor
            text_box = draw.textbbox((0, 0), mark.label, font=font)
            th = text_box[3] - text_box[1]
            ty = y - th - 4 if y - th - 4 >= 0 else y + 2
            draw.text((max(0.0, x), ty), mark.label, fill=mark.color, font=font)
    return image
