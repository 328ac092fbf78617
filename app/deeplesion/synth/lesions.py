"""Synthetic lesions: 3-D ellipsoids placed inside the organ matching their type, and RECIST measurement."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.deeplesion.synth import anatomy as an
from app.deeplesion.synth.acquisition import PHASES
from app.deeplesion.synth.raster import F32, Canvas, Grid, ellipse_dist, segment_dist_3d, soft

# Type frequencies of the real DL_info.csv (coarse types 1..8), used to draw synthetic lesion types.
TYPE_WEIGHTS: dict[int, float] = {5: 0.23, 2: 0.22, 3: 0.17, 4: 0.15, 8: 0.08, 7: 0.07, 6: 0.05, 1: 0.03}
# Long diameters: log-normal around 18 mm, so that about a fifth of the lesions exceed 30 mm and a few
# reach 100 mm and more, as DeepLesion's (0.42 to 342.5 mm) do; each site caps them.
SIZE_MEDIAN_MM = 18.0
SIZE_SIGMA = 0.7
LARGE_MM = 30.0
# A lesion placed near another in z (place_lesions' z_near_mm) ends this far from the other's centre height,
# so that it misses the other's key slice (at most half the widest slice interval, 2.5 mm, from the centre).
NEAR_CLEAR_MM = 3.0
# What a lesion looks like inside (see LesionShape.paint), per type: (kind, weight, smallest long diameter).
KINDS: dict[int, tuple[tuple[str, float, float], ...]] = {
    1: (("lytic", 0.6, 0.0), ("sclerotic", 0.4, 0.0)),
    2: (("solid", 0.45, 0.0), ("necrotic", 0.25, 20.0), ("conglomerate", 0.2, 25.0), ("cystic", 0.1, 0.0)),
    3: (("solid", 0.5, 0.0), ("necrotic", 0.2, 18.0), ("conglomerate", 0.3, 25.0)),
    4: (("metastasis", 0.45, 0.0), ("hypervascular", 0.15, 0.0), ("cyst", 0.2, 0.0), ("necrotic", 0.2, 25.0)),
    5: (("solid", 0.4, 0.0), ("spiculated", 0.25, 8.0), ("ground glass", 0.15, 0.0), ("necrotic", 0.2, 28.0)),
    6: (("cyst", 0.55, 0.0), ("solid", 0.45, 0.0)),
    7: (("solid", 0.5, 0.0), ("rim", 0.25, 15.0), ("necrotic", 0.25, 25.0)),
    8: (("solid", 0.45, 0.0), ("necrotic", 0.25, 20.0), ("conglomerate", 0.2, 25.0), ("cystic", 0.1, 0.0)),
}


@dataclass(frozen=True)
class Site:
    """Where a lesion type lives: host tissue labels, reference z range, x limit and largest size."""

    name: str
    hosts: frozenset[int]
    z_range: tuple[float, float]
    max_diameter_mm: float
    max_abs_x: float = 1e9


SITES: dict[int, Site] = {
    1: Site("bone", frozenset({an.BONE}), (40.0, 450.0), 45.0, 30.0),
    2: Site("abdomen", frozenset({an.CAVITY_FAT, an.PANCREAS}), (300.0, 450.0), 130.0),
    3: Site("mediastinum", frozenset({an.CAVITY_FAT}), (45.0, 150.0), 75.0, 55.0),
    4: Site("liver", frozenset({an.LIVER}), (225.0, 335.0), 140.0),
    5: Site("lung", frozenset({an.LUNG}), (35.0, 240.0), 70.0),
    6: Site("kidney", frozenset({an.KIDNEY}), (325.0, 395.0), 80.0),
    7: Site("soft tissue", frozenset({an.SUBCUT_FAT, an.MUSCLE}), (20.0, 600.0), 80.0),
    8: Site("pelvis", frozenset({an.CAVITY_FAT, an.BLADDER}), (520.0, 610.0), 110.0),
}
# Tissue a large mass may push into at its rim (it displaces organs), and what it may never cross.
_DISPLACEABLE = frozenset({an.CAVITY_FAT, an.BOWEL, an.NODE, an.VESSEL, an.PANCREAS, an.STOMACH, an.MUSCLE})
# A lung mass may rest on the chest wall or the mediastinum (pleural based).
_PLEURA = frozenset({an.MUSCLE, an.CAVITY_FAT, an.SUBCUT_FAT})


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
    kind: str = "solid"
    core_hu: float = 0.0  # necrotic or cystic centre, or the solid part of a part-solid nodule
    core_frac: float = 0.0  # its size relative to the lesion; 0 = none
    rim_hu: float = 0.0  # enhancing rim (or capsule) over rim_mm inside the edge
    rim_mm: float = 0.0
    lobes: tuple[float, float, float] = (
        0.0,
        0.0,
        0.0,
    )  # boundary lobulation: amplitude (share), count, phase
    spicules: tuple[float, ...] = ()  # angles (radians) of spicules
    hetero_hu: float = 0.0  # coarse heterogeneity of a large mass

    def cross_section(self, z_mm: float) -> tuple[float, float] | None:
        """In-plane semi-axes (mm) of the cut at z, or None when the plane misses the lesion."""
        u = (z_mm - self.centre[2]) / self.semi_axes[2]
        if abs(u) >= 1.0:
            return None
        f = math.sqrt(1.0 - u * u)
        return self.semi_axes[0] * f, self.semi_axes[1] * f

    def _dist(self, X: F32, Y: F32, cx: float, cy: float, a: float, b: float) -> F32:
        """Signed distance (mm, positive inside) to the cut's outline, lobulated when the lesion is."""
        d = ellipse_dist(X, Y, cx, cy, a, b, self.angle)
        amp, count, phase = self.lobes
        if amp > 0:
            theta = np.arctan2(Y - np.float32(cy), X - np.float32(cx))
            d = d + np.float32(amp * min(a, b)) * np.cos(theta * np.float32(count) + np.float32(phase))
        return d

    def _value(self, X: F32, Y: F32, z_mm: float, scale: float) -> F32:
        """HU of the solid part with its fine texture and coarse heterogeneity (reference-mm coordinates)."""
        kx, ky, kz, ph = self.texture_k
        value = np.float32(self.hu) + np.float32(self.texture_hu) * np.sin(
            X * np.float32(kx * scale) + np.float32(ph)
        ) * np.cos(Y * np.float32(ky * scale) + np.float32(kz * z_mm))
        if self.hetero_hu:
            value = value + np.float32(self.hetero_hu) * np.sin(
                X * np.float32(0.23 * kx * scale) + Y * np.float32(0.19 * ky * scale) + np.float32(2 * ph)
            ) * np.sin(Y * np.float32(0.27 * kx * scale) - np.float32(0.1 * kz * z_mm) + np.float32(ph))
        return value

    def centre_hu(self, z_mm: float) -> float:
        """The noise-free HU painted at the lesion's centre on the slice at z (its core when it has one)."""
        if self.core_frac > 0:
            return self.core_hu
        x = np.array([[self.centre[0]]], dtype=np.float32)
        y = np.array([[self.centre[1]]], dtype=np.float32)
        return float(self._value(x, y, z_mm, 1.0)[0, 0])

    def paint(self, canvas: Canvas, z_mm: float, scale: float, z_scale: float) -> None:
        """Paint the cut at physical z onto a reference-mm canvas (scale converts physical -> reference)."""
        del z_scale
        cut = self.cross_section(z_mm)
        if cut is None:
            return
        a, b = cut[0] / scale, cut[1] / scale
        cx, cy = self.centre[0] / scale, self.centre[1] / scale
        reach = max(a, b) * (1.0 + self.lobes[0]) + (8.0 if self.spicules else 0.0)
        r = reach + 3 * canvas.edge
        win = canvas.window(cx - r, cx + r, cy - r, cy + r)
        if win is None:
            return
        edge = max(canvas.edge, self.edge_mm / scale)
        dist = self._dist(win.X, win.Y, cx, cy, a, b)
        alpha = soft(dist, edge)
        # Coordinates in physical mm for the texture, so it does not depend on the patient's scale.
        value = self._value(win.X * np.float32(scale), win.Y * np.float32(scale), z_mm, 1.0)
        if self.rim_mm > 0:
            inner = soft(dist - np.float32(self.rim_mm / scale), canvas.edge)
            value = value + (np.float32(1.0) - inner) * (np.float32(self.rim_hu) - value)
        if self.core_frac > 0:
            ca, cb = a * self.core_frac, b * self.core_frac
            core = soft(self._dist(win.X, win.Y, cx, cy, ca, cb), canvas.edge * 1.5)
            value = value + core * (np.float32(self.core_hu) - value)
        canvas.paint(win, alpha, value, an.LESION)
        for theta in self.spicules:
            # Thin strands from the surface into the lung; they do not count in the RECIST outline.
            ux, uy = math.cos(theta), math.sin(theta)
            p0 = (cx + 0.8 * a * ux, cy + 0.8 * a * uy, 0.0)
            p1 = (cx + (a + 7.0 / scale) * ux, cy + (a + 7.0 / scale) * uy, 0.0)
            d3, t = segment_dist_3d(win.X, win.Y, 0.0, p0, p1)
            width = np.float32(0.9 / scale) * (np.float32(1.0) - np.float32(0.7) * t)
            canvas.paint(win, soft(width - d3, canvas.edge) * np.float32(0.8), float(self.hu), None)

    def mask(self, grid: Grid, z_mm: float) -> tuple[npt.NDArray[np.bool_], int, int] | None:
        """Pixels of the cut at z on the pixel grid (alpha >= 0.5), with the window's (col0, row0)."""
        cut = self.cross_section(z_mm)
        if cut is None:
            return None
        a, b = cut
        r = max(a, b) * (1.0 + self.lobes[0]) + 2 * grid.spacing
        c0, r0 = grid.to_px(self.centre[0] - r, self.centre[1] - r)
        c1, r1 = grid.to_px(self.centre[0] + r, self.centre[1] + r)
        i0, j0 = max(0, int(math.floor(c0))), max(0, int(math.floor(r0)))
        i1, j1 = min(grid.size, int(math.ceil(c1)) + 1), min(grid.size, int(math.ceil(r1)) + 1)
        if i0 >= i1 or j0 >= j1:
            return None
        xs = (grid.x0 + np.arange(i0, i1) * grid.spacing).astype(np.float32)[None, :]
        ys = (grid.y0 + np.arange(j0, j1) * grid.spacing).astype(np.float32)[:, None]
        inside = self._dist(xs, ys, self.centre[0], self.centre[1], a, b) >= 0
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
    hu: float  # solid part, portal venous phase
    texture_hu: float
    texture_k: tuple[float, float, float, float]
    edge_mm: float
    growth_per_year: float
    host: str
    kind: str = "solid"
    # HU of the solid part, the core and the rim in each phase of acquisition.PHASES.
    hu_by_phase: tuple[float, ...] = ()
    core_by_phase: tuple[float, ...] = ()
    rim_by_phase: tuple[float, ...] = ()
    core_frac: float = 0.0
    rim_mm: float = 0.0
    lobes: tuple[float, float, float] = (0.0, 0.0, 0.0)
    spicules: tuple[float, ...] = ()
    hetero_hu: float = 0.0
    # Placed near this lesion in z (place_lesions' z_near_mm); 0 = placed on its own.
    near: int = 0

    def at_scale(self, scale: float, phase: str = "portal venous") -> LesionShape:
        """The lesion grown or shrunk by `scale` (same centre), as it looks in a contrast phase."""
        a, b, c = self.semi_axes
        k = PHASES.index(phase)
        return LesionShape(
            self.centre,
            (a * scale, b * scale, c * scale),
            self.angle,
            self.hu_by_phase[k] if self.hu_by_phase else self.hu,
            self.texture_hu,
            self.texture_k,
            self.edge_mm,
            kind=self.kind,
            core_hu=self.core_by_phase[k] if self.core_by_phase else 0.0,
            core_frac=self.core_frac,
            rim_hu=self.rim_by_phase[k] if self.rim_by_phase else 0.0,
            rim_mm=self.rim_mm,
            lobes=self.lobes,
            spicules=self.spicules,
            hetero_hu=self.hetero_hu,
        )

    def scale_at(self, months: float) -> float:
        """Size factor at `months` after the first study."""
        return float(np.clip(math.exp(self.growth_per_year * months / 12.0), 0.5, 1.6))


