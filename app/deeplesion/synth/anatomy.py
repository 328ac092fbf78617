"""An analytic 3-D torso phantom (neck to upper thighs) that renders CT-like axial slices in HU."""

# Body coordinates in mm: x to the patient's left (image right), y to the back (image down), z from
# head to feet with 0 near the lung apices. Every organ is a function of z, so consecutive slices
# agree. A patient is one random draw of sizes, shapes and positions around a reference anatomy;
# the reference is scaled by `scale` in-plane and `z_scale` along z.

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

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
    liver_hu: float = 112.0
    spleen_hu: float = 108.0
    aorta_hu: float = 190.0
    kidney_hu: float = 175.0
    jitter: dict[str, tuple[float, float]] = field(default_factory=dict)
    lung_vessels: _Tubes = field(default_factory=lambda: _Tubes(np.zeros((0, 7))))
    liver_vessels: _Tubes = field(default_factory=lambda: _Tubes(np.zeros((0, 7))))
    mesenteric_vessels: _Tubes = field(default_factory=lambda: _Tubes(np.zeros((0, 7))))
    bowel: _Tubes = field(default_factory=lambda: _Tubes(np.zeros((0, 7))))
    bowel_kind: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    gas: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 4)))

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(cls, rng: np.random.Generator, gender: str = "M") -> Phantom:
        """Draw one patient: size, fat, organ positions, vessel trees, bowel loops."""
        male = gender == "M"
        ph = cls(
            scale=float(rng.normal(1.03 if male else 0.96, 0.03)),
            z_scale=float(rng.uniform(0.94, 1.06) * (1.02 if male else 0.97)),
            fat_factor=float(np.clip(rng.lognormal(0.0, 0.35), 0.5, 2.2)),
            harmonics=(
                float(rng.normal(0, 0.02)),
                float(rng.uniform(0, math.pi)),
                float(rng.normal(0, 0.012)),
                float(rng.uniform(0, 2 * math.pi)),
            ),
            liver_hu=float(rng.uniform(102, 124)),
            aorta_hu=float(rng.uniform(160, 250)),
            kidney_hu=float(rng.uniform(160, 195)),
        )
        ph.spleen_hu = ph.liver_hu + float(rng.uniform(-8, 4))
        for name in ("liver", "spleen", "kidney_r", "kidney_l", "heart", "stomach", "bladder"):
            ph.jitter[name] = (float(rng.normal(0, 4)), float(rng.normal(0, 4)))
        ph.lung_vessels = _Tubes(np.array(ph._lung_trees(rng), dtype=float))
        ph.liver_vessels = _Tubes(np.array(ph._liver_trees(rng), dtype=float))
        mesentery: list[list[float]] = []
        root = np.array([4.0, 0.0, 345.0])
        for d in ((0.1, -0.6, 1.0), (-0.8, -0.5, 0.8), (0.8, -0.5, 0.8), (0.0, -1.0, 0.3)):
            mesentery += _tree(rng, root, np.array(d) + rng.normal(0, 0.2, size=3), 40.0, 3.5, 4)
        ph.mesenteric_vessels = _Tubes(np.array(mesentery, dtype=float))
        ph._make_bowel(rng)
        return ph

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

    def _liver_trees(self, rng: np.random.Generator) -> list[list[float]]:
        """Hepatic veins converging on the IVC and portal vein branches."""
        segs: list[list[float]] = []
        ivc = np.array([-20.0, 18.0, 205.0])
        for target in ((-105, -15, 240), (-55, -60, 238), (15, -55, 245)):
            segs += _tree(rng, ivc, np.array(target) - ivc, 40.0, 5.0, 2)
        porta = np.array([-15.0, 10.0, 300.0])
        segs.append([-5.0, 20.0, 330.0, *porta, 7.0])
        for target in ((-90, -10, 265), (5, -45, 268), (-70, 25, 300)):
            segs += _tree(rng, porta, np.array(target) - porta, 35.0, 5.0, 2)
        return segs

    def _make_bowel(self, rng: np.random.Generator) -> None:
        """Small-bowel loops as random walks of tubes, plus gas bubbles in some of them."""
        segs: list[list[float]] = []
        kinds: list[float] = []
        gas: list[list[float]] = []
        # Loops packed on a jittered lattice fill the mesentery the way small bowel does.
        for zc in np.arange(345.0, 546.0, 21.0):
            for yc in (-68.0, -44.0, -20.0):
                for xc in np.arange(-78.0, 79.0, 26.0):
                    centre = np.array([xc, yc, zc]) + rng.uniform(-6, 6, size=3)
                    d = rng.normal(size=3)
                    d[2] *= 0.6
                    d /= np.linalg.norm(d)
                    half = rng.uniform(5, 14)
                    r = rng.uniform(7.5, 11.5)
                    p, q = centre - d * half, centre + d * half
                    segs.append([*p, *q, r])
                    kinds.append(float(rng.choice([0, 1, 2], p=[0.5, 0.35, 0.15])))
                    if rng.random() < 0.15:
                        g = rng.uniform(2.5, r * 0.55)
                        gas.append([q[0], q[1] - (r - g - 2.5), q[2], g])
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
        self._pelvic_organs(cv, zr)
        self._bones(cv, zr, frame)
        for lesion in lesions:
            lesion.paint(cv, z_mm, self.scale, self.z_scale)
        hu = cv.hu
        if rng is not None and noise_sd > 0:
            hu += correlated_noise(rng, hu.shape, noise_sd)
        np.clip(hu, -1024.0, 3071.0, out=hu)
        return hu, cv.labels

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
            self._tubes(cv, zr, self.lung_vessels.active(zr), 35.0, None, clip=(win, alpha))
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
        """Small bowel loops and the colon: walls, fluid or mixed contents, gas pockets."""
        if not (300.0 < zr < 640.0):
            return
        self._tubes(cv, zr, self.mesenteric_vessels.active(zr), 170.0, VESSEL, clip=(cv.full(), fr.cavity))
        s = self.bowel.seg
        if len(s):
            r = s[:, 6]
            act = (np.minimum(s[:, 2], s[:, 5]) - r <= zr) & (zr <= np.maximum(s[:, 2], s[:, 5]) + r)
            segs = s[act]
            kinds = self.bowel_kind[act]
            inside = (cv.full(), fr.cavity)
            self._tubes(cv, zr, segs, 55.0, BOWEL, clip=inside)
            for seg, kind in zip(segs, kinds, strict=True):
                content = (18.0, 35.0, -40.0)[int(kind)]
                self._tubes(cv, zr, seg[None, :], content, BOWEL, clip=inside, radius_add=-2.6)
            for g in self.gas:
                dz = zr - g[2]
                if abs(dz) < g[3]:
                    rr = math.sqrt(g[3] ** 2 - dz * dz)
                    cv.ellipse(g[0], g[1], rr, rr * 0.8, -1000.0, BOWEL, clip=fr.cavity)
        # Colon: a fixed path around the abdomen, gas on top of mottled stool.
        for a3, b3, rad in _COLON:
            box = segment_slab(zr, a3, b3, rad)
            if box is None:
                continue
            win = cv.window(*box)
            if win is None:
                continue
            dist, t = segment_dist_3d(win.X, win.Y, zr, a3, b3)
            cv.paint(win, soft(np.float32(rad) - dist, cv.edge), 50.0, BOWEL)
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
                mottle = rng.standard_normal(lumen.shape, dtype=np.float32)
                stool = np.float32(-160.0) + np.float32(110.0) * np.tanh(_box3(mottle) * np.float32(1.5))
            else:
                stool = np.full(lumen.shape, -160.0, dtype=np.float32)
            gas_line = soft(axis_y - np.float32(0.25 * rad) - win.Y, cv.edge)
            value = stool + gas_line * (np.float32(-1000.0) - stool)
            cv.paint(win, lumen, value, BOWEL)

    def _abdominal_organs(self, cv: Canvas, zr: float, fr: _Frame) -> None:
        """Liver, gallbladder, stomach, spleen, pancreas and kidneys."""
        cav = fr.cavity
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
                self.liver_hu,
                LIVER,
                angle=0.25,
                clip=cav,
            )
            s_l = _bump(zr, 205.0, 315.0)
            if s_l > 0:
                cv.ellipse(8 + jx, -52 + jy, 58 * s_l, 32 * s_l, self.liver_hu, LIVER, angle=-0.35, clip=cav)
            if win_alpha is not None:
                self._tubes(cv, zr, self.liver_vessels.active(zr), 165.0, LIVER, clip=win_alpha)
        s_gb = _bump(zr, 295.0, 350.0)
        if s_gb > 0:
            cv.ellipse(-48 + jx, -48 + jy, 15 * s_gb, 22 * s_gb, 12.0, GALLBLADDER, angle=0.4)
        # Stomach: wall, fluid, and an air-fluid level.
        jx, jy = self._j("stomach")
        s_st = _bump(zr, 205.0, 315.0)
        if s_st > 0:
            cx, cy, a, b = 50 + jx, -30 + jy, 46 * s_st, 38 * s_st
            cv.ellipse(cx, cy, a, b, 55.0, STOMACH, angle=0.5)
            res = cv.ellipse(cx, cy, a - 4, b - 4, 20.0, STOMACH, angle=0.5)
            if res is not None:
                win, lumen = res
                gas = soft(np.float32(cy - 0.35 * b) - win.Y, cv.edge) * lumen
                cv.paint(win, gas, -1000.0, STOMACH)
        jx, jy = self._j("spleen")
        s_sp = _bump(zr, 212.0, 325.0)
        if s_sp > 0:
            cv.ellipse(88 + jx, 42 + jy, 30 * s_sp, 58 * s_sp, self.spleen_hu, SPLEEN, angle=0.75, clip=cav)
        # Pancreas: a tube from the head (right, lower) to the tail at the splenic hilum (left, higher).
        for a3, b3 in (
            ((-28.0, 2.0, 338.0), (10.0, -12.0, 322.0)),
            ((10.0, -12.0, 322.0), (68.0, 18.0, 305.0)),
        ):
            box = segment_slab(zr, a3, b3, 12.0)
            pwin = None if box is None else cv.window(*box)
            if pwin is not None:
                dist, _ = segment_dist_3d(pwin.X, pwin.Y, zr, a3, b3)
                cv.paint(pwin, soft(np.float32(11.0) - dist, cv.edge), 95.0, PANCREAS)
        vby, _, _ = self.vb(zr)
        for side, name, zc in ((-1.0, "kidney_r", 368.0), (1.0, "kidney_l", 352.0)):
            s_k = _bump(zr, zc - 58.0, zc + 58.0)
            if s_k <= 0:
                continue
            jx, jy = self._j(name)
            cx, cy = side * 70 + jx, vby + 8 + jy
            ang = side * 0.6
            cv.ellipse(cx, cy, 27 * s_k, 38 * s_k, self.kidney_hu, KIDNEY, angle=ang)
            cv.ellipse(cx, cy, 17 * s_k, 27 * s_k, self.kidney_hu - 40.0, KIDNEY, angle=ang)
            hil = _bump(zr, zc - 25.0, zc + 25.0)
            if hil > 0:
                hx, hy = cx - side * 15.0, cy - 8.0
                cv.ellipse(hx, hy, 10 * hil, 14 * hil, -80.0, CAVITY_FAT, angle=ang)
                cv.ellipse(hx, hy, 5 * hil, 8 * hil, 10.0, KIDNEY, angle=ang)

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
            cv.ellipse(cx, cy, 64 * s_h, 50 * s_h, 95.0, HEART, angle=-0.55)
            lv = _bump(zr, 150.0, 240.0)
            if lv > 0:
                cv.ellipse(cx + 22, cy - 2, 24 * lv, 19 * lv, 175.0, HEART, angle=-0.6)
                cv.ellipse(cx - 12, cy - 22, 26 * lv, 12 * lv, 165.0, HEART, angle=-0.5)
            la = _bump(zr, 122.0, 185.0)
            if la > 0:
                cv.ellipse(cx - 5, cy + 30, 30 * la, 16 * la, 170.0, HEART)
            ra = _bump(zr, 150.0, 232.0)
            if ra > 0:
                cv.ellipse(cx - 32, cy + 8, 17 * ra, 20 * ra, 160.0, HEART)
        if zr < 270.0:
            vby, vba, _ = self.vb(zr)
            ex = 6.0 + 22.0 * _ramp(zr, 180.0, 270.0)
            cv.ellipse(ex, vby - vba - 6.0, 8.0, 6.0, 40.0, MUSCLE)
            cv.ellipse(ex, vby - vba - 6.0, 2.5, 1.8, -950.0, AIRWAY)

    def _vessels(self, cv: Canvas, zr: float) -> None:
        """Aorta, pulmonary artery, venae cavae and iliac vessels as contrast-filled tubes."""
        vby, vba, _ = self.vb(zr)
        segs = []
        for path, rad, hu in _vessel_paths(vby, vba, self.aorta_hu):
            for a3, b3 in zip(path[:-1], path[1:], strict=True):
                if min(a3[2], b3[2]) - rad <= zr <= max(a3[2], b3[2]) + rad:
                    segs.append(([*a3, *b3, rad], hu))
        for seg, hu in segs:
            self._tubes(cv, zr, np.array([seg]), hu, VESSEL)

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
            cv.ellipse(jx, -38.0 + jy, 48 * s_b - 3, 36 * s_b - 3, 10.0, BLADDER)

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
            cv.ellipse(0.0, canal, 8.0, 8.5, 15.0, CSF)
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


