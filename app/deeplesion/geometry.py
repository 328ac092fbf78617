"""Pure RECIST geometry: boxes from end points, diameters, and validation against the image."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from app.deeplesion.errors import InvalidGeometryError
from app.deeplesion.schema import BOX_PADDING_PX

# RECIST axes should be perpendicular, but they are clicked by hand: the first row of the real
# DL_info.csv (000001_01_01_109.png) has axes 77.9 degrees apart. 25 degrees accepts such hand-drawn
# measurements and still rejects axes drawn along the same direction.
PERPENDICULAR_TOLERANCE_DEG = 25.0
# The dataset's hit criterion (3DCE and MULAN evaluation): a box is a lesion when their IoU reaches this.
HIT_IOU = 0.5
# Shortest axis accepted, in pixels; below this the measurement is a double click, not a lesion.
MIN_AXIS_PX = 0.5

Box = tuple[float, float, float, float]


BoxesLike = Sequence[Sequence[float]] | np.ndarray


def iou_matrix(a: BoxesLike, b: BoxesLike) -> np.ndarray:
    """Pairwise IoU of (N,4) and (M,4) boxes in the dataset's inclusive-pixel convention (+1 in w and h)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(ix2 - ix1 + 1.0, 0.0) * np.maximum(iy2 - iy1 + 1.0, 0.0)
    area_a = (a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0)
    area_b = (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return np.asarray(out, dtype=np.float64)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [x1, y1, x2, y2] boxes, inclusive pixels (the convention of the dataset's FROC)."""
    return float(iou_matrix([a], [b])[0, 0])


def hits(ious: np.ndarray | float) -> np.ndarray:
    """The hit decision on IoU values: IoU >= HIT_IOU (the one rule the FROC and the review share)."""
    return np.asarray(ious) >= HIT_IOU


def matches_any(box: Sequence[float], lesion_boxes: Iterable[Sequence[float]]) -> bool:
    """True when `box` hits one of these lesion boxes by the dataset's criterion."""
    others = [list(b) for b in lesion_boxes]
    return bool(others) and bool(hits(iou_matrix([box], others)).any())


def _floats(values: Sequence[float], count: int, what: str) -> list[float]:
    """The values as floats, checking count and finiteness."""
    try:
        items = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise InvalidGeometryError(f"{what}: expected {count} numbers ({exc})") from None
    if len(items) != count:
        raise InvalidGeometryError(f"{what}: expected {count} numbers, got {len(items)}")
    if not all(math.isfinite(v) for v in items):
        raise InvalidGeometryError(f"{what}: every number must be finite, got {items}")
    return items


def box_from_recist(recist: Sequence[float], pad: float = BOX_PADDING_PX) -> Box:
    """Tight box around the 4 RECIST end points, padded `pad` px on each side (the dataset's rule)."""
    r = _floats(recist, 8, "recist")
    xs = r[0::2]
    ys = r[1::2]
    return (min(xs) - pad, min(ys) - pad, max(xs) + pad, max(ys) + pad)


def recist_diameters(recist: Sequence[float]) -> tuple[float, float]:
    """Lengths in px of the long axis (first two points) and the short axis (last two points)."""
    r = _floats(recist, 8, "recist")
    long_axis = math.hypot(r[2] - r[0], r[3] - r[1])
    short_axis = math.hypot(r[6] - r[4], r[7] - r[5])
    return (long_axis, short_axis)


def box_diameters(box: Sequence[float], pad: float = BOX_PADDING_PX) -> tuple[float, float]:
    """Longer and shorter side in px of a box without its padding."""
    x1, y1, x2, y2 = _floats(box, 4, "box")
    sides = sorted((max(0.0, x2 - x1 - 2 * pad), max(0.0, y2 - y1 - 2 * pad)))
    return (sides[1], sides[0])


def lesion_diameters(recist: Sequence[float] | None, box: Sequence[float]) -> tuple[float, float]:
    """Long and short axis in px: measured by RECIST, else estimated from the box (see box_diameters)."""
    return recist_diameters(recist) if recist is not None else box_diameters(box)


def _check_image_size(image_size: Sequence[int]) -> tuple[float, float]:
    """Width and height as floats, refusing non-positive sizes."""
    if len(image_size) != 2:
        raise InvalidGeometryError(f"image_size: expected 2 numbers, got {len(image_size)}")
    width, height = float(image_size[0]), float(image_size[1])
    if not (width > 0 and height > 0):
        raise InvalidGeometryError(f"image_size must be positive, got {width:g}x{height:g}")
    return width, height


def validate_recist(
    recist: Sequence[float],
    image_size: Sequence[int],
    *,
    max_skew_deg: float = PERPENDICULAR_TOLERANCE_DEG,
) -> None:
    """Raise InvalidGeometryError unless `recist` is two near-perpendicular axes inside the image."""
    r = _floats(recist, 8, "recist")
    width, height = _check_image_size(image_size)
    for i in range(4):
        x, y = r[2 * i], r[2 * i + 1]
        # 0-based pixel coordinates: a point may sit anywhere on the pixel grid [0, size].
        if not (0.0 <= x <= width and 0.0 <= y <= height):
            raise InvalidGeometryError(
                f"recist point {i + 1} ({x:g}, {y:g}) lies outside the {width:g}x{height:g} image"
            )
    long_axis, short_axis = recist_diameters(r)
    if long_axis < MIN_AXIS_PX or short_axis < MIN_AXIS_PX:
        raise InvalidGeometryError(
            f"recist axes must be at least {MIN_AXIS_PX:g} px long, got {long_axis:.3g} and {short_axis:.3g}"
        )
    if short_axis > long_axis + 1e-6:
        raise InvalidGeometryError(
            f"recist short axis ({short_axis:.4g} px) is longer than the long axis ({long_axis:.4g} px)"
        )
    angle = axes_angle_deg(r)
    if abs(angle - 90.0) > max_skew_deg:
        raise InvalidGeometryError(
            f"recist axes must be perpendicular within {max_skew_deg:g} degrees, got {angle:.1f} degrees"
        )


def axes_angle_deg(recist: Sequence[float]) -> float:
    """Angle between the long and short axis, in degrees 0..90."""
    r = _floats(recist, 8, "recist")
    ax, ay = r[2] - r[0], r[3] - r[1]
    bx, by = r[6] - r[4], r[7] - r[5]
    na, nb = math.hypot(ax, ay), math.hypot(bx, by)
    if na == 0.0 or nb == 0.0:
        return 0.0
    cos = abs(ax * bx + ay * by) / (na * nb)
    return math.degrees(math.acos(min(1.0, cos)))


def validate_box(box: Sequence[float], image_size: Sequence[int]) -> None:
    """Raise InvalidGeometryError unless `box` is finite, x1 < x2, y1 < y2 and inside the image."""
    x1, y1, x2, y2 = _floats(box, 4, "box")
    width, height = _check_image_size(image_size)
    if not (x2 > x1 and y2 > y1):
        raise InvalidGeometryError(f"box must have x2 > x1 and y2 > y1, got [{x1:g}, {y1:g}, {x2:g}, {y2:g}]")
    # The dataset pads RECIST boxes by 5 px, which can push a box around an edge lesion past the border.
    m = BOX_PADDING_PX
    if x1 < -m or y1 < -m or x2 > width + m or y2 > height + m:
        raise InvalidGeometryError(
            f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside the {width:g}x{height:g} image"
        )


def measure_recist(
    inside: npt.NDArray[np.bool_], col0: int, row0: int
) -> tuple[float, float, float, float, float, float, float, float]:
    """RECIST end points of a mask (0-based px): longest diameter, then the longest perpendicular chord."""
    # Each end point sits on the outer edge of its boundary pixel, so a 10-pixel run measures 10 px.
    rows, cols = np.nonzero(inside)
    pts = np.stack([cols + col0, rows + row0], axis=1).astype(np.float64)
    if len(pts) == 1:
        x, y = pts[0]
        return (x - 0.5, y, x + 0.5, y, x, y - 0.5, x, y + 0.5)
    # Boundary pixels: inside with an outside 4-neighbour.
    padded = np.pad(inside, 1)
    core = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    br, bc = np.nonzero(inside & ~core)
    bnd = np.stack([bc + col0, br + row0], axis=1).astype(np.float64)
    diff = bnd[:, None, :] - bnd[None, :, :]
    d2 = (diff**2).sum(-1)
    # Among the chords within half a pixel of the longest, take the one through the middle of the mask, as
    # a reader would: on a pixelated tip several chords tie and the first found may run off-centre.
    longest = math.sqrt(float(d2.max()))
    ii, jj = np.nonzero(d2 >= max(0.0, longest - 0.5) ** 2)
    mid = (bnd[ii] + bnd[jj]) / 2 - pts.mean(axis=0)
    best_pair = int(np.argmin((mid**2).sum(-1)))
    i, j = int(ii[best_pair]), int(jj[best_pair])
    p, q = bnd[i], bnd[j]
    if d2[i, j] == 0:
        q = p + np.array([1.0, 0.0])
    u = (q - p) / np.linalg.norm(q - p)
    v = np.array([-u[1], u[0]])
    # Extend by half a pixel at each end: the measurement spans the pixels, not their centres.
    p_long, q_long = p - 0.5 * u, q + 0.5 * u
    t = (pts - p) @ u
    s = (pts - p) @ v
    best = (-1.0, 0.0, 0.0, 0.0)
    for t0 in np.unique(np.round(t)):
        sel = np.abs(t - t0) <= 0.5
        if not sel.any():
            continue
        smin, smax = float(s[sel].min()), float(s[sel].max())
        if smax - smin > best[0]:
            best = (smax - smin, float(t0), smin, smax)
    _, t0, smin, smax = best
    base = p + t0 * u
    a_pt = base + (smin - 0.5) * v
    b_pt = base + (smax + 0.5) * v
    long_len = float(np.linalg.norm(q_long - p_long))
    short_len = float(np.linalg.norm(b_pt - a_pt))
    if short_len > long_len - 0.02:
        # A nearly round cut: keep the perpendicular chord just shorter than the long axis, with room
        # for the rounding of the coordinates written to the CSV.
        mid = (a_pt + b_pt) / 2
        half = (long_len - 0.02) / 2
        a_pt, b_pt = mid - v * half, mid + v * half
    return (
        float(p_long[0]),
        float(p_long[1]),
        float(q_long[0]),
        float(q_long[1]),
        float(a_pt[0]),
        float(a_pt[1]),
        float(b_pt[0]),
        float(b_pt[1]),
    )