def _host_labels(phantom: an.Phantom, z_mm: float, grid: Grid) -> npt.NDArray[np.uint8]:
    """The tissue label map of the lesion-free phantom at z on a coarse grid."""
    _, labels = phantom.render(z_mm, grid, with_labels=True)
    assert labels is not None
    return labels


@dataclass(frozen=True)
class _Look:
    """How a lesion of one kind appears in each phase: solid, core and rim HU, and its structure."""

    solid: tuple[float, ...]
    core: tuple[float, ...] = ()
    rim: tuple[float, ...] = ()
    core_frac: float = 0.0
    rim_mm: float = 0.0
    hetero_hu: float = 0.0


def _look(
    lesion_type: int, kind: str, host: int, phantom: an.Phantom, long_mm: float, rng: np.random.Generator
) -> _Look:
    """HU of a lesion of this type and kind against its host in every phase (deeplesion.md's values)."""
    enh = [phantom.with_phase(p).enh for p in PHASES]
    big = long_mm > LARGE_MM
    hetero = float(rng.uniform(10, 25)) if big else 0.0

    def per_phase(base: float, rise: float) -> tuple[float, ...]:
        # Rise with contrast in proportion to the soft-tissue enhancement of each phase.
        return tuple(base + rise * (e.node - enh[0].node) / max(1.0, enh[2].node - enh[0].node) for e in enh)

    water = tuple(float(rng.uniform(0, 18)) for _ in PHASES)
    necrosis = tuple([float(rng.uniform(8, 25))] * len(PHASES))
    if lesion_type == 1:
        if kind == "lytic":
            return _Look(per_phase(float(rng.uniform(30, 60)), 15.0))
        return _Look(
            tuple([float(rng.uniform(650, 1000))] * len(PHASES)), hetero_hu=float(rng.uniform(40, 120))
        )
    if lesion_type == 4:
        if kind == "cyst":
            return _Look(water)
        if kind == "hypervascular":
            # Brighter than liver in the arterial phase, washed out later, with a capsule when delayed.
            d = (float(rng.uniform(-12, -5)), float(rng.uniform(40, 75)), float(rng.uniform(-15, -4)),
                 float(rng.uniform(-25, -12)))  # fmt: skip
            solid = tuple(e.liver + dd for e, dd in zip(enh, d, strict=True))
            rim = tuple(v + (12.0 if p == "delayed" else 0.0) for v, p in zip(solid, PHASES, strict=True))
            return _Look(solid, rim=rim, rim_mm=1.5, hetero_hu=hetero)
        drop = float(rng.uniform(25, 60))
        solid = tuple(e.liver - drop * (0.35 if p == "non-contrast" else 0.8 if p == "arterial" else 1.0)
                      for e, p in zip(enh, PHASES, strict=True))  # fmt: skip
        # Metastases: a thin enhancing rim in the arterial and portal phases.
        rim = tuple(
            v + (30.0 if p in ("arterial", "portal venous") else 0.0)
            for v, p in zip(solid, PHASES, strict=True)
        )
        if kind == "necrotic":
            return _Look(solid, necrosis, rim, float(rng.uniform(0.4, 0.7)), 2.5, hetero)
        return _Look(solid, rim=rim, rim_mm=float(rng.uniform(1.0, 2.5)) if rng.random() < 0.5 else 0.0)
    if lesion_type == 6:
        if kind == "cyst":
            return _Look(water)
        # Renal cell carcinoma: enhancing, less than the cortex, often heterogeneous.
        solid = tuple(e.kidney_cortex - float(rng.uniform(40, 80)) if p != "non-contrast" else 35.0
                      for e, p in zip(enh, PHASES, strict=True))  # fmt: skip
        return _Look(solid, necrosis if big else (), (), 0.45 if big else 0.0, 0.0, hetero + 10.0)
    if lesion_type == 5:
        if kind == "ground glass":
            solid = tuple([float(rng.uniform(-700, -400))] * len(PHASES))
            if rng.random() < 0.5:
                return _Look(
                    solid, per_phase(float(rng.uniform(10, 40)), 15.0), core_frac=float(rng.uniform(0.3, 0.5))
                )
            return _Look(solid)
        solid = per_phase(float(rng.uniform(10, 45)), 20.0)
        if kind == "necrotic":
            return _Look(solid, necrosis, (), float(rng.uniform(0.35, 0.6)), 0.0, hetero)
        return _Look(solid, hetero_hu=hetero)
    if lesion_type == 7 and host == an.MUSCLE:
        solid = per_phase(float(rng.uniform(40, 55)), float(rng.uniform(30, 50)))
    else:
        solid = per_phase(float(rng.uniform(32, 50)), float(rng.uniform(15, 35)))
    if lesion_type == 2 and host == an.PANCREAS:
        solid = tuple(e.pancreas - float(rng.uniform(25, 50)) for e in enh)
    if kind == "cystic":
        return _Look(solid, water, (), float(rng.uniform(0.7, 0.85)), 0.0)
    if kind == "rim":
        rim = tuple(
            v + float(rng.uniform(30, 60)) * (0 if p == "non-contrast" else 1)
            for v, p in zip(solid, PHASES, strict=True)
        )
        return _Look(solid, necrosis, rim, float(rng.uniform(0.55, 0.75)), 3.0)
    if kind == "necrotic":
        return _Look(solid, necrosis, (), float(rng.uniform(0.35, 0.65)), 0.0, hetero)
    return _Look(solid, hetero_hu=hetero)