def _vessel_paths(
    vby: float, vba: float, aorta_hu: float
) -> list[tuple[list[tuple[float, float, float]], float, float]]:
    """Centre lines (reference mm) of the great vessels, their radius and HU."""
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
    iliac_r = [(4.0, pre - 2.0, 445.0), (-30.0, 30.0, 520.0), (-62.0, -8.0, 600.0), (-72.0, -22.0, 650.0)]
    iliac_l = [(x * -1.0 if i else x, y, z) for i, (x, y, z) in enumerate(iliac_r)]
    ivc = [(-22.0, 10.0, 195.0), (-22.0, pre, 320.0), (-20.0, pre, 450.0)]
    iv_r = [(-20.0, pre, 450.0), (-42.0, 40.0, 525.0), (-70.0, 5.0, 605.0), (-78.0, -10.0, 650.0)]
    iv_l = [(-20.0, pre, 450.0), (30.0, 42.0, 530.0), (70.0, 5.0, 605.0), (78.0, -10.0, 650.0)]
    svc = [(-24.0, -24.0, 20.0), (-26.0, -26.0, 140.0)]
    # Arch branches up to the neck, and the left brachiocephalic vein crossing in front of them.
    brachiocephalic = [(2.0, -26.0, 60.0), (-12.0, -14.0, 20.0), (-16.0, -8.0, -20.0)]
    carotid = [(10.0, -20.0, 60.0), (8.0, -12.0, -20.0)]
    subclavian = [(18.0, -10.0, 62.0), (24.0, -2.0, 20.0), (40.0, 0.0, -20.0)]
    left_bcv = [(45.0, -30.0, 30.0), (-22.0, -26.0, 38.0)]
    pa = [(12.0, -58.0, 150.0), (22.0, -40.0, 112.0)]
    lpa = [(22.0, -40.0, 112.0), (48.0, -8.0, 118.0)]
    rpa = [(18.0, -30.0, 114.0), (-48.0, -6.0, 122.0)]
    return [
        (aorta, 13.5, aorta_hu),
        (iliac_r, 7.0, aorta_hu),
        (iliac_l, 7.0, aorta_hu),
        (ivc, 11.0, 125.0),
        (iv_r, 7.5, 120.0),
        (iv_l, 7.5, 120.0),
        (svc, 10.0, 260.0),
        (brachiocephalic, 6.5, aorta_hu),
        (carotid, 4.5, aorta_hu),
        (subclavian, 5.0, aorta_hu),
        (left_bcv, 5.5, 230.0),
        (pa, 14.0, aorta_hu - 20),
        (lpa, 10.0, aorta_hu - 20),
        (rpa, 10.0, aorta_hu - 20),
    ]


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


def _box3(a: F32) -> F32:
    """3x3 binomial blur (edges wrap), cheap correlation for noise fields."""
    b = a * np.float32(0.5)
    b[:, 1:] += a[:, :-1] * np.float32(0.25)
    b[:, :-1] += a[:, 1:] * np.float32(0.25)
    c = b * np.float32(0.5)
    c[1:, :] += b[:-1, :] * np.float32(0.25)
    c[:-1, :] += b[1:, :] * np.float32(0.25)
    return c


def correlated_noise(rng: np.random.Generator, shape: tuple[int, ...], sd: float) -> F32:
    """Gaussian noise smoothed over about a pixel and a half, rescaled to standard deviation `sd` HU."""
    white = rng.standard_normal(shape, dtype=np.float32)
    # A 3x3 binomial blur keeps 0.375 of the standard deviation.
    return _box3(white) * np.float32(sd / 0.375)
