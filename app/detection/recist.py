"""RECIST proposals for detector boxes: segment the lesion in the box on the HU slice, then measure it.

A documented post-processing step, not part of the graph, so every model under the contract gets it:
1. the box without the dataset's padding is the lesion's extent; a ring around it is its surroundings;
2. the lesion's HU is the median of the box centre, the surroundings' the median of the ring; pixels on
   the lesion's side of their midpoint (after a mean over a few % of the box) are lesion candidates; when a
   band inside the box's edge is clearly fainter than the centre but still differs from the surroundings
   (a ground-glass halo round a solid core), the midpoint is taken between that band and the surroundings;
   when the centre matches the surroundings (a necrotic core), the band (the lesion's wall) is the lesion;
3. the candidates within a superellipse a margin larger than the box (wider for such a faint edge, which a
   detector's box often stops short of), holes filled, opened by a disk scaled to the lesion's thickness
   (cuts spicules and bridges to touching tissue of like HU), the part connected to the box centre (or to
   the band, for a wall);
4. long axis: the longest diameter of that region (the farthest pair of its pixels, edge to edge);
   short axis: the longest chord perpendicular to it (RECIST 1.1's definitions; the rule that measures
   the phantoms' truth, app.deeplesion.geometry.measure_recist).
When the slice gives no usable region (too little contrast, a region far smaller or shorter than the box),
and for the detections of a slice after its best SEGMENTED_PER_SLICE, the proposal is the box's: axes along
its unpadded sides through its centre.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from app.deeplesion.geometry import measure_recist
from app.deeplesion.schema import BOX_PADDING_PX
from app.detection.decode import Detection

Recist = tuple[float, float, float, float, float, float, float, float]
# Lesion and surroundings must differ by this much (HU) for the segmentation to be trusted.
MIN_CONTRAST_HU = 12.0
# The ring of surroundings, as a fraction of the box's longer side (at least RING_MIN_PX).
RING_FRACTION = 0.35
RING_MIN_PX = 4
# The segmented region may reach this far (fraction of the box side) outside the unpadded box: a small
# margin, since tissue of like HU touching the lesion broadly (which no opening cuts) leaks up to it.
MARGIN_FRACTION = 0.06
# The shape of that reach: |x/a|^p + |y/b|^p <= 1. An ellipse (p = 2) cuts off the tips of a lesion lying
# along the box's diagonal; p = 4 keeps the corners with the small margin, short of the full rectangle.
REACH_POWER = 4
# Detections of one slice whose proposal is segmented (a few ms each); the rest get the box's axes, which
# keeps a slice with many low scores within the latency target.
SEGMENTED_PER_SLICE = 10
# Radius of the smoothing mean, as a fraction of the box's shorter semi-axis (at least 1 px).
SMOOTH_FRACTION = 0.08
# Radius of the opening (a disk), as a fraction of the lesion's half thickness (at most the box's shorter
# semi-axis): it cuts spicules and bridges to touching tissue; a square's corners let spicules' bases through.
OPENING_FRACTION = 0.4
# The band inside the box's edge (fractions of the inscribed ellipse) whose HU marks a fainter outer part
# (a ground-glass halo) when it differs from the surroundings by EDGE_MIN_HU or more, and by at most
# EDGE_SHARE of what the centre does.
EDGE_BAND = (0.7, 0.95)
EDGE_MIN_HU = 60.0
EDGE_SHARE = 0.7
# The margin for a lesion with a fainter outer part, whose faint edge a detector's box often stops short of.
FAINT_MARGIN_FRACTION = 0.3
# The centre whose median HU is the lesion's, as a fraction of the box's inscribed ellipse.
CENTRE_RADIUS = 0.3
# A segmented long axis under this share of the unpadded box's longer side is a part of the lesion.
MIN_LONG_SHARE = 0.7
# A region covering less than this fraction of the box's inscribed ellipse is noise, not the lesion.
MIN_FILL = 0.2


def box_recist(box: Sequence[float], pad: float = BOX_PADDING_PX) -> Recist:
    """The fallback proposal: long and short axis along the unpadded box's sides, through its centre."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 - x1 > 2 * pad + 1:
        x1, x2 = x1 + pad, x2 - pad
    if y2 - y1 > 2 * pad + 1:
        y1, y2 = y1 + pad, y2 - pad
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    horizontal = (x1, cy, x2, cy)
    vertical = (cx, y1, cx, y2)
    long_axis, short_axis = (horizontal, vertical) if x2 - x1 >= y2 - y1 else (vertical, horizontal)
    return (*long_axis, *short_axis)


