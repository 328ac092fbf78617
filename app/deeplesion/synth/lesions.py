"""Synthetic lesions: 3-D ellipsoids placed inside the organ matching their type, and RECIST measurement."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.deeplesion.synth import anatomy as an
from app.deeplesion.synth.raster import Canvas, Grid, ellipse_dist, soft

# Type frequencies of the real DL_info.csv (coarse types 1..8), used to draw synthetic lesion types.
TYPE_WEIGHTS: dict[int, float] = {5: 0.23, 2: 0.22, 3: 0.17, 4: 0.15, 8: 0.08, 7: 0.07, 6: 0.05, 1: 0.03}


@dataclass(frozen=True)
class Site:
    """Where a lesion type lives: host tissue labels, reference z range, x limit and largest size."""

    name: str
    hosts: frozenset[int]
    z_range: tuple[float, float]
    max_diameter_mm: float
    max_abs_x: float = 1e9


SITES: dict[int, Site] = {
    1: Site("bone", frozenset({an.BONE}), (40.0, 450.0), 30.0, 30.0),
    2: Site("abdomen", frozenset({an.CAVITY_FAT, an.PANCREAS}), (300.0, 450.0), 70.0),
    3: Site("mediastinum", frozenset({an.CAVITY_FAT}), (45.0, 150.0), 40.0, 55.0),
    4: Site("liver", frozenset({an.LIVER}), (225.0, 335.0), 80.0),
    5: Site("lung", frozenset({an.LUNG}), (35.0, 240.0), 45.0),
    6: Site("kidney", frozenset({an.KIDNEY}), (325.0, 395.0), 45.0),
    7: Site("soft tissue", frozenset({an.SUBCUT_FAT, an.MUSCLE}), (20.0, 600.0), 50.0),
    8: Site("pelvis", frozenset({an.CAVITY_FAT, an.BLADDER}), (520.0, 610.0), 60.0),
}


@dataclass(frozen=True)
class LesionShape:
    """A lesion as it is in one study: an ellipsoid in physical body mm, with its HU and texture."""

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]  # in-plane major, in-plane minor, z
    angle: float  # in-plane rotation of the major axis, radians
    hu: float
    texture_hu: float
    texture_k: tuple[float, float, float, float]  # kx, ky, kz (rad/mm), phase
    edge_mm: float

    def cross_section(self, z_mm: float) -> tuple[float, float] | None:
        """In-plane semi-axes (mm) of the cut at z, or None when the plane misses the lesion."""
        u = (z_mm - self.centre[2]) / self.semi_axes[2]
        if abs(u) >= 1.0:
            return None
        f = math.sqrt(1.0 - u * u)
        return self.semi_axes[0] * f, self.semi_axes[1] * f

    def paint(self, canvas: Canvas, z_mm: float, scale: float, z_scale: float) -> None:
        """Paint the cut at physical z onto a reference-mm canvas (scale converts physical -> reference)."""
        del z_scale
        cut = self.cross_section(z_mm)
        if cut is None:
            return
        a, b = cut[0] / scale, cut[1] / scale
        cx, cy = self.centre[0] / scale, self.centre[1] / scale
        r = max(a, b) + 3 * canvas.edge
        win = canvas.window(cx - r, cx + r, cy - r, cy + r)
        if win is None:
            return
        alpha = soft(
            ellipse_dist(win.X, win.Y, cx, cy, a, b, self.angle), max(canvas.edge, self.edge_mm / scale)
        )
        kx, ky, kz, ph = self.texture_k
        value = np.float32(self.hu) + np.float32(self.texture_hu) * np.sin(
            win.X * np.float32(kx * scale) + np.float32(ph)
        ) * np.cos(win.Y * np.float32(ky * scale) + np.float32(kz * z_mm))
        canvas.paint(win, alpha, value, an.LESION)

    def mask(self, grid: Grid, z_mm: float) -> tuple[npt.NDArray[np.bool_], int, int] | None:
        """Pixels of the cut at z on the pixel grid (alpha >= 0.5), with the window's (col0, row0)."""
        cut = self.cross_section(z_mm)
        if cut is None:
            return None
        a, b = cut
        r = max(a, b) + 2 * grid.spacing
        c0, r0 = grid.to_px(self.centre[0] - r, self.centre[1] - r)
        c1, r1 = grid.to_px(self.centre[0] + r, self.centre[1] + r)
        i0, j0 = max(0, int(math.floor(c0))), max(0, int(math.floor(r0)))
        i1, j1 = min(grid.size, int(math.ceil(c1)) + 1), min(grid.size, int(math.ceil(r1)) + 1)
        if i0 >= i1 or j0 >= j1:
            return None
        xs = (grid.x0 + np.arange(i0, i1) * grid.spacing).astype(np.float32)[None, :]
        ys = (grid.y0 + np.arange(j0, j1) * grid.spacing).astype(np.float32)[:, None]
        inside = ellipse_dist(xs, ys, self.centre[0], self.centre[1], a, b, self.angle) >= 0
        if not inside.any():
            return None
        return inside, i0, j0