def _pick_kind(lesion_type: int, long_mm: float, rng: np.random.Generator) -> str:
    """A kind for this type among those possible at this size."""
    options = [(k, w) for k, w, smallest in KINDS[lesion_type] if long_mm >= smallest]
    weights = np.array([w for _, w in options])
    return options[int(rng.choice(len(options), p=weights / weights.sum()))][0]


def place_lesions(
    phantom: an.Phantom,
    rng: np.random.Generator,
    count: int,
    *,
    sibling_rate: float = 0.2,
    existing: Sequence[Lesion] = (),
    z_near_mm: tuple[float, float] | None = None,
) -> list[Lesion]:
    """Draw `count` lesions of realistic types, sizes and looks inside their organs (large ones may push)."""
    # With z_near_mm=(lo, hi) each new lesion lies lo..hi mm above or below one of `existing` (the sub-volume
    # model of missed lesions), kept apart from them all and small enough to end NEAR_CLEAR_MM before that
    # lesion's centre height; only the new lesions are returned, numbered after the existing ones.
    grid = Grid.centred(160, 2.8, (80.0, 80.0))
    types = list(TYPE_WEIGHTS)
    weights = np.array([TYPE_WEIGHTS[t] for t in types])
    lesions: list[Lesion] = list(existing)
    target = count + len(existing)
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
    while len(lesions) < target and attempts < 40 * count:
        attempts += 1
        ltype = int(rng.choice(types, p=weights / weights.sum()))
        site = SITES[ltype]
        anchor: Lesion | None = None
        largest = site.max_diameter_mm
        if z_near_mm is not None and existing:
            anchor = existing[int(rng.integers(len(existing)))]
            z = anchor.centre[2] + float(rng.choice((-1.0, 1.0))) * float(rng.uniform(*z_near_mm))
            zr = z / phantom.z_scale
            if not site.z_range[0] <= zr <= site.z_range[1]:
                continue
            largest = min(largest, 2.0 * (abs(z - anchor.centre[2]) - NEAR_CLEAR_MM))
        elif lesions and rng.random() < sibling_rate:
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
        if ltype == 5 and rng.random() < 0.35:
            # Against the pleura: lung pixels within 3 coarse pixels of the chest wall or mediastinum.
            wall = np.isin(labels, list(_PLEURA))
            near = np.zeros_like(wall)
            for dj in range(-3, 4):
                for di in range(-3, 4):
                    near |= np.roll(np.roll(wall, dj, axis=0), di, axis=1)
            if (ok & near).any():
                ok &= near
        cand = np.argwhere(ok)
        if len(cand) == 0:
            continue
        diameter = float(np.clip(rng.lognormal(math.log(SIZE_MEDIAN_MM), SIZE_SIGMA), 5.0, largest))
        angle = rng.uniform(0, math.pi)
        # Try several centres at the drawn size before shrinking it, so that big lesions stay big.
        placed: tuple[float, float, int, tuple[float, float, float]] | None = None
        while placed is None and diameter >= 5.0:
            a = diameter / 2.0
            b = a * (rng.uniform(0.85, 1.0) if ltype == 6 else rng.uniform(0.6, 0.95))
            c = a * rng.uniform(0.7, 1.0)
            for _ in range(6):
                j, i = cand[int(rng.integers(len(cand)))]
                cx, cy = grid.to_mm(float(i), float(j))
                if _fits(host_at, site, ltype, (cx, cy, z), (a, b, c), angle) and _apart(
                    lesions, (cx, cy, z), a
                ):
                    placed = (cx, cy, int(labels[j, i]), (a, b, c))
                    break
            diameter *= 0.85
        if placed is None:
            continue
        cx, cy, host, (a, b, c) = placed
        long_mm = 2.0 * a
        kind = _pick_kind(ltype, long_mm, rng)
        look = _look(ltype, kind, host, phantom, long_mm, rng)
        pv = PHASES.index("portal venous")
        lobes = (0.0, 0.0, 0.0)
        if kind == "conglomerate" or (long_mm > LARGE_MM and kind not in ("cyst", "ground glass")):
            lobes = (
                float(rng.uniform(0.06, 0.14)),
                float(rng.integers(3, 7)),
                float(rng.uniform(0, 2 * math.pi)),
            )
        spicules: tuple[float, ...] = ()
        if kind == "spiculated":
            spicules = tuple(
                float(t) for t in np.sort(rng.uniform(0, 2 * math.pi, size=int(rng.integers(6, 12))))
            )
        lesions.append(
            Lesion(
                index=len(lesions) + 1,
                lesion_type=ltype,
                site=site.name,
                centre=(cx, cy, z),
                semi_axes=(a, b, c),
                angle=angle,
                hu=float(look.solid[pv]),
                texture_hu=float(rng.uniform(3, 8)),
                texture_k=(
                    float(rng.uniform(0.3, 0.8)),
                    float(rng.uniform(0.3, 0.8)),
                    float(rng.uniform(0.2, 0.6)),
                    float(rng.uniform(0, 2 * math.pi)),
                ),
                edge_mm=0.6 if kind in ("cyst", "cystic") else float(rng.uniform(0.8, 2.0)),
                growth_per_year=float(rng.normal(0.15, 0.5)),
                host=an.LABEL_NAMES[host],
                kind=kind,
                hu_by_phase=tuple(round(v, 2) for v in look.solid),
                core_by_phase=tuple(round(v, 2) for v in look.core),
                rim_by_phase=tuple(round(v, 2) for v in look.rim),
                core_frac=look.core_frac if look.core else 0.0,
                rim_mm=look.rim_mm if look.rim else 0.0,
                lobes=lobes,
                spicules=spicules,
                hetero_hu=look.hetero_hu,
                near=anchor.index if anchor is not None else 0,
            )
        )
    return lesions[len(existing) :]


