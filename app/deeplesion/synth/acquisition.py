"""How a slice was acquired: contrast phase (blood and organ HU), reconstruction kernel, noise, artefacts."""

# Domain randomisation at generation time: the same body looks different in each study (phase) and
# each series (kernel, dose, streaks), as real CT does, so a detector cannot learn one fixed look.

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from app.deeplesion.synth.raster import F32, Grid

PHASES = ("non-contrast", "arterial", "portal venous", "delayed")
# Shares of the phases among studies: most oncology CT is portal venous.
PHASE_WEIGHTS = (0.15, 0.15, 0.55, 0.15)
KERNELS = ("soft", "standard", "sharp")
KERNEL_WEIGHTS = (0.3, 0.5, 0.2)
# How much more noise a sharp kernel shows at the same dose, and how much less a soft one.
KERNEL_NOISE = {"soft": 0.75, "standard": 1.0, "sharp": 1.7}
# Chance that a series shows streak and beam-hardening artefacts from its dense structures.
ARTEFACT_RATE = 0.6


@dataclass(frozen=True)
class Enhancement:
    """Attenuation (HU) of blood and enhancing organs in one contrast phase."""

    phase: str
    artery: float
    vein: float  # systemic veins: cavae, iliac and femoral veins, renal veins
    portal: float  # portal, splenic and mesenteric veins
    hepatic_vein: float
    svc: float  # injected side: undiluted contrast in the arterial phase
    pulmonary: float
    liver: float
    spleen: float
    kidney_cortex: float
    kidney_medulla: float
    urine: float
    pancreas: float
    adrenal: float
    bowel_wall: float
    myocardium: float
    node: float
    muscle_gain: float  # small rise of muscle and soft tissue with contrast


def enhancement(
    phase: str, *, gain: float = 1.0, liver_base: float = 58.0, aorta_peak: float = 280.0
) -> Enhancement:
    """HU of every enhancing structure in `phase` for a patient whose bolus strength is `gain`."""
    if phase not in PHASES:
        raise ValueError(f"unknown contrast phase {phase!r}; expected one of {', '.join(PHASES)}")
    g = gain

    def up(base: float, rise: float) -> float:
        return base + rise * g

    if phase == "non-contrast":
        return Enhancement(
            phase, 42.0, 40.0, 40.0, 40.0, 42.0, 40.0, liver_base, liver_base - 7.0,
            32.0, 30.0, 6.0, 42.0, 32.0, 38.0, 42.0, 38.0, 0.0,
        )  # fmt: skip
    if phase == "arterial":
        return Enhancement(
            phase, up(42, aorta_peak - 42), up(40, 25), up(40, 90), up(40, 15), up(42, 900),
            up(40, aorta_peak - 60), up(liver_base, 18), up(liver_base - 7, 70), up(32, 170), up(30, 45),
            6.0, up(42, 80), up(32, 40), up(38, 60), up(42, 60), up(38, 25), 4.0,
        )  # fmt: skip
    if phase == "portal venous":
        # Portal venous values as deeplesion.md lists them: liver 100-130, aorta 150-300, kidney 150-200.
        return Enhancement(
            phase, up(42, 0.6 * aorta_peak - 30), up(40, 110), up(40, 130), up(40, 110),
            up(42, 120), up(40, 110), up(liver_base, 55), up(liver_base - 7, 58), up(32, 145),
            up(30, 120), 10.0, up(42, 55), up(32, 35), up(38, 35), up(42, 50), up(38, 25), 8.0,
        )  # fmt: skip
    return Enhancement(
        phase, up(42, 70), up(40, 68), up(40, 65), up(40, 65), up(42, 70), up(40, 65),
        up(liver_base, 30), up(liver_base - 7, 32), up(32, 90), up(30, 95), up(10, 700),
        up(42, 30), up(32, 20), up(38, 20), up(42, 30), up(38, 15), 6.0,
    )  # fmt: skip


@dataclass(frozen=True)
class Acquisition:
    """One series' reconstruction: kernel, noise standard deviation (HU) and artefact strength (0..1)."""

    kernel: str = "standard"
    noise_sd: float = 15.0
    artefacts: float = 0.0

    @classmethod
    def random(cls, rng: np.random.Generator, base_noise_sd: float) -> Acquisition:
        """A kernel, a dose (noise) and artefact strength drawn for one series."""
        kernel = KERNELS[int(rng.choice(len(KERNELS), p=np.array(KERNEL_WEIGHTS)))]
        # Dose varies more than the slice thickness alone says: low-dose follow-ups, large patients.
        dose = float(rng.lognormal(0.0, 0.3))
        artefacts = float(rng.uniform(0.4, 1.0)) if rng.random() < ARTEFACT_RATE else 0.0
        return cls(kernel, round(base_noise_sd * dose * KERNEL_NOISE[kernel], 3), round(artefacts, 3))


