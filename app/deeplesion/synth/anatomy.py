"""An analytic 3-D torso phantom (neck to upper thighs) that renders CT-like axial slices in HU."""

# Body coordinates in mm: x to the patient's left (image right), y to the back (image down), z from
# head to feet with 0 near the lung apices. Every organ is a function of z, so consecutive slices
# agree. A patient is one random draw of sizes, shapes and positions around a reference anatomy;
# the reference is scaled by `scale` in-plane and `z_scale` along z.

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import numpy.typing as npt

from app.deeplesion.synth.acquisition import (
    Enhancement,
    add_artefacts,
    apply_kernel,
    box3,
    enhancement,
    noise_field,
)
from app.deeplesion.synth.raster import (
    F32,
    U8,
    Canvas,
    Grid,
    Win,
    ellipse_dist,
    segment_dist_3d,
    segment_slab,
    soft,
)

# Label ids of the tissue map that `render(..., with_labels=True)` returns.
AIR, TABLE, SUBCUT_FAT, MUSCLE, CAVITY_FAT, LUNG, HEART, VESSEL, AIRWAY = 0, 1, 2, 3, 4, 5, 6, 7, 8
LIVER, SPLEEN, KIDNEY, PANCREAS, STOMACH, BOWEL, GALLBLADDER, BLADDER, BONE = (
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
)
CSF, LESION, SKIN = 18, 19, 20
# Normal structures that look like lesions to a detector (never lesions, never in DL_info.csv).
NODE, ADRENAL, URETER, CALCIFICATION, NERVE = 21, 22, 23, 24, 25
CONFUSER_LABELS = frozenset({VESSEL, BOWEL, NODE, ADRENAL, URETER, CALCIFICATION, NERVE, CSF, GALLBLADDER})
LABEL_NAMES: dict[int, str] = {
    AIR: "air",
    TABLE: "table",
    SUBCUT_FAT: "subcutaneous fat",
    MUSCLE: "muscle",
    CAVITY_FAT: "cavity fat",
    LUNG: "lung",
    HEART: "heart",
    VESSEL: "vessel",
    AIRWAY: "airway",
    LIVER: "liver",
    SPLEEN: "spleen",
    KIDNEY: "kidney",
    PANCREAS: "pancreas",
    STOMACH: "stomach",
    BOWEL: "bowel",
    GALLBLADDER: "gallbladder",
    BLADDER: "bladder",
    BONE: "bone",
    CSF: "csf",
    LESION: "lesion",
    SKIN: "skin",
    NODE: "lymph node",
    ADRENAL: "adrenal",
    URETER: "ureter",
    CALCIFICATION: "calcification",
    NERVE: "spinal cord and nerve roots",
}

# Reference z extent of the phantom (mm): lower neck to upper thighs.
Z_TOP = -20.0
Z_BOTTOM = 650.0
# z ranges (reference mm) of the body regions, used to choose scan ranges and lesion sites.
REGIONS: dict[str, tuple[float, float]] = {
    "chest": (-20.0, 290.0),
    "abdomen": (190.0, 470.0),
    "pelvis": (440.0, 650.0),
}

_NBINS = 1440
_THETA = np.linspace(-math.pi, math.pi, _NBINS, endpoint=False) + math.pi / _NBINS
_COS = np.cos(_THETA)
_SIN = np.sin(_THETA)

# Body outline and wall layers along z (reference mm): half width, anterior / posterior half depth,
# subcutaneous fat and muscle thickness.
_ZK = np.array([-20, 0, 40, 120, 220, 300, 400, 460, 520, 580, 650], dtype=float)
_HALF_WIDTH = np.array([128, 136, 148, 156, 158, 156, 158, 163, 170, 172, 168], dtype=float)
_ANT = np.array([82, 88, 98, 106, 110, 114, 116, 112, 104, 98, 92], dtype=float)
_POST = np.array([88, 92, 100, 104, 104, 100, 99, 100, 104, 106, 102], dtype=float)
_FAT = np.array([7, 7, 9, 11, 13, 17, 20, 21, 24, 24, 24], dtype=float)
_MUSCLE = np.array([22, 20, 17, 13, 12, 11, 11, 12, 16, 22, 26], dtype=float)
# Spine: y of the vertebral body centre, its half width and half depth.
_SZK = np.array([-20, 100, 250, 330, 430, 480, 530, 600, 650], dtype=float)
_VB_Y = np.array([30, 34, 30, 22, 18, 32, 52, 66, 70], dtype=float)
_VB_A = np.array([13, 15, 18, 21, 24, 24, 24, 24, 24], dtype=float)
_VB_B = np.array([12, 13, 15, 16, 17, 17, 17, 17, 17], dtype=float)


def _iz(z: float, knots: npt.NDArray[np.float64], values: npt.NDArray[np.float64]) -> float:
    """Piecewise-linear profile value at z."""
    return float(np.interp(z, knots, values))


def _bump(z: float, z0: float, z1: float) -> float:
    """Ellipsoidal z profile: 1 at the middle of [z0, z1], 0 outside."""
    if z <= z0 or z >= z1:
        return 0.0
    u = (2.0 * z - z0 - z1) / (z1 - z0)
    return math.sqrt(max(0.0, 1.0 - u * u))


def _ramp(z: float, z0: float, z1: float) -> float:
    """0 before z0, 1 after z1, a smooth square-root rise between."""
    if z <= z0:
        return 0.0
    if z >= z1:
        return 1.0
    return math.sqrt((z - z0) / (z1 - z0))


class Paintable(Protocol):
    """What the renderer needs from a lesion: paint its cut at a physical z onto a reference canvas."""

    def paint(self, canvas: Canvas, z_mm: float, scale: float, z_scale: float) -> None: ...


@dataclass
class _Tubes:
    """A set of 3-D tube segments (a, b, radius) with their z extents for quick selection."""

    seg: npt.NDArray[np.float64]  # (n, 7): ax, ay, az, bx, by, bz, r

    def active(self, z: float) -> npt.NDArray[np.float64]:
        """Segments that the plane z cuts."""
        if len(self.seg) == 0:
            return self.seg
        s = self.seg
        r = s[:, 6]
        lo = np.minimum(s[:, 2], s[:, 5]) - r
        hi = np.maximum(s[:, 2], s[:, 5]) + r
        return s[(lo <= z) & (z <= hi)]


def _tree(
    rng: np.random.Generator,
    root: npt.NDArray[np.float64],
    direction: npt.NDArray[np.float64],
    length: float,
    radius: float,
    depth: int,
) -> list[list[float]]:
    """A randomly branching vessel tree as tube segments (planar bifurcations, shrinking children)."""
    segs: list[list[float]] = []
    stack = [(root, direction / np.linalg.norm(direction), length, radius, depth)]
    while stack:
        p, d, length_, r, k = stack.pop()
        q = p + d * length_
        segs.append([*p, *q, r])
        if k <= 0 or r < 0.7:
            continue
        w = np.cross(d, rng.normal(size=3))
        w /= max(np.linalg.norm(w), 1e-9)
        for sign in (1.0, -1.0):
            ang = math.radians(rng.uniform(18, 38))
            nd = math.cos(ang) * d + sign * math.sin(ang) * w
            stack.append((q, nd, length_ * rng.uniform(0.68, 0.85), r * rng.uniform(0.66, 0.78), k - 1))
    return segs