def _fits(
    host_at: Callable[[float, float, float], int],
    site: Site,
    lesion_type: int,
    centre: tuple[float, float, float],
    axes: tuple[float, float, float],
    angle: float,
) -> bool:
    """True when the centre and the rim lie in host tissue (a large mass may push into its surroundings)."""
    cx, cy, z = centre
    a, b, c = axes
    if host_at(cx, cy, z) not in site.hosts:
        return False
    # Vessels run through the liver, lungs and kidneys; a lesion there may abut or encase them.
    hosts = site.hosts | {an.VESSEL} if lesion_type in (4, 5, 6) else site.hosts
    # A small lesion lies wholly in its organ; a large one, or a lung mass on the pleura, keeps its centre
    # and most of its rim there and may displace soft tissue at the rest, never air, lung or bone.
    if lesion_type == 5:
        spill, allowed = 3, _PLEURA
    elif 2 * a > LARGE_MM and lesion_type != 1:
        spill, allowed = 3, _DISPLACEABLE | hosts
    else:
        spill, allowed = 0, hosts
    outside = 0
    ca, sa = math.cos(angle), math.sin(angle)
    for k in range(8):
        t = k * math.pi / 4
        u, v = 0.95 * a * math.cos(t), 0.95 * b * math.sin(t)
        h = host_at(cx + ca * u - sa * v, cy + sa * u + ca * v, z)
        if h in hosts:
            continue
        outside += 1
        if h not in allowed or outside > spill:
            return False
    above_below = [host_at(cx, cy, z + dz) in hosts for dz in (-0.8 * c, 0.8 * c)]
    # A vertebral lesion may reach a disc above or below.
    return any(above_below) if lesion_type == 1 else all(above_below)


def _apart(lesions: list[Lesion], centre: tuple[float, float, float], a: float) -> bool:
    """True when a new lesion of radius about `a` would not touch an existing one (growth allowed)."""
    for other in lesions:
        d = math.dist(other.centre, centre)
        if d < 1.6 * (a + other.semi_axes[0]) + 4.0:
            return False
    return True