@dataclass(frozen=True)
class Lesion:
    """A physical lesion of one patient (baseline size) and how it changes over the studies."""

    index: int
    lesion_type: int
    site: str
    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    angle: float
    hu: float
    texture_hu: float
    texture_k: tuple[float, float, float, float]
    edge_mm: float
    growth_per_year: float
    host: str

    def at_scale(self, scale: float) -> LesionShape:
        """The lesion grown or shrunk by `scale` (same centre)."""
        a, b, c = self.semi_axes
        return LesionShape(
            self.centre,
            (a * scale, b * scale, c * scale),
            self.angle,
            self.hu,
            self.texture_hu,
            self.texture_k,
            self.edge_mm,
        )

    def scale_at(self, months: float) -> float:
        """Size factor at `months` after the first study."""
        return float(np.clip(math.exp(self.growth_per_year * months / 12.0), 0.5, 1.6))


def _host_labels(phantom: an.Phantom, z_mm: float, grid: Grid) -> npt.NDArray[np.uint8]:
    """The tissue label map of the lesion-free phantom at z on a coarse grid."""
    _, labels = phantom.render(z_mm, grid, with_labels=True)
    assert labels is not None
    return labels


def _lesion_hu(
    lesion_type: int, host: int, phantom: an.Phantom, rng: np.random.Generator
) -> tuple[float, str]:
    """HU of a lesion of this type against its host, as in deeplesion.md's reference values."""
    if lesion_type == 5:
        return rng.uniform(10, 45), "solid nodule"
    if lesion_type == 4:
        return phantom.liver_hu - rng.uniform(25, 60), "hypodense"
    if lesion_type == 6:
        return rng.uniform(0, 20), "simple cyst"
    if lesion_type == 1:
        if rng.random() < 0.6:
            return rng.uniform(30, 70), "lytic"
        return rng.uniform(650, 1000), "sclerotic"
    if lesion_type == 7 and host == an.MUSCLE:
        return rng.uniform(75, 100), "enhancing"
    return rng.uniform(32, 58), "soft tissue"