def _box_mean(a: np.ndarray, radius: int) -> np.ndarray:
    """(2r+1)^2 mean with edges replicated: takes the edge off CT noise and texture before thresholding."""
    size = 2 * radius + 1
    p = np.pad(a.astype(np.float64), radius, mode="edge")
    csum = np.pad(p.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = a.shape
    total = csum[size:, size:] - csum[:-size, size:] - csum[size:, :-size] + csum[:-size, :-size]
    return np.asarray(total[:h, :w] / (size * size), dtype=np.float32)


def _grow(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The pixels of `allowed` 4-connected to `seed` (geodesic dilation until nothing changes)."""
    region = seed & allowed
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= allowed
        if np.array_equal(grown, region):
            return region
        region = grown


def _disk(mask: np.ndarray, radius: int, *, erode: bool) -> np.ndarray:
    """Binary erosion or dilation by a disk of `radius` px, the outside counting as background."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    # r^2 + r keeps the pixels a disk of radius r + 1/2 covers: a digital disk without single-pixel tips.
    disk = xx * xx + yy * yy <= radius * radius + radius
    if erode:
        return np.asarray(ndimage.binary_erosion(mask, disk, border_value=0))
    return np.asarray(ndimage.binary_dilation(mask, disk))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every background part that does not reach the border filled in."""
    border = np.zeros_like(mask)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    outside = _grow(border & ~mask, ~mask)
    return np.asarray(~outside)


def segment_lesion(
    hu: np.ndarray, box: Sequence[float], pad: float = BOX_PADDING_PX
) -> tuple[np.ndarray, int, int] | None:
    """The lesion in `box` as a mask window and its (col0, row0) on the slice; None when it shows none."""
    img = np.asarray(hu, dtype=np.float32)
    h, w = img.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 - x1 > 2 * pad + 2:
        x1, x2 = x1 + pad, x2 - pad
    if y2 - y1 > 2 * pad + 2:
        y1, y2 = y1 + pad, y2 - pad
    side = max(x2 - x1, y2 - y1, 1.0)
    ring = max(RING_MIN_PX, math.ceil(RING_FRACTION * side))
    c0, r0 = max(0, math.floor(x1) - ring), max(0, math.floor(y1) - ring)
    c1, r1 = min(w, math.ceil(x2) + ring + 1), min(h, math.ceil(y2) + ring + 1)
    if c1 - c0 < 3 or r1 - r0 < 3:
        return None
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    ax, ay = max((x2 - x1) / 2, 0.5), max((y2 - y1) / 2, 0.5)
    crop = _box_mean(img[r0:r1, c0:c1], max(1, round(SMOOTH_FRACTION * min(ax, ay))))
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    ell = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
    centre = ell <= CENTRE_RADIUS**2
    if not centre.any():
        centre = ell <= ell.min()
    inside_box = (xx >= x1 - 0.5) & (xx <= x2 + 0.5) & (yy >= y1 - 0.5) & (yy <= y2 + 0.5)
    surround = ~inside_box
    if surround.sum() < 8:
        return None
    lesion_hu = float(np.median(crop[centre]))
    around_hu = float(np.median(crop[surround]))
    band = (ell >= EDGE_BAND[0] ** 2) & (ell <= EDGE_BAND[1] ** 2)
    seed_at = centre
    if abs(lesion_hu - around_hu) < MIN_CONTRAST_HU:
        # A necrotic or cystic centre of about the surroundings' HU: only the wall inside the edge shows the
        # lesion, so its HU is the lesion's and the region grows from it (the filled wall holds the centre).
        if not band.any():
            return None
        lesion_hu = float(np.median(crop[band]))
        if abs(lesion_hu - around_hu) < MIN_CONTRAST_HU:
            return None
        seed_at = band
    # A part-solid lesion (a ground-glass halo round a solid core) is as large as its fainter outer part: when
    # the band inside the box's edge differs from the surroundings but clearly less than the centre does, the
    # threshold sits between the surroundings and that band, not the centre.
    level, margin = lesion_hu, MARGIN_FRACTION
    if band.any() and seed_at is centre:
        edge_hu = float(np.median(crop[band]))
        sign = 1.0 if lesion_hu > around_hu else -1.0
        edge_contrast, contrast = sign * (edge_hu - around_hu), sign * (lesion_hu - around_hu)
        if edge_contrast >= EDGE_MIN_HU and edge_contrast <= EDGE_SHARE * contrast:
            level, margin = edge_hu, FAINT_MARGIN_FRACTION
    mid = (level + around_hu) / 2
    candidate = crop >= mid if lesion_hu > around_hu else crop <= mid
    mx, my = margin * (x2 - x1) + 1, margin * (y2 - y1) + 1
    # Where the lesion may reach: a superellipse a margin larger than the box's bounds (see REACH_POWER).
    reach = np.abs((xx - cx) / (ax + mx)) ** REACH_POWER + np.abs((yy - cy) / (ay + my)) ** REACH_POWER
    candidate &= reach <= 1.0
    candidate = _fill_holes(candidate)
    # An opening cuts the bridges through which the region would leak into touching tissue of like HU, and
    # spicules. Its radius follows the lesion's half thickness (the deepest seed pixel), not the box's: the
    # box of a thin lesion lying along its diagonal is far wider than the lesion, whose tips it would cut.
    depth = ndimage.distance_transform_edt(candidate)[seed_at & candidate]
    half = min(ax, ay, float(depth.max())) if depth.size else min(ax, ay)
    radius = max(1, round(OPENING_FRACTION * half))
    core = _disk(candidate, radius, erode=True)
    seed = _grow(seed_at & core, core)
    if not seed.any():
        seed = _grow(seed_at & candidate, candidate)
        region = seed
    else:
        region = _disk(seed, radius, erode=False) & candidate
    region = _fill_holes(region)
    area = float(region.sum())
    if area < MIN_FILL * math.pi * ax * ay or area < 3:
        return None
    rows, cols = np.nonzero(region)
    return region[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1], c0 + cols.min(), r0 + rows.min()


def propose_recist(hu: np.ndarray, box: Sequence[float], pad: float = BOX_PADDING_PX) -> Recist:
    """RECIST end points (long axis, then short axis; original pixels) proposed for a box on a HU slice."""
    img = np.asarray(hu)
    found = segment_lesion(img, box, pad)
    if found is None:
        rec = box_recist(box, pad)
    else:
        inside, c0, r0 = found
        # The one RECIST rule of the project, also the one that measures the phantoms' truth.
        rec = tuple(float(v) for v in measure_recist(inside, c0, r0))  # type: ignore[assignment]
        # A region much shorter than the box is a part of the lesion (a bright patch or the core of a
        # heterogeneous mass): the box's axes measure it better.
        bx = box_recist(box, pad)
        if math.dist(rec[0:2], rec[2:4]) < MIN_LONG_SHARE * math.dist(bx[0:2], bx[2:4]):
            rec = bx
    h, w = img.shape
    clipped = [min(max(v, 0.0), float(w if i % 2 == 0 else h)) for i, v in enumerate(rec)]
    return (clipped[0], clipped[1], clipped[2], clipped[3], clipped[4], clipped[5], clipped[6], clipped[7])


def with_recist(
    detections: Sequence[Detection], key_hu: np.ndarray, segmented: int = SEGMENTED_PER_SLICE
) -> list[Detection]:
    """The detections, each with a RECIST proposal: segmented for the best `segmented`, box-based after."""
    return [
        dataclasses.replace(d, recist=propose_recist(key_hu, d.box) if i < segmented else box_recist(d.box))
        for i, d in enumerate(detections)
    ]