def box3(a: F32) -> F32:
    """3x3 binomial blur (edges wrap), the cheap smoothing behind noise texture and soft kernels."""
    b = a * np.float32(0.5)
    b[:, 1:] += a[:, :-1] * np.float32(0.25)
    b[:, :-1] += a[:, 1:] * np.float32(0.25)
    c = b * np.float32(0.5)
    c[1:, :] += b[:-1, :] * np.float32(0.25)
    c[:-1, :] += b[1:, :] * np.float32(0.25)
    return c


def noise_field(rng: np.random.Generator, shape: tuple[int, ...], sd: float, kernel: str = "standard") -> F32:
    """Correlated Gaussian noise of standard deviation `sd` HU with the texture of the kernel."""
    white = rng.standard_normal(shape, dtype=np.float32)
    if kernel == "sharp":
        # Fine grain: a light blur only (keeps 0.61 of the white standard deviation).
        f = white * np.float32(0.6)
        f[:, 1:] += white[:, :-1] * np.float32(0.2)
        f[:, :-1] += white[:, 1:] * np.float32(0.2)
        return f * np.float32(sd / 0.6633)
    if kernel == "soft":
        # Blotchy: two binomial blurs keep 0.2734 of it.
        return box3(box3(white)) * np.float32(sd / 0.2734)
    # A 3x3 binomial blur keeps 0.375 of the standard deviation.
    return box3(white) * np.float32(sd / 0.375)


def apply_kernel(hu: F32, kernel: str) -> F32:
    """Edge look of the kernel: a soft kernel blurs, a sharp one overshoots at edges."""
    if kernel == "soft":
        return box3(hu)
    if kernel == "sharp":
        return hu + np.float32(0.6) * (hu - box3(hu))
    return hu


def add_artefacts(hu: F32, grid: Grid, rng: np.random.Generator, strength: float) -> None:
    """Streaks from the densest points and dark beam-hardening bands between dense structures, in place."""
    if strength <= 0:
        return
    step = 4
    coarse = hu[::step, ::step]
    jj, ii = np.nonzero(coarse > 600.0)
    if len(jj) < 3:
        return
    n = grid.size
    xs = np.arange(n, dtype=np.float32)[None, :]
    ys = np.arange(n, dtype=np.float32)[:, None]
    tissue = np.clip((np.float32(400.0) - np.abs(hu - np.float32(100.0))) / np.float32(200.0), 0, 1)
    px_mm = np.float32(grid.spacing)
    # Beam hardening: a dark band along the line joining two dense structures far apart.
    pts = np.stack([ii * step, jj * step], axis=1).astype(np.float32)
    bands = 0
    for _ in range(6):
        if bands >= 2:
            break
        a, b = pts[int(rng.integers(len(pts)))], pts[int(rng.integers(len(pts)))]
        length = float(np.hypot(*(b - a)))
        if length * float(px_mm) < 70.0:
            continue
        bands += 1
        u = (b - a) / length
        t = np.clip((xs - a[0]) * u[0] + (ys - a[1]) * u[1], 0, length)
        d = np.hypot(xs - (a[0] + t * u[0]), ys - (a[1] + t * u[1])) * px_mm
        width = np.float32(rng.uniform(4.0, 9.0))
        depth = np.float32(strength * rng.uniform(25.0, 60.0))
        hu -= depth * np.exp(-((d / width) ** 2)) * tissue
    # Streaks: thin alternating bright and dark lines radiating from the densest pixels.
    peak = float(coarse.max())
    jj, ii = np.nonzero(coarse >= max(600.0, peak - 150.0))
    k = int(rng.integers(len(jj)))
    x0, y0 = np.float32(ii[k] * step), np.float32(jj[k] * step)
    dense = min(1.0, (peak - 400.0) / 800.0)
    r = np.hypot(xs - x0, ys - y0) * px_mm + np.float32(10.0)
    for _ in range(int(rng.integers(2, 6))):
        ang = rng.uniform(0, math.pi)
        d = np.abs((xs - x0) * np.float32(math.sin(ang)) - (ys - y0) * np.float32(math.cos(ang))) * px_mm
        amp = np.float32(strength * dense * rng.uniform(40.0, 120.0) * (1 if rng.random() < 0.5 else -1))
        hu += amp * np.exp(-((d / np.float32(0.9)) ** 2)) * np.float32(30.0) / r