def place_lesions(
    phantom: an.Phantom, rng: np.random.Generator, count: int, *, sibling_rate: float = 0.2
) -> list[Lesion]:
    """Draw `count` lesions of realistic types and sizes, each fully inside its matching organ."""
    grid = Grid.centred(160, 2.8, (80.0, 80.0))
    types = list(TYPE_WEIGHTS)
    weights = np.array([TYPE_WEIGHTS[t] for t in types])
    lesions: list[Lesion] = []
    label_cache: dict[float, npt.NDArray[np.uint8]] = {}

    def labels_at(z: float) -> npt.NDArray[np.uint8]:
        key = round(z, 1)
        if key not in label_cache:
            label_cache[key] = _host_labels(phantom, key, grid)
        return label_cache[key]

    def host_at(x: float, y: float, z: float) -> int:
        col, row = grid.to_px(x, y)
        i, j = int(round(col)), int(round(row))
        if not (0 <= i < grid.size and 0 <= j < grid.size):
            return -1
        return int(labels_at(z)[j, i])

    attempts = 0
    while len(lesions) < count and attempts < 40 * count:
        attempts += 1
        ltype = int(rng.choice(types, p=weights / weights.sum()))
        site = SITES[ltype]
        if lesions and rng.random() < sibling_rate:
            # Several lesions on one key slice, as in the real file: reuse an earlier lesion's height.
            z = lesions[int(rng.integers(len(lesions)))].centre[2]
            zr = z / phantom.z_scale
            if not site.z_range[0] <= zr <= site.z_range[1]:
                continue
        else:
            zr = rng.uniform(*site.z_range)
            z = zr * phantom.z_scale
        labels = labels_at(z)
        ok = np.isin(labels, list(site.hosts))
        if site.max_abs_x < 1e8:
            xs_row = (grid.x0 + np.arange(grid.size) * grid.spacing) / phantom.scale
            ok &= (np.abs(xs_row) <= site.max_abs_x)[None, :]
        cand = np.argwhere(ok)
        if len(cand) == 0:
            continue
        j, i = cand[int(rng.integers(len(cand)))]
        cx, cy = grid.to_mm(float(i), float(j))
        host = int(labels[j, i])
        diameter = float(np.clip(rng.lognormal(math.log(17.0), 0.55), 5.0, site.max_diameter_mm))
        angle = rng.uniform(0, math.pi)
        for _ in range(7):
            a = diameter / 2.0
            b = a * (rng.uniform(0.85, 1.0) if ltype == 6 else rng.uniform(0.6, 0.95))
            c = a * rng.uniform(0.7, 1.0)
            if _fits(host_at, site.hosts, (cx, cy, z), (a, b, c), angle) and _apart(lesions, (cx, cy, z), a):
                break
            diameter *= 0.75
            if diameter < 5.0:
                a = 0.0
                break
        else:
            a = 0.0
        if a <= 0.0:
            continue
        hu, _kind = _lesion_hu(ltype, host, phantom, rng)
        lesions.append(
            Lesion(
                index=len(lesions) + 1,
                lesion_type=ltype,
                site=site.name,
                centre=(cx, cy, z),
                semi_axes=(a, b, c),
                angle=angle,
                hu=float(hu),
                texture_hu=float(rng.uniform(3, 8)),
                texture_k=(
                    float(rng.uniform(0.3, 0.8)),
                    float(rng.uniform(0.3, 0.8)),
                    float(rng.uniform(0.2, 0.6)),
                    float(rng.uniform(0, 2 * math.pi)),
                ),
                edge_mm=0.6 if ltype == 6 else float(rng.uniform(0.8, 2.0)),
                growth_per_year=float(rng.normal(0.15, 0.5)),
                host=an.LABEL_NAMES[host],
            )
        )
    return lesions


def _fits(
    host_at: Callable[[float, float, float], int],
    hosts: frozenset[int],
    centre: tuple[float, float, float],
    axes: tuple[float, float, float],
    angle: float,
) -> bool:
    """True when the centre, 8 points around the rim and the points above and below lie in host tissue."""
    cx, cy, z = centre
    a, b, c = axes
    if host_at(cx, cy, z) not in hosts:
        return False
    ca, sa = math.cos(angle), math.sin(angle)
    for k in range(8):
        t = k * math.pi / 4
        u, v = 0.95 * a * math.cos(t), 0.95 * b * math.sin(t)
        if host_at(cx + ca * u - sa * v, cy + sa * u + ca * v, z) not in hosts:
            return False
    return all(host_at(cx, cy, z + dz) in hosts for dz in (-0.8 * c, 0.8 * c))


def _apart(lesions: list[Lesion], centre: tuple[float, float, float], a: float) -> bool:
    """True when a new lesion of radius about `a` would not touch an existing one (growth allowed)."""
    for other in lesions:
        d = math.dist(other.centre, centre)
        if d < 1.6 * (a + other.semi_axes[0]) + 4.0:
            return False
    return True


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
