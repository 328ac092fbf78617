"""Rasterising analytic shapes onto a HU canvas: pixel grid, windows, soft-edged primitives."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Grid:
    """A square pixel grid in body mm: pixel (row j, col i) sits at (x0 + i*spacing, y0 + j*spacing)."""

    size: int
    spacing: float
    x0: float
    y0: float

    @classmethod
    def centred(cls, size: int, spacing: float, centre_px: tuple[float, float]) -> Grid:
        """A grid whose body origin (0, 0) mm falls on pixel `centre_px` (col, row)."""
        return cls(size, spacing, -centre_px[0] * spacing, -centre_px[1] * spacing)

    def to_px(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        """Body millimetres -> 0-based pixel coordinates (col, row)."""
        return ((x_mm - self.x0) / self.spacing, (y_mm - self.y0) / self.spacing)

    def to_mm(self, col: float, row: float) -> tuple[float, float]:
        """0-based pixel coordinates -> body millimetres."""
        return (self.x0 + col * self.spacing, self.y0 + row * self.spacing)


class Win(NamedTuple):
    """A rectangular part of the canvas and the mm coordinates of its pixel centres (broadcastable)."""

    sy: slice
    sx: slice
    X: F32  # shape (1, w)
    Y: F32  # shape (h, 1)


def soft(dist: F32 | float, edge: float) -> F32:
    """Coverage in 0..1 from a signed distance in mm (positive inside), blurred over `edge` mm."""
    alpha = np.asarray(dist, dtype=np.float32) * np.float32(1.0 / edge)
    alpha += np.float32(0.5)
    return np.clip(alpha, 0.0, 1.0, out=alpha)


def ellipse_dist(X: F32, Y: F32, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> F32:
    """Approximate signed distance (mm, positive inside) to an ellipse (semi-axes a, b, rotated)."""
    u = X - np.float32(cx)
    v = Y - np.float32(cy)
    if angle:
        c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        u, v = c * u + s * v, c * v - s * u
    ua = u * np.float32(1.0 / a)
    vb = v * np.float32(1.0 / b)
    q = np.sqrt(ua * ua + vb * vb)
    rr = np.sqrt(u * u + v * v)
    # Along the ray through the pixel the boundary sits at rr / q: exact for circles, close for ellipses.
    # At the very centre the ray has no direction; the nearest boundary is the minor semi-axis away.
    ratio = np.where(q > np.float32(1e-4), rr / np.maximum(q, np.float32(1e-4)), np.float32(min(a, b)))
    return (np.float32(1.0) - q) * ratio


def segment_dist_3d(
    X: F32, Y: F32, z: float, a: tuple[float, float, float], b: tuple[float, float, float]
) -> tuple[F32, F32]:
    """Distance (mm) from the pixels at height z to the 3-D segment a-b, and the segment parameter t."""
    bx, by, bz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    length2 = bx * bx + by * by + bz * bz
    dx = X - np.float32(a[0])
    dy = Y - np.float32(a[1])
    dz = np.float32(z - a[2])
    if length2 < 1e-9:
        return np.sqrt(dx * dx + dy * dy + dz * dz), np.zeros_like(dx * dy)
    t = np.clip(
        (dx * np.float32(bx) + dy * np.float32(by) + dz * np.float32(bz)) * np.float32(1.0 / length2), 0, 1
    )
    ex = dx - t * np.float32(bx)
    ey = dy - t * np.float32(by)
    ez = dz - t * np.float32(bz)
    return np.sqrt(ex * ex + ey * ey + ez * ez), t


def segment_slab(
    z: float, a: tuple[float, float, float], b: tuple[float, float, float], r: float
) -> tuple[float, float, float, float] | None:
    """The in-plane bbox (xmin, xmax, ymin, ymax) of the part of a tube of radius r cut by the plane z."""
    bz = b[2] - a[2]
    if abs(bz) > 1e-6:
        t0 = (z - r - a[2]) / bz
        t1 = (z + r - a[2]) / bz
        lo, hi = max(0.0, min(t0, t1)), min(1.0, max(t0, t1))
        if lo > hi:
            return None
    else:
        if abs(z - a[2]) > r:
            return None
        lo, hi = 0.0, 1.0
    xa, xb = a[0] + lo * (b[0] - a[0]), a[0] + hi * (b[0] - a[0])
    ya, yb = a[1] + lo * (b[1] - a[1]), a[1] + hi * (b[1] - a[1])
    return (min(xa, xb) - r, max(xa, xb) + r, min(ya, yb) - r, max(ya, yb) + r)


class Canvas:
    """A float32 HU image with an optional label map; shapes are alpha-blended in painting order."""

    def __init__(self, grid: Grid, fill: float, with_labels: bool) -> None:
        self.grid = grid
        self.hu: F32 = np.full((grid.size, grid.size), fill, dtype=np.float32)
        self.labels: U8 | None = np.zeros((grid.size, grid.size), dtype=np.uint8) if with_labels else None
        n = grid.size
        self._xs = (grid.x0 + np.arange(n, dtype=np.float64) * grid.spacing).astype(np.float32)
        self._ys = (grid.y0 + np.arange(n, dtype=np.float64) * grid.spacing).astype(np.float32)
        # Blur organ boundaries over about 1.3 pixels, like a reconstructed CT edge.
        self.edge = 1.3 * grid.spacing

    def full(self) -> Win:
        """The whole canvas as a window."""
        n = self.grid.size
        return Win(slice(0, n), slice(0, n), self._xs[None, :], self._ys[:, None])

    def window(self, xmin: float, xmax: float, ymin: float, ymax: float) -> Win | None:
        """The pixels whose centres lie in the mm box (plus a pixel of margin), or None when outside."""
        g = self.grid
        i0 = max(0, int(math.floor((xmin - g.x0) / g.spacing)) - 1)
        i1 = min(g.size, int(math.ceil((xmax - g.x0) / g.spacing)) + 2)
        j0 = max(0, int(math.floor((ymin - g.y0) / g.spacing)) - 1)
        j1 = min(g.size, int(math.ceil((ymax - g.y0) / g.spacing)) + 2)
        if i0 >= i1 or j0 >= j1:
            return None
        return Win(slice(j0, j1), slice(i0, i1), self._xs[None, i0:i1], self._ys[j0:j1, None])

    def paint(self, win: Win, alpha: F32, value: F32 | float, label: int | None) -> None:
        """Blend `value` into the window with coverage `alpha`; pixels at least half covered take `label`."""
        region = self.hu[win.sy, win.sx]
        region += alpha * (np.float32(value) if isinstance(value, float | int) else value) - alpha * region
        if self.labels is not None and label is not None:
            self.labels[win.sy, win.sx][alpha >= 0.5] = label

    def ellipse(
        self,
        cx: float,
        cy: float,
        a: float,
        b: float,
        value: float,
        label: int | None,
        angle: float = 0.0,
        edge: float | None = None,
        clip: F32 | None = None,
    ) -> tuple[Win, F32] | None:
        """Paint a soft ellipse; returns its window and coverage for follow-up painting."""
        if a <= 0.05 or b <= 0.05:
            return None
        r = max(a, b) + 2 * self.edge
        win = self.window(cx - r, cx + r, cy - r, cy + r)
        if win is None:
            return None
        alpha = soft(ellipse_dist(win.X, win.Y, cx, cy, a, b, angle), edge or self.edge)
        if clip is not None:
            alpha = alpha * clip[win.sy, win.sx]
        self.paint(win, alpha, value, label)
        return win, alpha

    def bone_ellipse(
        self,
        cx: float,
        cy: float,
        a: float,
        b: float,
        cortex: float,
        cortical_hu: float,
        marrow_hu: float,
        label: int,
        angle: float = 0.0,
    ) -> None:
        """Paint a bone: a bright cortical rim around cancellous marrow."""
        self.ellipse(cx, cy, a, b, cortical_hu, label, angle, edge=self.grid.spacing)
        if a - cortex > 0.3 and b - cortex > 0.3:
            self.ellipse(cx, cy, a - cortex, b - cortex, marrow_hu, label, angle, edge=self.grid.spacing)