@dataclass
class Phantom:
    """One synthetic patient's anatomy; `render` gives the axial slice at any z."""

    scale: float = 1.0
    z_scale: float = 1.0
    fat_factor: float = 1.0
    harmonics: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    # Contrast: bolus strength, unenhanced liver and peak aortic HU; `enh` holds the current phase's values.
    gain: float = 1.0
    liver_base: float = 58.0
    aorta_peak: float = 280.0
    enh: Enhancement = field(default_factory=lambda: enhancement("portal venous"))
    oral_contrast: float = 0.0  # HU of positive oral contrast in the bowel; 0 = none given
    gallbladder: float = 1.0  # size factor; 0 = removed
    gallstones: int = 0
    colon_gas: float = 0.25
    jitter: dict[str, tuple[float, float]] = field(default_factory=dict)
    lung_vessels: _Tubes = field(default_factory=lambda: _Tubes(np.zeros((0, 7))))
    liver_vessels: _Tubes = field(default_factory=lambda: _Tubes(np.zeros((0, 7))))
    portal_vessels: _Tubes = field(default_factory=lambda: _Tubes(np.zeros((0, 7))))
    mesenteric_vessels: _Tubes = field(default_factory=lambda: _Tubes(np.zeros((0, 7))))
    bowel: _Tubes = field(default_factory=lambda: _Tubes(np.zeros((0, 7))))
    bowel_kind: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    gas: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 4)))
    # Normal lymph nodes (x, y, z, a, b, c, angle, fatty hilum 0/1) and calcifications (x, y, z, r, HU).
    nodes: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 8)))
    calcs: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 5)))

    @property
    def liver_hu(self) -> float:
        """Liver attenuation in the current phase."""
        return self.enh.liver

    @property
    def phase(self) -> str:
        """The contrast phase this body is rendered in."""
        return self.enh.phase

    def with_phase(self, phase: str) -> Phantom:
        """The same body scanned in another contrast phase."""
        return replace(
            self,
            enh=enhancement(phase, gain=self.gain, liver_base=self.liver_base, aorta_peak=self.aorta_peak),
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(cls, rng: np.random.Generator, gender: str = "M") -> Phantom:
        """Draw one patient: size, fat, organ positions, vessel trees, bowel loops, nodes, calcifications."""
        male = gender == "M"
        ph = cls(
            # Patient sizes from slim to large: in-plane scale and subcutaneous fat vary independently.
            scale=float(np.clip(rng.normal(1.03 if male else 0.96, 0.06), 0.82, 1.15)),
            z_scale=float(rng.uniform(0.94, 1.06) * (1.02 if male else 0.97)),
            fat_factor=float(np.clip(rng.lognormal(0.0, 0.45), 0.4, 2.2)),
            harmonics=(
                float(rng.normal(0, 0.02)),
                float(rng.uniform(0, math.pi)),
                float(rng.normal(0, 0.012)),
                float(rng.uniform(0, 2 * math.pi)),
            ),
            gain=float(rng.uniform(0.85, 1.15)),
            liver_base=float(rng.uniform(54, 64)),
            aorta_peak=float(rng.uniform(230, 340)),
        )
        ph.enh = enhancement(
            "portal venous", gain=ph.gain, liver_base=ph.liver_base, aorta_peak=ph.aorta_peak
        )
        ph.oral_contrast = float(rng.uniform(200, 450)) if rng.random() < 0.4 else 0.0
        ph.gallbladder = 0.0 if rng.random() < 0.1 else float(rng.uniform(0.7, 1.25))
        ph.gallstones = int(rng.random() < 0.15) * int(rng.integers(1, 4))
        ph.colon_gas = float(rng.uniform(0.0, 0.6))
        for name in ("liver", "spleen", "kidney_r", "kidney_l", "heart", "stomach", "bladder"):
            ph.jitter[name] = (float(rng.normal(0, 4)), float(rng.normal(0, 4)))
        ph.lung_vessels = _Tubes(np.array(ph._lung_trees(rng), dtype=float))
        hepatic, portal = ph._liver_trees(rng)
        ph.liver_vessels = _Tubes(np.array(hepatic, dtype=float))
        ph.portal_vessels = _Tubes(np.array(portal, dtype=float))
        mesentery: list[list[float]] = []
        root = np.array([4.0, 0.0, 345.0])
        for d in ((0.1, -0.6, 1.0), (-0.8, -0.5, 0.8), (0.8, -0.5, 0.8), (0.0, -1.0, 0.3)):
            mesentery += _tree(rng, root, np.array(d) + rng.normal(0, 0.2, size=3), 40.0, 3.5, 4)
        ph.mesenteric_vessels = _Tubes(np.array(mesentery, dtype=float))
        ph._make_bowel(rng)
        ph.nodes = ph._make_nodes(rng)
        ph.calcs = ph._make_calcs(rng)
        return ph

    def _make_nodes(self, rng: np.random.Generator) -> npt.NDArray[np.float64]:
        """Normal-size lymph nodes (short axis 3-9 mm) in the stations where real CT shows them."""
        out: list[list[float]] = []

        def add(x: float, y: float, z: float) -> None:
            b = float(rng.uniform(1.5, 4.5))
            a = b * float(rng.uniform(1.1, 2.0))
            fatty = float(rng.random() < 0.3 and b > 2.5)
            out.append([x, y, z, a, b, float(rng.uniform(4.0, 10.0)), float(rng.uniform(0, math.pi)), fatty])

        # Station: count range, z, x and y ranges (reference mm); abdominal y is relative to the spine.
        for lo, hi, z0, z1, x0, x1, y0, y1, spine in (
            (2, 4, 50.0, 100.0, -10.0, 20.0, -56.0, -44.0, False),  # prevascular
            (1, 3, 40.0, 95.0, -20.0, -13.0, -8.0, 6.0, False),  # right paratracheal
            (1, 2, 95.0, 110.0, 14.0, 24.0, -14.0, -4.0, False),  # aortopulmonary window
            (1, 2, 122.0, 142.0, -2.0, 10.0, 2.0, 14.0, False),  # subcarinal
            (3, 7, 330.0, 450.0, -44.0, -36.0, -34.0, -20.0, True),  # right paracaval
            (3, 7, 330.0, 450.0, 24.0, 34.0, -34.0, -20.0, True),  # left para-aortic
            (8, 16, 350.0, 520.0, -60.0, 60.0, -80.0, -45.0, True),  # mesenteric
            (2, 5, 480.0, 600.0, -70.0, -45.0, -30.0, -5.0, True),  # right iliac
            (2, 5, 480.0, 600.0, 45.0, 70.0, -30.0, -5.0, True),  # left iliac
            (2, 4, 610.0, 650.0, -75.0, -55.0, -115.0, -100.0, True),  # right inguinal
            (2, 4, 610.0, 650.0, 55.0, 75.0, -115.0, -100.0, True),  # left inguinal
        ):
            for _ in range(int(rng.integers(lo, hi + 1))):
                z = float(rng.uniform(z0, z1))
                y = float(rng.uniform(y0, y1)) + (self.vb(z)[0] if spine else 0.0)
                add(float(rng.uniform(x0, x1)), y, z)
        return np.array(out, dtype=float).reshape(-1, 8)

    def _make_calcs(self, rng: np.random.Generator) -> npt.NDArray[np.float64]:
        """Calcified plaques on the aorta and iliac arteries, lung and spleen granulomas, phleboliths."""
        out: list[list[float]] = []
        if rng.random() < 0.6:
            for _ in range(int(rng.integers(3, 16))):
                z = float(rng.uniform(250.0, 560.0))
                vby, vba, _ = self.vb(z)
                for path, rad, kind in _vessel_paths(vby, vba):
                    c = _centre_at(path, z) if kind == "artery" and rad >= 6.5 else None
                    if c is None:
                        continue
                    ang = float(rng.uniform(0, 2 * math.pi))
                    out.append(
                        [
                            c[0] + rad * math.cos(ang),
                            c[1] + rad * math.sin(ang),
                            z,
                            float(rng.uniform(1.0, 2.2)),
                            float(rng.uniform(400, 1100)),
                        ]
                    )
                    break
        for _ in range(int(rng.integers(0, 4))):
            side = 1.0 if rng.random() < 0.5 else -1.0
            z = float(rng.uniform(60.0, 230.0))
            out.append(
                [
                    side * float(rng.uniform(55, 100)),
                    float(rng.uniform(-50, 50)),
                    z,
                    float(rng.uniform(1.0, 2.5)),
                    float(rng.uniform(300, 900)),
                ]
            )
        for _ in range(int(rng.integers(0, 3))):
            out.append(
                [
                    float(rng.uniform(75, 100)),
                    float(rng.uniform(30, 60)),
                    float(rng.uniform(250, 300)),
                    float(rng.uniform(0.8, 1.8)),
                    float(rng.uniform(300, 800)),
                ]
            )
        for _ in range(int(rng.integers(0, 5))):
            side = 1.0 if rng.random() < 0.5 else -1.0
            out.append(
                [
                    side * float(rng.uniform(35, 60)),
                    float(rng.uniform(-10, 30)),
                    float(rng.uniform(570, 630)),
                    float(rng.uniform(1.2, 2.8)),
                    float(rng.uniform(250, 700)),
                ]
            )
        return np.array(out, dtype=float).reshape(-1, 5)

    def _lung_trees(self, rng: np.random.Generator) -> list[list[float]]:
        """Pulmonary vessel trees fanning out from both hila."""
        segs: list[list[float]] = []
        for side in (-1.0, 1.0):
            hilum = np.array([side * 50.0, 2.0, 125.0])
            dirs = [
                (0.35 * side, -0.1, -1.0),
                (side, -0.2, -0.45),
                (side, 0.1, 0.15),
                (0.5 * side, -1.0, 0.1),
                (0.6 * side, 0.9, 0.5),
                (0.45 * side, 0.2, 1.0),
                (0.7 * side, 0.6, -0.4),
            ]
            for d in dirs + dirs:
                jd = np.array(d) + rng.normal(0, 0.25, size=3)
                segs += _tree(rng, hilum, jd, rng.uniform(26, 34), rng.uniform(4.0, 5.2), 6)
        return segs

    def _liver_trees(self, rng: np.random.Generator) -> tuple[list[list[float]], list[list[float]]]:
        """Hepatic veins converging on the IVC, and the portal vein with its branches."""
        hepatic: list[list[float]] = []
        ivc = np.array([-20.0, 18.0, 205.0])
        for target in ((-105, -15, 240), (-55, -60, 238), (15, -55, 245)):
            hepatic += _tree(rng, ivc, np.array(target) - ivc, 40.0, 5.0, 2)
        portal: list[list[float]] = []
        porta = np.array([-15.0, 10.0, 300.0])
        portal.append([-5.0, 20.0, 330.0, *porta, 7.0])
        for target in ((-90, -10, 265), (5, -45, 268), (-70, 25, 300)):
            portal += _tree(rng, porta, np.array(target) - porta, 35.0, 5.0, 2)
        return hepatic, portal

    def _make_bowel(self, rng: np.random.Generator) -> None:
        """Small-bowel loops: fluid, collapsed, oral contrast or gas filled, some with air-fluid levels."""
        segs: list[list[float]] = []
        kinds: list[float] = []
        gas: list[list[float]] = []
        # Content kinds: 0 fluid, 1 collapsed (wall only), 2 positive oral contrast, 3 gas.
        p = [0.3, 0.25, 0.35, 0.1] if self.oral_contrast else [0.5, 0.35, 0.0, 0.15]
        # Loops packed on a jittered lattice fill the mesentery the way small bowel does; each loop is a
        # short curved chain so that it runs through several slices and turns within the slice.
        for zc in np.arange(345.0, 546.0, 21.0):
            for yc in (-68.0, -44.0, -20.0):
                for xc in np.arange(-78.0, 79.0, 26.0):
                    p0 = np.array([xc, yc, zc]) + rng.uniform(-6, 6, size=3)
                    d = rng.normal(size=3)
                    d[2] *= 0.6
                    d /= np.linalg.norm(d)
                    r = rng.uniform(7.0, 12.0)
                    kind = float(rng.choice(4, p=p))
                    if kind == 1:
                        r *= 0.7
                    for _ in range(2):
                        q = p0 + d * rng.uniform(8, 16)
                        segs.append([*p0, *q, r])
                        kinds.append(kind)
                        d = d + rng.normal(0, 0.6, size=3)
                        d[2] *= 0.6
                        d /= np.linalg.norm(d)
                        p0 = q
                    if kind in (0, 2) and rng.random() < 0.3:
                        g = rng.uniform(2.5, r * 0.6)
                        gas.append([p0[0], p0[1] - (r - g - 2.5), p0[2], g])
        self.bowel = _Tubes(np.array(segs, dtype=float))
        self.bowel_kind = np.array(kinds)
        self.gas = np.array(gas, dtype=float).reshape(-1, 4)

    # ------------------------------------------------------------------ geometry helpers
    def z_ref(self, z_mm: float) -> float:
        """Physical z (mm) -> reference z."""
        return z_mm / self.z_scale

    def z_range_mm(self) -> tuple[float, float]:
        """Physical z extent of the phantom."""
        return (Z_TOP * self.z_scale, Z_BOTTOM * self.z_scale)

    def vb(self, zr: float) -> tuple[float, float, float]:
        """Vertebral body centre y and half axes at reference z."""
        return _iz(zr, _SZK, _VB_Y), _iz(zr, _SZK, _VB_A), _iz(zr, _SZK, _VB_B)

    def _j(self, name: str) -> tuple[float, float]:
        return self.jitter.get(name, (0.0, 0.0))

    def contour_tables(self, zr: float) -> tuple[F32, F32, F32]:
        """Per angle bin: body outline radius, subcutaneous fat and wall muscle thickness (reference mm)."""
        a = _iz(zr, _ZK, _HALF_WIDTH)
        ant = _iz(zr, _ZK, _ANT)
        post = _iz(zr, _ZK, _POST)
        c = np.cos(_THETA)
        s = np.sin(_THETA)
        b = np.where(s > 0, post, ant)
        p = np.where(s > 0, 2.8, 2.1)
        base = 1.0 / ((np.abs(c) / a) ** p + (np.abs(s) / b) ** p) ** (1.0 / p)
        h2, f2, h3, f3 = self.harmonics
        base = base * (1.0 + h2 * np.cos(2 * _THETA + f2) + h3 * np.cos(3 * _THETA + f3))
        # The groove over the spinous processes.
        post_dist = np.angle(np.exp(1j * (_THETA - math.pi / 2)))
        base = base - 4.0 * np.exp(-((post_dist / 0.12) ** 2))
        fat0 = _iz(zr, _ZK, _FAT) * (1.0 + 0.35 * c * c + 0.25 * np.clip(-s, 0, 1))
        fat = fat0 * self.fat_factor
        outline = base + fat - fat0
        muscle = _iz(zr, _ZK, _MUSCLE) * (1.0 + 0.3 * np.clip(-s, 0, 1))
        # Paraspinal muscles and the spine push the cavity forward at the back midline.
        vby, _, vbb = self.vb(zr)
        depth_at_spine = max(0.0, post - (vby - vbb) - muscle.max())
        muscle = muscle + depth_at_spine * np.exp(-((post_dist / 0.42) ** 2))
        return outline.astype(np.float32), fat.astype(np.float32), muscle.astype(np.float32)

    def landmarks(self) -> dict[str, tuple[int, tuple[float, float, float]]]:
        """Points (physical mm) known to lie inside an organ, with the label expected there."""
        out_ref: dict[str, tuple[int, tuple[float, float, float]]] = {}
        jx, jy = self._j("liver")
        out_ref["liver"] = (LIVER, (-62.0 + jx, 0.0 + jy, 270.0))
        jx, jy = self._j("spleen")
        out_ref["spleen"] = (SPLEEN, (88.0 + jx, 42.0 + jy, 268.0))
        out_ref["right lung"] = (LUNG, (-100.0, -25.0, 150.0))
        out_ref["left lung"] = (LUNG, (100.0, -25.0, 150.0))
        vby, _, _ = self.vb(368.0)
        jx, jy = self._j("kidney_r")
        out_ref["right kidney"] = (KIDNEY, (-70.0 + jx, vby + 8.0 + jy, 368.0))
        out_ref["aorta"] = (VESSEL, (19.1, 20.7, 200.0))
        vby, _, _ = self.vb(380.0)
        out_ref["vertebral body"] = (BONE, (0.0, vby, 380.0))
        jx, jy = self._j("bladder")
        out_ref["bladder"] = (BLADDER, (jx, -38.0 + jy, 592.0))
        # The front of the lower abdomen: below the ribs, so the wall layers are plain fat and muscle.
        outline, fat, muscle = self.contour_tables(420.0)
        front = _NBINS // 4
        out_ref["subcutaneous fat"] = (SUBCUT_FAT, (0.0, -float(outline[front] - fat[front] / 2), 420.0))
        out_ref["abdominal wall muscle"] = (
            MUSCLE,
            (0.0, -float(outline[front] - fat[front] - muscle[front] / 2), 420.0),
        )
        out_ref["air"] = (AIR, (0.0, -float(outline[front]) - 20.0, 420.0))
        return {
            name: (label, (x * self.scale, y * self.scale, z * self.z_scale))
            for name, (label, (x, y, z)) in out_ref.items()
        }

    def body_extent(self, z_mm: float) -> tuple[float, float, float, float]:
        """Physical (xmin, xmax, ymin, ymax) of the body outline at z."""
        outline, _, _ = self.contour_tables(self.z_ref(z_mm))
        xs = outline * np.cos(_THETA) * self.scale
        ys = outline * np.sin(_THETA) * self.scale
        return float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())

    # ------------------------------------------------------------------ rendering
    def render(
        self,
        z_mm: float,
        grid: Grid,
        lesions: Sequence[Paintable] = (),
        *,
        rng: np.random.Generator | None = None,
        noise_sd: float = 0.0,
        with_labels: bool = False,
        kernel: str = "standard",
        artefacts: float = 0.0,
    ) -> tuple[F32, U8 | None]:
        """The axial slice at physical z on `grid`: HU (float32) and, if asked, the tissue label map."""
        zr = self.z_ref(z_mm)
        # Draw in reference millimetres: the patient's in-plane size is a change of pixel size.
        ref = Grid(grid.size, grid.spacing / self.scale, grid.x0 / self.scale, grid.y0 / self.scale)
        cv = Canvas(ref, -1000.0, with_labels)
        cv.edge = 1.3 * grid.spacing / self.scale
        frame = self._body(cv, zr)
        self._table(cv, zr)
        self._lungs(cv, zr, frame)
        self._bowel(cv, zr, rng, frame)
        self._abdominal_organs(cv, zr, frame)
        self._mediastinum(cv, zr)
        self._vessels(cv, zr)
        self._muscles(cv, zr, frame)
        self._urinary(cv, zr)
        self._pelvic_organs(cv, zr)
        self._nodes(cv, zr)
        self._bones(cv, zr, frame)
        self._calcifications(cv, zr)
        for lesion in lesions:
            lesion.paint(cv, z_mm, self.scale, self.z_scale)
        hu = cv.hu
        if rng is not None and artefacts > 0:
            add_artefacts(hu, grid, rng, artefacts)
        hu = apply_kernel(hu, kernel)
        if rng is not None and noise_sd > 0:
            hu += noise_field(rng, hu.shape, noise_sd, kernel)
        np.clip(hu, -1024.0, 3071.0, out=hu)
        return hu, cv.labels

    def _nodes(self, cv: Canvas, zr: float) -> None:
        """Normal lymph nodes cut by the plane, some with a fatty hilum, drawn only into fat."""
        n = self.nodes
        if len(n) == 0:
            return
        u = (zr - n[:, 2]) / n[:, 5]
        for row, uu in zip(n[np.abs(u) < 1.0], u[np.abs(u) < 1.0], strict=True):
            f = math.sqrt(1.0 - float(uu) ** 2)
            x, y, a, b, ang = (
                float(row[0]),
                float(row[1]),
                float(row[3]) * f,
                float(row[4]) * f,
                float(row[6]),
            )
            if b < 0.8:
                continue
            win = cv.window(x - a - 2, x + a + 2, y - a - 2, y + a + 2)
            if win is None:
                continue
            here = cv.hu[win.sy, win.sx]
            in_fat = ((here > -200.0) & (here < -30.0)).astype(np.float32)
            alpha = soft(ellipse_dist(win.X, win.Y, x, y, a, b, ang), cv.edge) * in_fat
            value: F32 | float = self.enh.node
            if row[7] > 0:
                hilum = soft(ellipse_dist(win.X, win.Y, x, y, 0.5 * a, 0.4 * b, ang), cv.edge)
                value = np.float32(self.enh.node) + hilum * np.float32(-60.0 - self.enh.node)
            cv.paint(win, alpha, value, NODE)

    def _calcifications(self, cv: Canvas, zr: float) -> None:
        """Small dense calcifications (plaques, granulomas, phleboliths) as spheres."""
        c = self.calcs
        if len(c) == 0:
            return
        dz = zr - c[:, 2]
        for row, d in zip(c[np.abs(dz) < c[:, 3]], dz[np.abs(dz) < c[:, 3]], strict=True):
            rr = math.sqrt(max(0.0, float(row[3]) ** 2 - float(d) ** 2))
            if rr > 0.3:
                cv.ellipse(
                    float(row[0]), float(row[1]), rr, rr, float(row[4]), CALCIFICATION, edge=cv.grid.spacing
                )

    def _table(self, cv: Canvas, zr: float) -> None:
        """The patient table: a curved carbon shell with foam inside."""
        outline, _, _ = self.contour_tables(zr)
        post = float((outline * np.sin(_THETA)).max()) + 2.0
        win = cv.window(-230, 230, post - 40, post + 45)
        if win is None:
            return
        # A cradle: the sides curve up around the patient.
        top = win.Y - (np.float32(post) - np.float32(22.0) * (win.X / np.float32(230.0)) ** 2)
        side = soft(np.float32(205.0) - np.abs(win.X), cv.edge)
        shell = soft(np.float32(12.0) - np.abs(top - 12.0), cv.edge) * side
        cv.paint(win, shell, 200.0, TABLE)
        foam = soft(np.float32(10.5) - np.abs(top - 12.0), cv.edge) * side
        cv.paint(win, foam, -850.0, TABLE)

    def _body(self, cv: Canvas, zr: float) -> _Frame:
        """Skin, subcutaneous fat, muscle wall and the fat-filled body cavity."""
        outline, fat, muscle = self.contour_tables(zr)
        n = cv.grid.size
        frame = _Frame(
            np.full((n, n), 1e4, dtype=np.float32),
            np.zeros((n, n), dtype=np.int32),
            np.full((n, n), -1e4, dtype=np.float32),
            np.zeros((n, n), dtype=np.float32),
            np.zeros((n, n), dtype=np.float32),
        )
        # Work only inside the body's bounding box: the air around it stays as it is.
        xs, ys = outline * _COS, outline * _SIN
        win = cv.window(float(xs.min()) - 4, float(xs.max()) + 4, float(ys.min()) - 4, float(ys.max()) + 4)
        if win is None:
            return frame
        X, Y = win.X, win.Y
        r = np.sqrt(X * X + Y * Y)
        idx = ((np.arctan2(Y, X) + np.float32(math.pi)) * np.float32(_NBINS / (2 * math.pi))).astype(np.int32)
        np.clip(idx, 0, _NBINS - 1, out=idx)
        skin_d = outline[idx] - r
        wall_d = skin_d - fat[idx]
        cav_d = wall_d - muscle[idx]
        # The layers are nested, so blending them in order reduces to one weighted sum.
        layers = (
            (skin_d, 30.0, SKIN),
            (skin_d - np.float32(1.8), -105.0, SUBCUT_FAT),
            (wall_d, 48.0, MUSCLE),
            (cav_d, -92.0, CAVITY_FAT),
        )
        previous = -1000.0
        alphas = []
        region = cv.hu[win.sy, win.sx]
        for dist, value, label in layers:
            alpha = soft(dist, cv.edge)
            alphas.append(alpha)
            region += alpha * np.float32(value - previous)
            previous = value
            if cv.labels is not None:
                cv.labels[win.sy, win.sx][alpha >= 0.5] = label
        frame.r[win.sy, win.sx] = r
        frame.idx[win.sy, win.sx] = idx
        frame.cav_d[win.sy, win.sx] = cav_d
        frame.cavity[win.sy, win.sx] = alphas[3]
        frame.inner[win.sy, win.sx] = alphas[2]
        return frame

    def _lungs(self, cv: Canvas, zr: float, fr: _Frame) -> None:
        """Both lungs with gravity-dependent density and branching vessels."""
        if not (0.0 < zr < 292.0):
            return
        vby, vba, _ = self.vb(zr)
        apex = _ramp(zr, 0.0, 75.0)
        for side in (-1.0, 1.0):
            base = 262.0 if side < 0 else 282.0
            if zr >= base:
                continue
            # Toward the base the lung shrinks into the posterior-lateral costophrenic recess.
            low = 1.0 - _ramp(zr, base - 70.0, base) ** 2 * 0.9 if zr > base - 70 else 1.0
            cx = side * (70.0 + 25.0 * (1 - low))
            cy = 10.0 + 45.0 * (1 - low) - 18.0 * (1 - apex)
            a = (85.0 * apex + 20.0) * low
            b = (105.0 * apex + 25.0) * low
            win = cv.window(cx - a - 5, cx + a + 5, cy - b - 5, cy + b + 5)
            if win is None:
                continue
            d = ellipse_dist(win.X, win.Y, cx, cy, a, b)
            medial = (win.X * np.float32(side)) - np.float32(14.0 + 8.0 * _bump(zr, 100, 250))
            d = np.minimum(d, medial)
            d = np.minimum(d, fr.cav_d[win.sy, win.sx] - np.float32(2.0))
            alpha = soft(d, cv.edge)
            # Gravity: the dependent (posterior) lung is denser.
            value = np.float32(-875.0) + np.float32(0.45) * np.clip(win.Y + np.float32(60.0), 0, 200)
            cv.paint(win, alpha, value, LUNG)
            self._tubes(cv, zr, self.lung_vessels.active(zr), self.enh.pulmonary, VESSEL, clip=(win, alpha))
        # Trachea and main bronchi.
        ty = vby - vba - 16.0
        if zr < 98:
            cv.ellipse(0.0, ty, 10.0, 9.0, 40.0, MUSCLE)
            cv.ellipse(0.0, ty, 8.0, 7.0, -990.0, AIRWAY)
        for side in (-1.0, 1.0):
            a3 = (0.0, ty, 95.0)
            b3 = (side * 34.0, ty + 10.0, 122.0)
            box = segment_slab(zr, a3, b3, 7.0)
            if box is not None:
                win = cv.window(*box)
                if win is not None:
                    dist, _ = segment_dist_3d(win.X, win.Y, zr, a3, b3)
                    cv.paint(win, soft(np.float32(7.0) - dist, cv.edge), 40.0, MUSCLE)
                    cv.paint(win, soft(np.float32(5.5) - dist, cv.edge), -980.0, AIRWAY)

    def _tubes(
        self,
        cv: Canvas,
        zr: float,
        segs: npt.NDArray[np.float64],
        value: float,
        label: int | None,
        clip: tuple[Win, F32] | None = None,
        radius_add: float = 0.0,
    ) -> None:
        """Paint tube segments (vessels), optionally only where a clipping coverage (the organ) is."""
        for s in segs:
            r = float(s[6]) + radius_add
            a3 = (float(s[0]), float(s[1]), float(s[2]))
            b3 = (float(s[3]), float(s[4]), float(s[5]))
            box = segment_slab(zr, a3, b3, r)
            if box is None:
                continue
            win = cv.window(*box)
            if win is None:
                continue
            dist, _ = segment_dist_3d(win.X, win.Y, zr, a3, b3)
            alpha = soft(np.float32(r) - dist, cv.edge)
            if clip is not None:
                cwin, calpha = clip
                j0, i0 = cwin.sy.start, cwin.sx.start
                sy = slice(max(win.sy.start, j0), min(win.sy.stop, cwin.sy.stop))
                sx = slice(max(win.sx.start, i0), min(win.sx.stop, cwin.sx.stop))
                if sy.start >= sy.stop or sx.start >= sx.stop:
                    continue
                alpha = alpha[
                    sy.start - win.sy.start : sy.stop - win.sy.start,
                    sx.start - win.sx.start : sx.stop - win.sx.start,
                ]
                alpha = alpha * calpha[sy.start - j0 : sy.stop - j0, sx.start - i0 : sx.stop - i0]
                win = Win(sy, sx, win.X, win.Y)
            cv.paint(win, alpha, value, label)

    def _bowel(self, cv: Canvas, zr: float, rng: np.random.Generator | None, fr: _Frame) -> None:
        """Small bowel loops and the colon: enhancing walls, fluid, oral contrast, gas, faeces."""
        if not (300.0 < zr < 640.0):
            return
        self._tubes(
            cv, zr, self.mesenteric_vessels.active(zr), self.enh.portal, VESSEL, clip=(cv.full(), fr.cavity)
        )
        s = self.bowel.seg
        wall = self.enh.bowel_wall
        if len(s):
            r = s[:, 6]
            act = (np.minimum(s[:, 2], s[:, 5]) - r <= zr) & (zr <= np.maximum(s[:, 2], s[:, 5]) + r)
            segs = s[act]
            kinds = self.bowel_kind[act]
            inside = (cv.full(), fr.cavity)
            self._tubes(cv, zr, segs, wall, BOWEL, clip=inside)
            for seg, kind in zip(segs, kinds, strict=True):
                k = int(kind)
                content = (12.0, wall - 15.0, self.oral_contrast, -1000.0)[k]
                thick = 1.6 if k == 3 else 2.6
                self._tubes(cv, zr, seg[None, :], content, BOWEL, clip=inside, radius_add=-thick)
            for g in self.gas:
                dz = zr - g[2]
                if abs(dz) < g[3]:
                    rr = math.sqrt(g[3] ** 2 - dz * dz)
                    cv.ellipse(g[0], g[1], rr, rr * 0.8, -1000.0, BOWEL, clip=fr.cavity)
        # Colon: a fixed path around the abdomen, gas on top of mottled stool with gas bubbles.
        for a3, b3, rad in _COLON:
            box = segment_slab(zr, a3, b3, rad)
            if box is None:
                continue
            win = cv.window(*box)
            if win is None:
                continue
            dist, t = segment_dist_3d(win.X, win.Y, zr, a3, b3)
            cv.paint(win, soft(np.float32(rad) - dist, cv.edge), wall, BOWEL)
        for a3, b3, rad in _COLON:
            box = segment_slab(zr, a3, b3, rad)
            if box is None:
                continue
            win = cv.window(*box)
            if win is None:
                continue
            dist, t = segment_dist_3d(win.X, win.Y, zr, a3, b3)
            lumen = soft(np.float32(rad - 2.5) - dist, cv.edge)
            axis_y = np.float32(a3[1]) + t * np.float32(b3[1] - a3[1])
            if rng is not None:
                mottle = box3(rng.standard_normal(lumen.shape, dtype=np.float32))
                stool = np.float32(-160.0) + np.float32(110.0) * np.tanh(mottle * np.float32(1.5))
                # Gas bubbles trapped in the faeces.
                stool = np.where(mottle > np.float32(0.75), np.float32(-850.0), stool)
            else:
                stool = np.full(lumen.shape, -160.0, dtype=np.float32)
            level = np.float32(rad * (1.8 * self.colon_gas - 0.9))
            gas_line = soft(axis_y + level - win.Y, cv.edge)
            value = stool + gas_line * (np.float32(-1000.0) - stool)
            cv.paint(win, lumen, value, BOWEL)

    def _abdominal_organs(self, cv: Canvas, zr: float, fr: _Frame) -> None:
        """Liver with its veins, gallbladder, stomach, spleen, pancreas, adrenals and kidneys."""
        cav = fr.cavity
        e = self.enh
        jx, jy = self._j("liver")
        # Liver: a big right lobe and a left lobe reaching across the midline.
        s_r = _ramp(zr, 192.0, 240.0) * (1.0 - 0.65 * _ramp(zr, 320.0, 385.0) ** 2) if zr < 385 else 0.0
        if s_r > 0:
            drop = _ramp(zr, 300.0, 385.0)
            win_alpha = cv.ellipse(
                -58 + jx - 22 * drop,
                -2 + jy + 22 * drop,
                82 * s_r,
                88 * s_r,
                e.liver,
                LIVER,
                angle=0.25,
                clip=cav,
            )
            s_l = _bump(zr, 205.0, 315.0)
            if s_l > 0:
                cv.ellipse(8 + jx, -52 + jy, 58 * s_l, 32 * s_l, e.liver, LIVER, angle=-0.35, clip=cav)
            if win_alpha is not None:
                self._tubes(cv, zr, self.liver_vessels.active(zr), e.hepatic_vein, VESSEL, clip=win_alpha)
                self._tubes(cv, zr, self.portal_vessels.active(zr), e.portal, VESSEL, clip=win_alpha)
        s_gb = _bump(zr, 295.0, 350.0) * self.gallbladder
        if s_gb > 0:
            gx, gy = -48 + jx, -48 + jy
            cv.ellipse(gx, gy, 15 * s_gb + 1.5, 22 * s_gb + 1.5, e.bowel_wall, GALLBLADDER, angle=0.4)
            cv.ellipse(gx, gy, 15 * s_gb, 22 * s_gb, 12.0, GALLBLADDER, angle=0.4)
            for k in range(self.gallstones):
                # Stones settle in the dependent (posterior) part.
                rr = min(4.0, 6.0 * s_gb)
                cv.ellipse(gx + (k - 1) * 6.0, gy + 14 * s_gb - rr, rr, rr, 450.0, CALCIFICATION)
        # Stomach: wall, fluid (or oral contrast), and an air-fluid level.
        jx, jy = self._j("stomach")
        s_st = _bump(zr, 205.0, 315.0)
        if s_st > 0:
            cx, cy, a, b = 50 + jx, -30 + jy, 46 * s_st, 38 * s_st
            cv.ellipse(cx, cy, a, b, e.bowel_wall + 10.0, STOMACH, angle=0.5)
            res = cv.ellipse(cx, cy, a - 4, b - 4, self.oral_contrast or 20.0, STOMACH, angle=0.5)
            if res is not None:
                win, lumen = res
                gas = soft(np.float32(cy - 0.35 * b) - win.Y, cv.edge) * lumen
                cv.paint(win, gas, -1000.0, STOMACH)
        jx, jy = self._j("spleen")
        s_sp = _bump(zr, 212.0, 325.0)
        if s_sp > 0:
            cv.ellipse(88 + jx, 42 + jy, 30 * s_sp, 58 * s_sp, e.spleen, SPLEEN, angle=0.75, clip=cav)
        # Pancreas: a tube from the head (right, lower) to the tail at the splenic hilum (left, higher).
        for a3, b3 in (
            ((-28.0, 2.0, 338.0), (10.0, -12.0, 322.0)),
            ((10.0, -12.0, 322.0), (68.0, 18.0, 305.0)),
        ):
            box = segment_slab(zr, a3, b3, 12.0)
            pwin = None if box is None else cv.window(*box)
            if pwin is not None:
                dist, _ = segment_dist_3d(pwin.X, pwin.Y, zr, a3, b3)
                cv.paint(pwin, soft(np.float32(11.0) - dist, cv.edge), e.pancreas, PANCREAS)
        vby, vba, _ = self.vb(zr)
        # Adrenals: thin inverted-Y glands above and in front of the upper renal poles.
        s_ad = _bump(zr, 282.0, 338.0)
        if s_ad > 0:
            for side in (-1.0, 1.0):
                ax, ay = side * (vba + 14.0), vby - 12.0
                for dx, dy in (
                    (side * 4.0, 14.0 * s_ad),
                    (side * 13.0, 8.0 * s_ad),
                    (-side * 2.0, -10.0 * s_ad),
                ):
                    a3, b3 = (ax, ay, zr), (ax + dx, ay + dy, zr)
                    awin = cv.window(
                        min(ax, ax + dx) - 4, max(ax, ax + dx) + 4, min(ay, ay + dy) - 4, max(ay, ay + dy) + 4
                    )
                    if awin is not None:
                        dist, _ = segment_dist_3d(awin.X, awin.Y, zr, a3, b3)
                        cv.paint(awin, soft(np.float32(2.4) - dist, cv.edge), e.adrenal, ADRENAL)
        for side, name, zc in ((-1.0, "kidney_r", 368.0), (1.0, "kidney_l", 352.0)):
            s_k = _bump(zr, zc - 58.0, zc + 58.0)
            if s_k <= 0:
                continue
            jx, jy = self._j(name)
            cx, cy = side * 70 + jx, vby + 8 + jy
            ang = side * 0.6
            ca, sa = math.cos(ang), math.sin(ang)
            cv.ellipse(cx, cy, 27 * s_k, 38 * s_k, e.kidney_cortex, KIDNEY, angle=ang)
            # Medullary pyramids: dark in the arterial phase, like the cortex later.
            for k in range(6):
                t = 2 * math.pi * k / 6 + 0.3
                u, v = 14 * s_k * math.cos(t), 22 * s_k * math.sin(t)
                px, py = cx + ca * u - sa * v, cy + sa * u + ca * v
                cv.ellipse(px, py, 5.5 * s_k, 8.0 * s_k, e.kidney_medulla, KIDNEY, angle=t + ang)
            hil = _bump(zr, zc - 25.0, zc + 25.0)
            if hil > 0:
                # Renal sinus fat, the pelvis and calyces of the collecting system (bright when delayed).
                hx, hy = cx - side * 15.0, cy - 8.0
                cv.ellipse(hx, hy, 10 * hil, 14 * hil, -80.0, CAVITY_FAT, angle=ang)
                cv.ellipse(hx, hy, 5 * hil, 8 * hil, e.urine, URETER, angle=ang)
                for t in (-0.9, 0.0, 0.9):
                    u, v = 9 * hil * math.cos(t) * side, 9 * hil * math.sin(t)
                    cv.ellipse(hx + u, hy + v, 2.2 * hil, 2.2 * hil, e.urine, URETER)

    def _mediastinum(self, cv: Canvas, zr: float) -> None:
        """Mediastinal fat, heart with contrast-filled chambers, esophagus."""
        jx, jy = self._j("heart")
        s_h = _bump(zr, 112.0, 248.0)
        if 20.0 < zr < 140.0:
            s_m = _bump(zr, 10.0, 150.0)
            cv.ellipse(4.0, -28.0, 22.0 * s_m + 9, 46.0 * s_m + 10, -85.0, CAVITY_FAT)
        if s_h > 0:
            cx, cy = 22 + jx, -35 + jy
            cv.ellipse(cx, cy, 66 * s_h + 4, 52 * s_h + 4, -95.0, CAVITY_FAT, angle=-0.55)
            e = self.enh
            cv.ellipse(cx, cy, 64 * s_h, 50 * s_h, e.myocardium, HEART, angle=-0.55)
            lv = _bump(zr, 150.0, 240.0)
            if lv > 0:
                cv.ellipse(cx + 22, cy - 2, 24 * lv, 19 * lv, e.artery - 10.0, HEART, angle=-0.6)
                cv.ellipse(cx - 12, cy - 22, 26 * lv, 12 * lv, e.pulmonary, HEART, angle=-0.5)
            la = _bump(zr, 122.0, 185.0)
            if la > 0:
                cv.ellipse(cx - 5, cy + 30, 30 * la, 16 * la, e.artery - 5.0, HEART)
            ra = _bump(zr, 150.0, 232.0)
            if ra > 0:
                cv.ellipse(cx - 32, cy + 8, 17 * ra, 20 * ra, 0.5 * (e.pulmonary + e.vein), HEART)
        if zr < 270.0:
            vby, vba, _ = self.vb(zr)
            ex = 6.0 + 22.0 * _ramp(zr, 180.0, 270.0)
            cv.ellipse(ex, vby - vba - 6.0, 8.0, 6.0, 40.0, MUSCLE)
            cv.ellipse(ex, vby - vba - 6.0, 2.5, 1.8, -950.0, AIRWAY)

    def _vessels(self, cv: Canvas, zr: float) -> None:
        """Great vessels and their branches (arteries, veins, portal system) as contrast-filled tubes."""
        vby, vba, _ = self.vb(zr)
        e = self.enh
        hu = {"artery": e.artery, "vein": e.vein, "portal": e.portal, "svc": e.svc, "pulmonary": e.pulmonary}
        for path, rad, kind in _vessel_paths(vby, vba):
            for a3, b3 in zip(path[:-1], path[1:], strict=True):
                if min(a3[2], b3[2]) - rad <= zr <= max(a3[2], b3[2]) + rad:
                    self._tubes(cv, zr, np.array([[*a3, *b3, rad]]), hu[kind], VESSEL)

    def _urinary(self, cv: Canvas, zr: float) -> None:
        """Ureters from the renal pelves along the psoas to the bladder, urine or excreted contrast inside."""
        if not (300.0 < zr < 605.0):
            return
        for side, name, zc in ((-1.0, "kidney_r", 368.0), (1.0, "kidney_l", 352.0)):
            jx, jy = self._j(name)
            vby = self.vb(zc)[0]
            pts = [
                (side * 55 + jx, vby + jy, zc),
                (side * 45, 12.0, zc + 35.0),
                (side * 44, 8.0, 420.0),
                (side * 52, 4.0, 490.0),
                (side * 48, -5.0, 560.0),
                (side * 22, -22.0, 600.0),
            ]
            for a3, b3 in zip(pts[:-1], pts[1:], strict=True):
                if min(a3[2], b3[2]) - 3.5 <= zr <= max(a3[2], b3[2]) + 3.5:
                    seg = np.array([[*a3, *b3, 3.2]])
                    self._tubes(cv, zr, seg, 40.0, URETER)
                    self._tubes(cv, zr, seg, self.enh.urine, URETER, radius_add=-1.4)

    def _muscles(self, cv: Canvas, zr: float, fr: _Frame) -> None:
        """Paraspinal, psoas and gluteal muscles."""
        vby, vba, vbb = self.vb(zr)
        canal = vby + vbb + 9.0
        for side in (-1.0, 1.0):
            cv.ellipse(side * (vba + 14.0), canal + 14.0, 24.0 + 0.2 * vba, 22.0, 50.0, MUSCLE, clip=fr.inner)
            for a3, b3, rad in _psoas(side, vby):
                box = segment_slab(zr, a3, b3, rad)
                if box is not None:
                    win = cv.window(*box)
                    if win is not None:
                        dist, _ = segment_dist_3d(win.X, win.Y, zr, a3, b3)
                        cv.paint(win, soft(np.float32(rad) - dist, cv.edge), 52.0, MUSCLE)
            s_g = _ramp(zr, 450.0, 560.0)
            if s_g > 0:
                cv.ellipse(
                    side * 92.0, 62.0, 62.0 * s_g, 36.0 * s_g, 50.0, MUSCLE, angle=side * 0.35, clip=fr.inner
                )

    def _pelvic_organs(self, cv: Canvas, zr: float) -> None:
        """Bladder."""
        jx, jy = self._j("bladder")
        s_b = _bump(zr, 545.0, 640.0)
        if s_b > 0:
            cv.ellipse(jx, -38.0 + jy, 48 * s_b, 36 * s_b, 45.0, BLADDER)
            res = cv.ellipse(jx, -38.0 + jy, 48 * s_b - 3, 36 * s_b - 3, 10.0, BLADDER)
            if res is not None and self.enh.urine > 100:
                # Excreted contrast layers in the dependent (posterior) bladder in the delayed phase.
                win, lumen = res
                layer = soft(win.Y - np.float32(-38.0 + jy + 12.0 * s_b), cv.edge) * lumen
                cv.paint(win, layer, self.enh.urine, BLADDER)

    def _bones(self, cv: Canvas, zr: float, fr: _Frame) -> None:
        """Spine with discs and posterior elements, ribs, sternum, scapulae, pelvis, femoral heads."""
        vby, vba, vbb = self.vb(zr)
        if zr < 470.0:
            period, z0 = (25.0, 0.0) if zr < 300.0 else (34.0, 300.0)
            phase = ((zr - z0) % period) / period
            disc = phase > (0.80 if zr < 300 else 0.74)
            if disc:
                cv.ellipse(0.0, vby, vba, vbb, 95.0, BONE)
            else:
                end = min(phase, 0.8 - phase) < 0.06
                cv.bone_ellipse(
                    0.0, vby, vba, vbb, 2.2, 1100.0 if end else 850.0, 330.0 if end else 270.0, BONE
                )
            canal = vby + vbb + 9.0
            cv.bone_ellipse(0.0, canal, 13.0, 12.0, 2.5, 900.0, 350.0, BONE)
            self._spinal_canal(cv, zr, canal, vba, disc)
            if not disc:
                cv.bone_ellipse(0.0, canal + 24.0, 4.5, 14.0, 1.8, 850.0, 300.0, BONE)
                for side in (-1.0, 1.0):
                    tp_y = canal + (4.0 if zr < 300 else -2.0)
                    cv.bone_ellipse(
                        side * (vba + 9.0),
                        tp_y,
                        13.0,
                        5.0,
                        1.8,
                        850.0,
                        300.0,
                        BONE,
                        angle=side * (0.35 if zr < 300 else 0.05),
                    )
        if 0.0 < zr < 380.0:
            self._ribs(cv, zr, fr)
        s_st = _bump(zr, 15.0, 215.0)
        if s_st > 0:
            outline, fat, muscle = self.contour_tables(zr)
            front = float(outline[_NBINS // 4] - fat[_NBINS // 4] - muscle[_NBINS // 4] * 0.4)
            cv.bone_ellipse(0.0, -front, 12.0 + 12.0 * _bump(zr, 0, 60), 7.0, 1.8, 800.0, 280.0, BONE)
        if 5.0 < zr < 150.0:
            for side in (-1.0, 1.0):
                for a3, b3 in (
                    ((side * 55, 86, zr), (side * 105, 68, zr)),
                    ((side * 105, 68, zr), (side * 122, 42, zr)),
                ):
                    win = cv.window(
                        min(a3[0], b3[0]) - 6,
                        max(a3[0], b3[0]) + 6,
                        min(a3[1], b3[1]) - 6,
                        max(a3[1], b3[1]) + 6,
                    )
                    if win is not None:
                        dist, _ = segment_dist_3d(win.X, win.Y, zr, a3, b3)
                        cv.paint(win, soft(np.float32(3.5) - dist, cv.edge), 750.0, BONE)
        if zr >= 430.0:
            self._pelvis(cv, zr)

    def _spinal_canal(self, cv: Canvas, zr: float, canal: float, vba: float, disc: bool) -> None:
        """Epidural fat, the thecal sac, the cord (cauda equina lower down) and the exiting nerve roots."""
        cv.ellipse(0.0, canal, 10.0, 10.0, -70.0, CAVITY_FAT)
        cv.ellipse(0.0, canal, 8.0, 8.5, 8.0, CSF)
        if zr < 330.0:
            cv.ellipse(0.0, canal - 0.5, 4.5, 3.6, 35.0, NERVE)
        else:
            for k in range(6):
                t = math.pi * (0.15 + 0.14 * k)
                cv.ellipse(5.0 * math.cos(t), canal + 4.0 * math.sin(t), 1.1, 1.1, 35.0, NERVE)
        if disc:
            # At the disc level the roots leave through the foramina, sheathed in fat.
            lumbar = zr > 330.0
            for side in (-1.0, 1.0):
                a3 = (side * 6.0, canal - 2.0, zr)
                b3 = (side * (vba + (12.0 if lumbar else 7.0)), canal - (11.0 if lumbar else 6.0), zr)
                win = cv.window(
                    min(a3[0], b3[0]) - 6, max(a3[0], b3[0]) + 6, min(a3[1], b3[1]) - 6, max(a3[1], b3[1]) + 6
                )
                if win is None:
                    continue
                dist, _ = segment_dist_3d(win.X, win.Y, zr, a3, b3)
                cv.paint(win, soft(np.float32(3.8) - dist, cv.edge), -80.0, CAVITY_FAT)
                cv.paint(win, soft(np.float32(2.2) - dist, cv.edge), 35.0, NERVE)

    def _ribs(self, cv: Canvas, zr: float, fr: _Frame) -> None:
        """Ribs as inclined arcs in the chest wall: each crosses the slice as a curved bony segment."""
        outline, fat, muscle = self.contour_tables(zr)
        rib_r = outline - fat - muscle + 5.0
        half_h = 5.0
        psi0 = 0.38
        for i in range(12):
            zp = 8.0 + 23.0 * i
            drop = 120.0
            psi_max = math.pi * (0.92 if i < 9 else 0.75 - 0.12 * (i - 9))
            dpsi_dz = (math.pi - psi0) / drop
            psi_c = psi0 + (zr - zp) * dpsi_dz
            half = half_h * dpsi_dz
            if psi_c + half < psi0 - 0.25 or psi_c - half > psi_max:
                continue
            lo, hi = max(0.0, psi_c - half), min(psi_max, psi_c + half)
            cartilage = psi_c > 2.55
            for side in (-1.0, 1.0):
                # psi is measured from the back midline (image +y) toward the front on each side.
                angs = np.linspace(lo, hi, 5)
                th = np.arctan2(np.cos(angs), side * np.sin(angs))
                bins = ((th + math.pi) * (_NBINS / (2 * math.pi))).astype(int) % _NBINS
                rr = rib_r[bins]
                xs, ys = rr * np.cos(th), rr * np.sin(th)
                win = cv.window(
                    float(xs.min()) - 8, float(xs.max()) + 8, float(ys.min()) - 8, float(ys.max()) + 8
                )
                if win is None:
                    continue
                r = fr.r[win.sy, win.sx]
                idx = fr.idx[win.sy, win.sx]
                psi = np.arccos(np.clip(win.Y / np.maximum(r, 1e-3), -1.0, 1.0))
                on_side = (win.X * np.float32(side)) > 0
                radial = np.float32(3.2) - np.abs(r - rib_r[idx])
                ang_d = (np.float32(half) - np.abs(psi - np.float32(psi_c))) * r
                ang_d = np.minimum(ang_d, (np.float32(psi_max) - psi) * r)
                d = np.minimum(radial, ang_d)
                d = np.where(on_side, d, np.float32(-10.0))
                if cartilage:
                    cv.paint(win, soft(d, cv.edge), 120.0, MUSCLE)
                else:
                    cv.paint(win, soft(d, cv.grid.spacing), 800.0, BONE)
                    cv.paint(win, soft(d - np.float32(1.6), cv.grid.spacing), 260.0, BONE)

    def _iliac_wing(self, cv: Canvas, zr: float, side: float, top: float, lat: float) -> None:
        """One iliac wing: a C-shaped plate, concave toward the iliac fossa, thick at the sacroiliac joint."""
        vby, _, _ = self.vb(zr)
        # An elliptical arc from the sacroiliac joint (back, medial) round the side to the front.
        cx, cy = side * 50.0, vby - 4.0
        a, b = 36.0 + 34.0 * lat, 32.0 + 6.0 * lat
        front = -0.1 - 0.5 * lat * top
        back = 1.95
        win = cv.window(cx - a - 12, cx + a + 12, cy - b - 12, cy + b + 12)
        if win is None:
            return
        u = (win.X - np.float32(cx)) * np.float32(side)
        v = win.Y - np.float32(cy)
        ang = np.arctan2(v, u)
        q = np.maximum(np.sqrt((u / np.float32(a)) ** 2 + (v / np.float32(b)) ** 2), np.float32(1e-3))
        rr = np.sqrt(u * u + v * v)
        radial = np.abs((np.float32(1.0) - q) * rr / q)
        # Thick near the joint (ang near `back`), thin toward the front.
        along = np.clip((ang - np.float32(front)) / np.float32(back - front), 0, 1)
        half = np.float32(1.6) + np.float32(3.2 * top) * along
        dist = np.minimum(half - radial, np.minimum(ang - np.float32(front), np.float32(back) - ang) * rr)
        cv.paint(win, soft(dist, cv.grid.spacing), 900.0, BONE)
        cv.paint(win, soft(dist - np.float32(1.8), cv.grid.spacing), 280.0, BONE)

    def _pelvis(self, cv: Canvas, zr: float) -> None:
        """Sacrum, iliac wings, acetabula and femoral heads."""
        s_sac = _bump(zr, 455.0, 585.0)
        if s_sac > 0:
            # The sacrum narrows and thins toward the coccyx.
            taper = 1.0 - _ramp(zr, 500.0, 585.0)
            vby, _, _ = self.vb(zr)
            cv.bone_ellipse(0.0, vby + 8.0, 12.0 + 36.0 * taper, 7.0 + 9.0 * taper, 2.5, 850.0, 260.0, BONE)
            if taper > 0.3:
                cv.ellipse(0.0, vby + 12.0, 9.0 * taper, 4.0 * taper, 15.0, CSF)
                # Sacral foramina with their nerve roots, and the roots in front of the sacrum.
                for side in (-1.0, 1.0):
                    cv.ellipse(side * 24.0 * taper, vby + 8.0, 4.5, 4.0, -60.0, CAVITY_FAT)
                    cv.ellipse(side * 24.0 * taper, vby + 8.0, 2.2, 2.2, 35.0, NERVE)
                    cv.ellipse(side * 30.0 * taper, vby - 6.0, 2.6, 2.6, 35.0, NERVE)
        for side in (-1.0, 1.0):
            top = _ramp(zr, 432.0, 470.0)
            if zr < 560.0 and top > 0:
                self._iliac_wing(cv, zr, side, top, 1.0 - _ramp(zr, 505.0, 560.0))
            s_fh = _bump(zr, 552.0, 620.0)
            if s_fh > 0:
                cx, cy = side * 88.0, 5.0
                cv.bone_ellipse(cx + side * 4, cy, 34.0 * s_fh, 32.0 * s_fh, 3.0, 900.0, 300.0, BONE)
                cv.ellipse(cx, cy, 26.0 * s_fh, 26.0 * s_fh, 40.0, MUSCLE)
                cv.bone_ellipse(cx, cy, 24.0 * s_fh, 24.0 * s_fh, 2.0, 800.0, 330.0, BONE)
            s_is = _bump(zr, 565.0, 660.0)
            if s_is > 0:
                # Ischium behind the hip joint.
                cv.bone_ellipse(
                    side * 70.0,
                    40.0,
                    13.0 * s_is + 2,
                    19.0 * s_is + 2,
                    2.5,
                    850.0,
                    280.0,
                    BONE,
                    angle=side * 0.5,
                )
            s_tr = _ramp(zr, 600.0, 630.0)
            if s_tr > 0:
                cv.bone_ellipse(side * 112.0, 12.0, 20.0 * s_tr, 18.0 * s_tr, 3.0, 900.0, 280.0, BONE)
        s_cx = _bump(zr, 580.0, 625.0)
        if s_cx > 0:
            cv.bone_ellipse(0.0, 78.0, 9.0 * s_cx + 1, 6.0 * s_cx + 1, 2.0, 750.0, 260.0, BONE)
        s_pub = _ramp(zr, 610.0, 635.0)
        if s_pub > 0:
            for side in (-1.0, 1.0):
                a3 = (side * 8.0, -68.0, zr)
                b3 = (side * 62.0, -38.0, zr)
                win = cv.window(min(a3[0], b3[0]) - 12, max(a3[0], b3[0]) + 12, -80, -26)
                if win is not None:
                    dist, _ = segment_dist_3d(win.X, win.Y, zr, a3, b3)
                    cv.paint(win, soft(np.float32(9.0 * s_pub) - dist, cv.grid.spacing), 900.0, BONE)
                    cv.paint(win, soft(np.float32(9.0 * s_pub - 2.5) - dist, cv.grid.spacing), 300.0, BONE)


@dataclass
class _Frame:
    """Full-frame polar quantities of one slice, shared by the body wall, lungs and ribs."""

    r: F32
    idx: npt.NDArray[np.int32]
    cav_d: F32
    cavity: F32
    inner: F32  # inside the subcutaneous fat


# Colon path (reference mm) as tube segments: cecum, ascending, transverse, descending, sigmoid, rectum.
_COLON_PTS: list[tuple[tuple[float, float, float], float]] = [
    ((-88.0, -5.0, 480.0), 24.0),
    ((-95.0, 5.0, 410.0), 22.0),
    ((-85.0, -25.0, 350.0), 21.0),
    ((-40.0, -78.0, 345.0), 20.0),
    ((30.0, -80.0, 335.0), 20.0),
    ((88.0, -30.0, 300.0), 19.0),
    ((100.0, 10.0, 360.0), 16.0),
    ((98.0, 15.0, 450.0), 16.0),
    ((70.0, -15.0, 520.0), 15.0),
    ((25.0, -5.0, 545.0), 15.0),
    ((0.0, 60.0, 565.0), 15.0),
    ((0.0, 68.0, 650.0), 14.0),
]
_COLON: list[tuple[tuple[float, float, float], tuple[float, float, float], float]] = [
    (a, b, min(ra, rb)) for (a, ra), (b, rb) in zip(_COLON_PTS[:-1], _COLON_PTS[1:], strict=True)
]


Path3 = list[tuple[float, float, float]]


def _vessel_paths(vby: float, vba: float) -> list[tuple[Path3, float, str]]:
    """Centre lines (reference mm) of the named vessels, their radius and kind (which sets their HU)."""
    pre = vby - vba - 10.0  # just in front of the spine
    aorta = [
        (6.0, -28.0, 150.0),
        (6.0, -30.0, 78.0),
        (12.0, -18.0, 58.0),
        (24.0, 12.0, 62.0),
        (24.0, 24.0, 110.0),
        (18.0, 20.0, 220.0),
        (8.0, pre - 2.0, 320.0),
        (4.0, pre - 2.0, 445.0),
    ]
    # Common and external iliac arteries down to the femoral arteries in the groin.
    iliac_r = [(4.0, pre - 2.0, 445.0), (-30.0, 30.0, 520.0), (-62.0, -8.0, 600.0), (-76.0, -24.0, 650.0)]
    iliac_l = [(x * -1.0 if i else x, y, z) for i, (x, y, z) in enumerate(iliac_r)]
    # Femoral veins lie medial to the arteries.
    ivc = [(-22.0, 10.0, 195.0), (-22.0, pre, 320.0), (-20.0, pre, 450.0)]
    iv_r = [(-20.0, pre, 450.0), (-42.0, 40.0, 525.0), (-68.0, 8.0, 605.0), (-64.0, -18.0, 650.0)]
    iv_l = [(-20.0, pre, 450.0), (30.0, 42.0, 530.0), (68.0, 8.0, 605.0), (64.0, -18.0, 650.0)]
    out: list[tuple[Path3, float, str]] = [
        (aorta, 13.5, "artery"),
        (iliac_r, 7.0, "artery"),
        (iliac_l, 7.0, "artery"),
        (ivc, 11.0, "vein"),
        (iv_r, 7.5, "vein"),
        (iv_l, 7.5, "vein"),
        ([(-24.0, -24.0, 20.0), (-26.0, -26.0, 140.0)], 10.0, "svc"),
        # Arch branches up to the neck, and the left brachiocephalic vein crossing in front of them.
        ([(2.0, -26.0, 60.0), (-12.0, -14.0, 20.0), (-16.0, -8.0, -20.0)], 6.5, "artery"),
        ([(10.0, -20.0, 60.0), (8.0, -12.0, -20.0)], 4.5, "artery"),
        ([(18.0, -10.0, 62.0), (24.0, -2.0, 20.0), (40.0, 0.0, -20.0)], 5.0, "artery"),
        ([(45.0, -30.0, 30.0), (-22.0, -26.0, 38.0)], 5.5, "svc"),
        ([(12.0, -58.0, 150.0), (22.0, -40.0, 112.0)], 14.0, "pulmonary"),
        ([(22.0, -40.0, 112.0), (48.0, -8.0, 118.0)], 10.0, "pulmonary"),
        ([(18.0, -30.0, 114.0), (-48.0, -6.0, 122.0)], 10.0, "pulmonary"),
        # Celiac trunk with the splenic and common hepatic arteries, running in the plane.
        ([(8.0, pre - 2.0, 300.0), (8.0, pre - 18.0, 296.0)], 3.5, "artery"),
        (
            [(8.0, pre - 18.0, 296.0), (40.0, pre - 8.0, 292.0), (60.0, 10.0, 298.0), (80.0, 32.0, 292.0)],
            2.6,
            "artery",
        ),
        ([(8.0, pre - 18.0, 296.0), (-20.0, -8.0, 300.0), (-22.0, 4.0, 302.0)], 2.6, "artery"),
        # Superior mesenteric artery and vein going down into the mesentery.
        (
            [
                (8.0, pre - 2.0, 318.0),
                (10.0, pre - 16.0, 336.0),
                (8.0, pre - 30.0, 420.0),
                (0.0, -62.0, 480.0),
            ],
            3.6,
            "artery",
        ),
        (
            [(-5.0, 8.0, 330.0), (-8.0, pre - 18.0, 342.0), (-10.0, pre - 32.0, 420.0), (-4.0, -62.0, 480.0)],
            5.0,
            "portal",
        ),
        # Splenic vein behind the pancreas to the portal confluence.
        ([(80.0, 34.0, 298.0), (68.0, 28.0, 305.0), (10.0, 0.0, 322.0), (-5.0, 8.0, 330.0)], 4.2, "portal"),
        # Renal arteries behind, renal veins in front; the left renal vein crosses between aorta and SMA.
        ([(8.0, pre - 2.0, 352.0), (52.0, 18.0, 354.0)], 2.8, "artery"),
        ([(8.0, pre - 2.0, 360.0), (-52.0, 18.0, 366.0)], 2.8, "artery"),
        ([(55.0, 14.0, 350.0), (8.0, pre - 18.0, 346.0), (-22.0, pre, 344.0)], 4.5, "vein"),
        ([(-55.0, 14.0, 364.0), (-22.0, pre, 360.0)], 4.5, "vein"),
        # Internal iliac arteries and veins into the pelvis, the deep femoral artery, the saphenous vein.
        ([(-30.0, 30.0, 520.0), (-42.0, 55.0, 565.0)], 3.8, "artery"),
        ([(30.0, 30.0, 520.0), (42.0, 55.0, 565.0)], 3.8, "artery"),
        ([(-42.0, 40.0, 525.0), (-48.0, 62.0, 570.0)], 4.5, "vein"),
        ([(30.0, 42.0, 530.0), (48.0, 62.0, 570.0)], 4.5, "vein"),
        ([(-74.0, -22.0, 628.0), (-84.0, 2.0, 650.0)], 3.5, "artery"),
        ([(74.0, -22.0, 628.0), (84.0, 2.0, 650.0)], 3.5, "artery"),
        ([(-64.0, -18.0, 640.0), (-58.0, -52.0, 650.0)], 2.8, "vein"),
        ([(64.0, -18.0, 640.0), (58.0, -52.0, 650.0)], 2.8, "vein"),
    ]
    return out


def _centre_at(path: Path3, z: float) -> tuple[float, float] | None:
    """Where a centre line crosses the plane z (the first crossing), or None."""
    for (ax, ay, az), (bx, by, bz) in zip(path[:-1], path[1:], strict=True):
        if min(az, bz) <= z <= max(az, bz) and abs(bz - az) > 1e-6:
            t = (z - az) / (bz - az)
            return ax + t * (bx - ax), ay + t * (by - ay)
    return None


def _psoas(
    side: float, vby: float
) -> list[tuple[tuple[float, float, float], tuple[float, float, float], float]]:
    """Psoas muscle as tapering tube segments, moving forward into the pelvis."""
    pts = [
        ((side * 26.0, 30.0, 320.0), 7.0),
        ((side * 44.0, 30.0, 420.0), 18.0),
        ((side * 58.0, 22.0, 500.0), 20.0),
        ((side * 66.0, -8.0, 570.0), 17.0),
        ((side * 72.0, -25.0, 650.0), 15.0),
    ]
    return [(a, b, min(ra, rb)) for (a, ra), (b, rb) in zip(pts[:-1], pts[1:], strict=True)]


def correlated_noise(rng: np.random.Generator, shape: tuple[int, ...], sd: float) -> F32:
    """Gaussian noise smoothed over about a pixel and a half, rescaled to standard deviation `sd` HU."""
    return noise_field(rng, shape, sd, "standard")
