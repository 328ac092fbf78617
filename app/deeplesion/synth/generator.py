"""The synthetic DeepLesion dataset: plan, measure, write DL_info.csv, the context slices and the truth."""

# Every DL_info.csv field is derived from the rendered lesions as the real dataset defines it; the
# slices are rendered in worker processes, each seeded by its own identity so that the output does
# not depend on the number of workers.

from __future__ import annotations

import ctypes
import json
import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.deeplesion.csvio import write_dl_info
from app.deeplesion.geometry import box_from_recist, measure_recist, recist_diameters
from app.deeplesion.schema import (
    LESION_TYPES,
    LesionRecord,
    csv_coordinates,
    series_folder_name,
    slice_file_name,
)
from app.deeplesion.store import IMAGES_DIR, write_hu_png
from app.deeplesion.synth.acquisition import PHASE_WEIGHTS, PHASES, Acquisition
from app.deeplesion.synth.anatomy import REGIONS, Z_BOTTOM, Z_TOP, Phantom
from app.deeplesion.synth.lesions import Lesion, LesionShape, place_lesions
from app.deeplesion.synth.raster import F32, Grid

log = logging.getLogger(__name__)

GENERATOR_VERSION = "lesion-review-synth 4"
CONTEXT_MM = 30.0
# Chance that a lesion observation is deliberately left out of DL_info.csv. Bookmarks miss mostly the
# lesions a radiologist saw but did not measure: those cut clearly through another lesion's key slice.
# Such a lesion is the one a key-slice detector and a reviewer can find, so most missed lesions are of
# that kind; a few are missed with no key slice showing them.
UNANNOTATED_SHOWN = 0.5
UNANNOTATED_HIDDEN = 0.05
# The sub-volume model (missed_off_key, docs/synthetic-data.md): Lesion-Harvester found most of DeepLesion's
# unmarked lesions on the non-key slices of the stored sub-volumes. Each placed lesion gets on average this
# many neighbours SUBVOLUME_Z_MM above or below it (inside its +-30 mm context, off its key slice).
SUBVOLUME_NEIGHBOURS = 1.0
SUBVOLUME_Z_MM = (10.0, 24.0)
# "Cuts clearly": the in-plane cut is at least this share of the lesion's widest extent and this wide.
SHOWN_MIN_SHARE = 0.6
SHOWN_MIN_MM = 5.0
# Rose's criterion: a reader sees a lesion on a slice when its signal-to-noise ratio reaches about 5. The
# signal is the ideal observer's (root sum of squares of what the lesion adds to the noise-free slice, over
# the pixel noise), which for a uniform disc is Rose's contrast x sqrt(area) / noise. Below it, no
# radiologist could have measured the lesion on that key slice (an isodense liver lesion in its phase).
ROSE_K = 5.0
# Share of CSV rows marked Possibly_noisy (and made noisy); the real file has 35 of 32,735.
NOISY_RATE = 0.006
MAX_SLICES = 999
# Scan ranges (reference z, mm) of the study protocols.
PROTOCOLS: dict[str, tuple[float, float]] = {
    "chest": (REGIONS["chest"][0], REGIONS["chest"][1] + 10.0),
    "abdomen": (REGIONS["abdomen"][0], REGIONS["abdomen"][1]),
    "abdomen-pelvis": (REGIONS["abdomen"][0], Z_BOTTOM),
    "chest-abdomen-pelvis": (Z_TOP, Z_BOTTOM),
}
FIELDS_OF_VIEW_MM = (340.0, 360.0, 380.0, 400.0, 420.0, 440.0, 460.0, 480.0, 500.0)
# Slice intervals and their shares in the real file (48.3% 1 mm, 48.9% 5 mm).
INTERVALS: tuple[tuple[float, float], ...] = ((1.0, 0.48), (5.0, 0.48), (2.0, 0.04))
SOFT_WINDOWS = (
    ((-175.0, 275.0), 0.5),
    ((-160.0, 240.0), 0.2),
    ((-177.5, 307.5), 0.15),
    ((-135.0, 215.0), 0.15),
)
LUNG_WINDOWS = (((-1500.0, 500.0), 0.5), ((-1350.0, 150.0), 0.3), ((-175.0, 275.0), 0.2))
BONE_WINDOWS = (((-450.0, 1050.0), 0.35), ((-175.0, 275.0), 0.65))
# Follow-up mode (followup=True): studies per patient, the chance a lesion is first seen in a later study,
# the chance per later study that one resolves for good, the body's scale change and the scan start shift.
FOLLOWUP_STUDIES = ((2, 0.4), (3, 0.35), (4, 0.25))
FOLLOWUP_APPEAR_LATE = 0.25
FOLLOWUP_RESOLVE = 0.12
FOLLOWUP_SCALE_SD = 0.02
FOLLOWUP_Z_SHIFT_SD_MM = 12.0
TRUTH_DESCRIPTION = (
    "SYNTHETIC data made by Lesion Review's generator (app/deeplesion/synth): an analytic CT phantom with "
    "ellipsoid lesions, not patient data. Every lesion is listed, including those deliberately left out "
    "of DL_info.csv ('annotated': false), so a review or a detector can be scored on missed lesions. "
    "Body coordinates are mm: x to the patient's left (image right), y to the back (image down), z from "
    "head to feet. Pixel coordinates are 0-based (col, row) of the slice image, as in DL_info.csv."
)


@dataclass
class SynthSummary:
    """What a generation run produced."""

    patients: int = 0
    studies: int = 0
    series: int = 0
    key_slices: int = 0
    lesions_annotated: int = 0
    lesions_unannotated: int = 0
    slices_written: int = 0
    seconds: float = 0.0
    out_dir: str = ""

    def describe(self) -> str:
        """One line for humans."""
        return (
            f"{self.patients} patients, {self.studies} studies, {self.series} series, "
            f"{self.key_slices} key slices, "
            f"{self.lesions_annotated} annotated lesions (CSV rows), {self.lesions_unannotated} unannotated, "
            f"{self.slices_written} slices written in {self.seconds:.1f} s -> {self.out_dir}"
        )


@dataclass
class SeriesPlan:
    """One CT series: its geometry and which slices get stored."""

    patient: int
    study: int
    series_id: int
    interval_mm: float
    spacing_mm: float
    size: int
    z_first: float
    n_slices: int
    centre_px: tuple[float, float]
    noise_sd: float
    stored: set[int] = field(default_factory=set)
    kernel: str = "standard"
    artefacts: float = 0.0
    context_mm: float = CONTEXT_MM

    @property
    def folder(self) -> str:
        """Series folder name in Images_png."""
        return series_folder_name(self.patient, self.study, self.series_id)

    @property
    def grid(self) -> Grid:
        """Pixel grid of the series' slices in body mm."""
        return Grid.centred(self.size, self.spacing_mm, self.centre_px)

    def z_of(self, index: int) -> float:
        """Physical z (mm) of slice `index` (1-based)."""
        return self.z_first + (index - 1) * self.interval_mm

    def nearest(self, z: float) -> int:
        """Index of the slice nearest to z, clipped to the series."""
        return int(min(self.n_slices, max(1, round((z - self.z_first) / self.interval_mm) + 1)))

    def context(self, key: int) -> tuple[int, int]:
        """Slice_range: +-context_mm (30 mm as in DeepLesion) around the key slice, clipped to the volume."""
        half = max(1, int(round(self.context_mm / self.interval_mm)))
        return max(1, key - half), min(self.n_slices, key + half)


@dataclass
class Observation:
    """One lesion in one study: where it is measured and whether DL_info.csv lists it."""

    lesion: Lesion
    study: int
    months: float
    series: SeriesPlan
    shape: LesionShape
    annotated: bool
    key_index: int = 0
    visible: bool = False
    # Rose signal-to-noise ratio of the lesion on its key slice (0 when the slice misses it).
    conspicuity: float = 0.0
    recist: tuple[float, ...] = ()
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    diameters: tuple[float, float] = (0.0, 0.0)
    noisy: dict[str, Any] | None = None
    true_recist: tuple[float, ...] = ()
    dicom_window: tuple[float, float] = (-175.0, 275.0)
    # Follow-up mode: the body as scanned in this study (scaled a little); None = the patient's phantom.
    phantom: Phantom | None = None

    @property
    def file_name(self) -> str:
        """DL_info file name of the key slice."""
        return slice_file_name(self.series.patient, self.study, self.series.series_id, self.key_index)


@dataclass
class StudyPlan:
    """One study (CT exam) of a patient."""

    index: int
    months: float
    protocol: str
    series: list[SeriesPlan]
    observations: list[Observation]
    phantom: Phantom | None = None  # follow-up mode: this study's body (see Observation.phantom)
    phase: str = "portal venous"  # contrast phase of the study


@dataclass
class PatientPlan:
    """Everything drawn for one patient."""

    index: int
    gender: str
    age: int
    split: int
    phantom: Phantom
    lesions: list[Lesion]
    studies: list[StudyPlan]


def _choice(rng: np.random.Generator, options: tuple[tuple[Any, float], ...]) -> Any:
    """Weighted choice among (value, weight) pairs."""
    weights = np.array([w for _, w in options], dtype=float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))][0]


def patient_splits(patients: int, seed: int) -> dict[int, int]:
    """Patient-level 70/15/15 train/val/test split; with 3 or more patients val and test are never empty."""
    order = np.random.default_rng([seed, 7_015_015]).permutation(np.arange(1, patients + 1))
    n_val = int(round(0.15 * patients))
    n_test = int(round(0.15 * patients))
    if patients >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    split = {int(p): 1 for p in order}
    for p in order[:n_val]:
        split[int(p)] = 2
    for p in order[n_val : n_val + n_test]:
        split[int(p)] = 3
    return split


def _dicom_window(rng: np.random.Generator, lesion_type: int) -> tuple[float, float]:
    """The DICOM window a scanner would have stored for a key slice showing this lesion type."""
    if lesion_type == 5:
        return _choice(rng, LUNG_WINDOWS)
    if lesion_type == 1:
        return _choice(rng, BONE_WINDOWS)
    return _choice(rng, SOFT_WINDOWS)


def _presence(rng: np.random.Generator, n_lesions: int, n_studies: int) -> list[list[bool]]:
    """Follow-up mode: in which studies each lesion exists (appears late, resolves for good); none empty."""
    out: list[list[bool]] = []
    for _ in range(n_lesions):
        first = 0 if rng.random() >= FOLLOWUP_APPEAR_LATE else int(rng.integers(0, n_studies))
        row, gone = [], False
        for k in range(n_studies):
            gone = gone or (k > first and rng.random() < FOLLOWUP_RESOLVE)
            row.append(k >= first and not gone)
        out.append(row)
    for k in range(n_studies):
        if not any(row[k] for row in out):
            out[0][k] = True
    return out


def plan_patient(
    index: int,
    *,
    seed: int,
    size: int,
    split: int,
    max_studies: int | None,
    max_lesions: int | None = None,
    followup: bool = False,
    context_mm: float = CONTEXT_MM,
    missed_off_key: float | None = None,
) -> PatientPlan:
    """Draw one patient's anatomy, lesions, studies and series, and measure every lesion."""
    # followup=True: at least two studies, lesions appear and resolve, the body scales and the scan start
    # moves a little between studies, drawn from a stream of its own so that the default mode is unchanged.
    ph_ss, les_ss, st_ss = np.random.SeedSequence([seed, index]).spawn(3)
    rng = np.random.default_rng(st_ss)
    gender = "M" if rng.random() < 0.52 else "F"
    age = int(rng.integers(18, 86))
    phantom = Phantom.random(np.random.default_rng(ph_ss), gender)
    les_rng = np.random.default_rng(les_ss)
    n_lesions = int(min(6, 1 + les_rng.poisson(1.8)))
    if max_lesions is not None:
        n_lesions = max(1, min(n_lesions, max_lesions))
    lesions = place_lesions(phantom, les_rng, n_lesions, sibling_rate=0.45)
    if missed_off_key is not None:
        # From a stream of its own, so that the lesions placed above are those of the default model.
        near_rng = np.random.default_rng([seed, index, 16])
        extra = int(near_rng.poisson(SUBVOLUME_NEIGHBOURS * len(lesions)))
        if max_lesions is not None:
            extra = max(0, min(extra, max_lesions - len(lesions)))
        lesions += place_lesions(phantom, near_rng, extra, existing=lesions, z_near_mm=SUBVOLUME_Z_MM)
    n_studies = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15]))
    fu_rng = np.random.default_rng([seed, index, 14])
    # Acquisition (phase, kernel, dose, artefacts) from a stream of its own.
    acq_rng = np.random.default_rng([seed, index, 15])
    if followup:
        weights = np.array([w for _, w in FOLLOWUP_STUDIES])
        n_studies = FOLLOWUP_STUDIES[int(fu_rng.choice(len(weights), p=weights / weights.sum()))][0]
    if max_studies is not None:
        n_studies = max(1, min(n_studies, max_studies))
    present = _presence(fu_rng, len(lesions), n_studies) if followup else None
    months = [0.0]
    for _ in range(n_studies - 1):
        months.append(months[-1] + float(rng.uniform(2.0, 9.0)))
    zs = phantom.z_scale
    width = max(phantom.body_extent(z)[1] - phantom.body_extent(z)[0] for z in np.linspace(0, 620 * zs, 12))
    lz = [les.centre[2] for les in lesions] or [300.0 * zs]
    studies: list[StudyPlan] = []
    for k in range(1, n_studies + 1):
        body = phantom
        if followup and k > 1:
            f = float(fu_rng.normal(1.0, FOLLOWUP_SCALE_SD))
            body = replace(phantom, scale=phantom.scale * f, z_scale=phantom.z_scale * f)
        covering = [
            name for name, (a, b) in PROTOCOLS.items() if a * zs <= min(lz) - 40 and max(lz) + 40 <= b * zs
        ]
        protocol = str(rng.choice(covering)) if covering else "chest-abdomen-pelvis"
        fov = max(float(rng.choice(FIELDS_OF_VIEW_MM)), math.ceil((width + 40.0) / 20.0) * 20.0)
        spacing = round(fov / size, 6)
        shift = rng.normal(0.0, 5.0, size=2)
        centre_px = (size / 2.0 + shift[0] / spacing, size / 2.0 + (shift[1] - 18.0) / spacing)
        series: list[SeriesPlan] = []
        n_series = 1 if rng.random() < 0.7 else 2
        for sid in range(1, n_series + 1):
            dz = float(_choice(rng, INTERVALS))
            z0, z1 = PROTOCOLS[protocol]
            z_first = z0 * zs + float(rng.uniform(-4.0, 4.0))
            if followup:
                z_first += float(fu_rng.normal(0.0, FOLLOWUP_Z_SHIFT_SD_MM))
            n = min(MAX_SLICES, int((z1 * zs - z_first) // dz) + 1)
            noise = {1.0: 17.0, 2.0: 14.0, 5.0: 11.0}[dz] * float(rng.uniform(0.9, 1.15))
            acq = Acquisition.random(acq_rng, noise)
            series.append(
                SeriesPlan(
                    index, k, sid, dz, spacing, size, z_first, n, centre_px, acq.noise_sd,
                    kernel=acq.kernel, artefacts=acq.artefacts, context_mm=context_mm,
                )
            )  # fmt: skip
        phase = PHASES[int(acq_rng.choice(len(PHASES), p=np.array(PHASE_WEIGHTS)))]
        obs: list[Observation] = []
        for i, les in enumerate(lesions):
            scale = les.scale_at(months[k - 1])
            chosen = series[int(rng.integers(len(series)))]
            if present is not None and not present[i][k - 1]:
                continue
            shape = les.at_scale(scale, phase)
            if body is not phantom:
                f = body.scale / phantom.scale
                shape = replace(shape, centre=(shape.centre[0] * f, shape.centre[1] * f, shape.centre[2] * f))
            obs.append(
                Observation(les, k, months[k - 1], chosen, shape, True, phantom=body if followup else None)
            )
        studies.append(
            StudyPlan(
                k, months[k - 1], protocol, series, obs, phantom=body if followup else None, phase=phase
            )
        )
    plan = PatientPlan(index, gender, age, split, phantom, lesions, studies)
    for study in studies:
        _measure_study(plan, study, rng, missed_off_key)
    return plan


def conspicuity(
    body: Phantom, grid: Grid, kernel: str, noise_sd: float, shape: LesionShape, z: float
) -> float:
    """Rose SNR of a lesion on the slice at z: root sum of squares of its noise-free signal over the noise."""
    col, row = grid.to_px(shape.centre[0], shape.centre[1])
    # Enough to hold the lobulated outline, the spicules and the kernel's blur around it.
    reach_mm = max(shape.semi_axes[0], shape.semi_axes[1]) * (1.0 + shape.lobes[0]) + 12.0
    half = int(math.ceil(reach_mm / grid.spacing))
    c0, r0 = int(round(col)) - half, int(round(row)) - half
    local = Grid(2 * half + 1, grid.spacing, grid.x0 + c0 * grid.spacing, grid.y0 + r0 * grid.spacing)
    with_lesion, _ = body.render(z, local, [shape], kernel=kernel)
    without, _ = body.render(z, local, [], kernel=kernel)
    signal = (with_lesion - without).astype(np.float64)
    return float(np.sqrt(np.square(signal).sum()) / noise_sd)


def _measure(ob: Observation, body: Phantom) -> None:
    """Key slice, RECIST, box, diameters and conspicuity of one observation on its series (body in phase)."""
    s = ob.series
    ob.key_index = s.nearest(ob.shape.centre[2])
    cut = ob.shape.mask(s.grid, s.z_of(ob.key_index))
    if cut is None:
        # Smaller than the slice gap: no slice shows it, so nobody could have annotated it.
        ob.visible = False
        ob.annotated = False
        ob.conspicuity = 0.0
        return
    inside, c0, r0 = cut
    ob.recist = tuple(round(v, 3) for v in measure_recist(inside, c0, r0))
    ob.true_recist = ob.recist
    ob.box = tuple(round(v, 3) for v in box_from_recist(ob.recist))  # type: ignore[assignment]
    ob.diameters = tuple(round(v, 3) for v in recist_diameters(ob.recist))  # type: ignore[assignment]
    ob.conspicuity = conspicuity(body, s.grid, s.kernel, s.noise_sd, ob.shape, s.z_of(ob.key_index))
    ob.visible = ob.conspicuity >= ROSE_K
    if not ob.visible:
        ob.annotated = False


def _shown_on(ob: Observation, host: Observation) -> bool:
    """Whether ob cuts clearly through host's key slice (same study, host's series)."""
    cut = ob.shape.cross_section(host.series.z_of(host.key_index))
    if cut is None:
        return False
    wide = max(cut) / max(ob.shape.semi_axes[0], ob.shape.semi_axes[1])
    return wide >= SHOWN_MIN_SHARE and 2 * max(cut) >= SHOWN_MIN_MM


def _leave_out(
    study: StudyPlan, body: Phantom, rng: np.random.Generator, missed_off_key: float | None = None
) -> None:
    """Drop observations from DL_info.csv; a dropped one shown on a key slice keeps that slice's lesion in."""
    # One shown on no key slice is dropped at UNANNOTATED_HIDDEN, or at `missed_off_key` when given.
    off_key = UNANNOTATED_HIDDEN if missed_off_key is None else missed_off_key
    visible = [ob for ob in study.observations if ob.visible]
    kept: set[int] = set()  # ids of observations whose key slice shows a dropped lesion
    for i in rng.permutation(len(visible)):
        ob = visible[int(i)]
        if id(ob) in kept:
            continue
        hosts = [h for h in visible if h is not ob and h.annotated and _shown_on(ob, h)]
        if hosts and rng.random() < UNANNOTATED_SHOWN:
            host = hosts[int(rng.integers(len(hosts)))]
            ob.annotated = False
            kept.add(id(host))
            if ob.series is not host.series:
                # The reviewer meets it on the host's series, so that is where its truth is measured.
                ob.series = host.series
                _measure(ob, body)
        elif not hosts and rng.random() < off_key:
            ob.annotated = False
    if visible and not any(ob.annotated for ob in visible):
        max(visible, key=lambda o: o.shape.semi_axes[0]).annotated = True


def _measure_study(
    plan: PatientPlan, study: StudyPlan, rng: np.random.Generator, missed_off_key: float | None = None
) -> None:
    """Key slice, RECIST, box and context range of each observation; stored slices of each series."""
    # The body as this study scanned it, in its contrast phase: what the reader saw on the key slices.
    body = (study.phantom or plan.phantom).with_phase(study.phase)
    for ob in study.observations:
        _measure(ob, body)
    _leave_out(study, body, rng, missed_off_key)
    windows: dict[str, tuple[float, float]] = {}
    for ob in study.observations:
        if ob.annotated:
            ob.series.stored.update(
                range(ob.series.context(ob.key_index)[0], ob.series.context(ob.key_index)[1] + 1)
            )
            if ob.file_name not in windows:
                windows[ob.file_name] = _dicom_window(rng, ob.lesion.lesion_type)
    if missed_off_key is not None:
        for ob in study.observations:
            if ob.visible and not ob.annotated:
                _onto_stored_series(ob, study, body)
    for ob in study.observations:
        ob.dicom_window = windows.get(ob.file_name) or _dicom_window(rng, ob.lesion.lesion_type)


def _shown_stored(ob: Observation, s: SeriesPlan) -> int:
    """How many stored slices of series s cut through the observation's lesion."""
    return sum(1 for k in s.stored if ob.shape.cross_section(s.z_of(k)) is not None)


def _onto_stored_series(ob: Observation, study: StudyPlan, body: Phantom) -> None:
    """Measure a left-out lesion that no stored slice of its series shows on the series showing it most."""
    # The sub-volume model: a reviewer meets an unmarked lesion in whichever stored sub-volume shows it.
    if _shown_stored(ob, ob.series) > 0:
        return
    best = max(study.series, key=lambda s: _shown_stored(ob, s))
    if _shown_stored(ob, best) > 0:
        ob.series = best
        _measure(ob, body)


def _make_noisy(ob: Observation, rng: np.random.Generator) -> None:
    """Move a row's RECIST off its lesion, the kind of error a manual check flags as noisy."""
    long_px = max(ob.diameters[0], 8.0)
    size = ob.series.size
    for _ in range(20):
        ang = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(1.5, 2.5) * long_px
        dx, dy = dist * math.cos(ang), dist * math.sin(ang)
        moved = tuple(round(v + (dx if i % 2 == 0 else dy), 3) for i, v in enumerate(ob.recist))
        if all(2.0 <= v <= size - 3.0 for v in moved):
            ob.recist = moved
            ob.box = tuple(round(v, 3) for v in box_from_recist(moved))  # type: ignore[assignment]
            ob.noisy = {"kind": "recist_off_lesion", "offset_px": [round(dx, 3), round(dy, 3)]}
            return


def _normalized_location(plan: PatientPlan, ob: Observation) -> tuple[float, float, float]:
    """Lesion centre relative to the body's extent in x and y at its height, and z along the whole body."""
    x, y, z = ob.shape.centre
    body = ob.phantom or plan.phantom
    xmin, xmax, ymin, ymax = body.body_extent(z)
    ztop, zbottom = body.z_range_mm()
    return (
        round((x - xmin) / (xmax - xmin), 5),
        round((y - ymin) / (ymax - ymin), 5),
        round((z - ztop) / (zbottom - ztop), 5),
    )


def _record(plan: PatientPlan, ob: Observation) -> LesionRecord:
    """The DL_info.csv row of an annotated observation."""
    s = ob.series
    recist = ob.recist
    return LesionRecord(
        file_name=ob.file_name,
        patient_index=plan.index,
        study_index=ob.study,
        series_id=s.series_id,
        key_slice_index=ob.key_index,
        # The observation is in the 0-based pixel frame; DL_info.csv counts from 1, as the real file does.
        measurement_coordinates=csv_coordinates(recist),  # type: ignore[arg-type]
        bounding_box=csv_coordinates(ob.box),  # type: ignore[arg-type]
        lesion_diameters_px=ob.diameters,
        normalized_location=_normalized_location(plan, ob),
        coarse_lesion_type=-1 if plan.split == 1 else ob.lesion.lesion_type,
        possibly_noisy=1 if ob.noisy else 0,
        slice_range=s.context(ob.key_index),
        spacing_mm=(s.spacing_mm, s.spacing_mm, s.interval_mm),
        image_size=(s.size, s.size),
        dicom_window=ob.dicom_window,
        patient_gender=plan.gender,
        patient_age=plan.age + int(ob.months // 12),
        train_val_test=plan.split,
    )


def _r3(values: Any) -> list[float]:
    """Floats rounded for the JSON file."""
    return [round(float(v), 3) for v in values]


def _truth(
    plans: list[PatientPlan], seed: int, size: int, missed_off_key: float | None = None
) -> dict[str, Any]:
    """The synth_truth.json document."""
    lesions_out: list[dict[str, Any]] = []
    unannotated: list[dict[str, Any]] = []
    patients_out: list[dict[str, Any]] = []
    for plan in plans:
        patients_out.append(
            {
                "patient_index": plan.index,
                "gender": plan.gender,
                "age": plan.age,
                "split": plan.split,
                "body_scale": round(plan.phantom.scale, 4),
                "z_scale": round(plan.phantom.z_scale, 4),
                "studies": [
                    {
                        "study_index": st.index,
                        "months_after_first": round(st.months, 2),
                        "protocol": st.protocol,
                        "contrast_phase": st.phase,
                        # Follow-up mode only: the body's in-plane scale in this study.
                        **({"body_scale": round(st.phantom.scale, 4)} if st.phantom is not None else {}),
                        "series": [
                            {
                                "series_id": s.series_id,
                                "folder": s.folder,
                                "slice_interval_mm": s.interval_mm,
                                "pixel_spacing_mm": s.spacing_mm,
                                "n_slices_in_volume": s.n_slices,
                                "z_first_mm": round(s.z_first, 3),
                                "body_origin_px": _r3(s.centre_px),
                                "stored_slices": _runs(sorted(s.stored)),
                                "kernel": s.kernel,
                                "noise_sd_hu": round(s.noise_sd, 2),
                                "artefacts": s.artefacts,
                            }
                            for s in st.series
                            if s.stored
                        ],
                    }
                    for st in plan.studies
                ],
            }
        )
        for les in plan.lesions:
            entry: dict[str, Any] = {
                "lesion_id": f"{plan.index:06d}-L{les.index:02d}",
                "patient_index": plan.index,
                "type": les.lesion_type,
                "type_name": LESION_TYPES[les.lesion_type],
                "site": les.site,
                "host_tissue": les.host,
                "centre_mm": _r3(les.centre),
                "semi_axes_mm": _r3(les.semi_axes),
                "in_plane_angle_deg": round(math.degrees(les.angle), 2),
                "hu": round(les.hu, 1),
                "kind": les.kind,
                "growth_per_year": round(les.growth_per_year, 3),
                # Sub-volume model only: the lesion it was placed near in z.
                **({"placed_near": f"{plan.index:06d}-L{les.near:02d}"} if les.near else {}),
                "studies": [],
            }
            for st in plan.studies:
                for ob in st.observations:
                    if ob.lesion is not les:
                        continue
                    s = ob.series
                    col, row = s.grid.to_px(ob.shape.centre[0], ob.shape.centre[1])
                    visible_keys = _visible_key_slices(st, ob)
                    item = {
                        "study_index": st.index,
                        "series_id": s.series_id,
                        "scale": round(ob.shape.semi_axes[0] / les.semi_axes[0], 4),
                        "semi_axes_mm": _r3(ob.shape.semi_axes),
                        "hu": round(ob.shape.hu, 1),
                        "centre_hu": round(ob.shape.centre_hu(s.z_of(ob.key_index)), 1),
                        "centre_px": _r3((col, row)),
                        "key_slice_index": ob.key_index,
                        "file_name": ob.file_name,
                        "in_csv": ob.annotated,
                        "visible": ob.visible,
                        "conspicuity": round(ob.conspicuity, 1),
                        "key_slice_stored": ob.key_index in s.stored,
                        "recist": _r3(ob.true_recist) if ob.visible else None,
                        "box": _r3(box_from_recist(ob.true_recist)) if ob.visible else None,
                        "csv_recist": _r3(ob.recist) if ob.annotated else None,
                        "possibly_noisy": ob.noisy,
                        "stored_slices_showing_it": [
                            k for k in sorted(s.stored) if ob.shape.cross_section(s.z_of(k))
                        ],
                        "visible_on_csv_key_slices": [v["file_name"] for v in visible_keys],
                    }
                    entry["studies"].append(item)
                    if not ob.annotated and ob.visible:
                        for v in visible_keys:
                            unannotated.append(
                                {"lesion_id": entry["lesion_id"], "type": les.lesion_type, **v}
                            )
            entry["annotated"] = any(i["in_csv"] for i in entry["studies"])
            lesions_out.append(entry)
    return {
        "synthetic": True,
        "description": TRUTH_DESCRIPTION,
        "generator": {
            "version": GENERATOR_VERSION,
            "seed": seed,
            "size": size,
            "patients": len(plans),
            # Recorded only when given, so that the default model's files stay as they were.
            **({"missed_off_key": missed_off_key} if missed_off_key is not None else {}),
        },
        "patients": patients_out,
        "lesions": lesions_out,
        "unannotated": unannotated,
    }


def _visible_key_slices(study: StudyPlan, ob: Observation) -> list[dict[str, Any]]:
    """CSV key slices of the study's series on which this lesion's cross-section shows, with its box there."""
    out: list[dict[str, Any]] = []
    keys = sorted({o.key_index for o in study.observations if o.annotated and o.series is ob.series})
    for key in keys:
        cut = ob.shape.mask(ob.series.grid, ob.series.z_of(key))
        if cut is None:
            continue
        recist = measure_recist(*cut)
        out.append(
            {
                "file_name": slice_file_name(ob.series.patient, study.index, ob.series.series_id, key),
                "patient_index": ob.series.patient,
                "study_index": study.index,
                "series_id": ob.series.series_id,
                "recist": _r3(recist),
                "box": _r3(box_from_recist(recist)),
            }
        )
    return out


def _runs(indices: list[int]) -> list[list[int]]:
    """Consecutive runs [first, last] of sorted slice indices."""
    runs: list[list[int]] = []
    for k in indices:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return runs


@dataclass(frozen=True)
class _Job:
    """A chunk of slices of one series for one worker."""

    images_dir: str
    folder: str
    phantom: Phantom
    shapes: tuple[LesionShape, ...]
    series: SeriesPlan
    indices: tuple[int, ...]
    seed: int
    phase: str = "portal venous"


def _worker_init() -> None:
    """Keep numpy's large temporaries on the heap in render workers (glibc only)."""
    # With glibc's defaults every 1 MB float32 slice temporary is a fresh mmap whose page faults cost
    # about as much system time as the rendering itself.
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        log.debug("mallopt not available; rendering with the default allocator settings")


def _render_job(job: _Job) -> int:
    """Render and write the slices of a job; returns how many were written."""
    folder = Path(job.images_dir) / job.folder
    body = job.phantom.with_phase(job.phase)
    for k in job.indices:
        hu = render_slice(body, job.series, job.shapes, k, job.seed)
        write_hu_png(folder / f"{k:03d}.png", np.rint(hu).astype(np.int16), compress_level=1)
    return len(job.indices)


def render_slice(body: Phantom, s: SeriesPlan, shapes: tuple[LesionShape, ...], index: int, seed: int) -> F32:
    """Slice `index` of a series as generate_dataset writes it (body already in the study's phase), in HU."""
    rng = np.random.default_rng([seed, s.patient, s.study, s.series_id, index])
    hu, _ = body.render(
        s.z_of(index), s.grid, shapes, rng=rng, noise_sd=s.noise_sd, kernel=s.kernel, artefacts=s.artefacts
    )
    return hu


def _jobs(plans: list[PatientPlan], images_dir: Path, seed: int, chunk: int = 24) -> Iterator[_Job]:
    """Chunks of slices to render, series by series."""
    for plan in plans:
        for st in plan.studies:
            shapes = tuple(ob.shape for ob in st.observations)
            for s in st.series:
                idx = sorted(s.stored)
                for i in range(0, len(idx), chunk):
                    yield _Job(
                        str(images_dir),
                        s.folder,
                        st.phantom or plan.phantom,
                        shapes,
                        s,
                        tuple(idx[i : i + chunk]),
                        seed,
                        st.phase,
                    )


@dataclass
class DatasetPlan:
    """All patients drawn for one run and the annotated observations in CSV order."""

    plans: list[PatientPlan]
    rows: list[tuple[PatientPlan, Observation]]
    missed_off_key: float | None = None

    def records(self) -> list[LesionRecord]:
        """The DL_info.csv rows."""
        return [_record(plan, ob) for plan, ob in self.rows]


def plan_dataset(
    *,
    patients: int,
    seed: int = 0,
    size: int = 512,
    max_studies: int | None = None,
    max_lesions: int | None = None,
    followup: bool = False,
    context_mm: float = CONTEXT_MM,
    missed_off_key: float | None = None,
) -> DatasetPlan:
    """Draw every patient, measure every lesion and pick the noisy rows; renders no slices."""
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    if size not in (512, 768, 1024):
        raise ValueError(f"size must be 512, 768 or 1024, got {size}")
    for name, value in (("max_studies", max_studies), ("max_lesions", max_lesions)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if not 1.0 <= context_mm <= CONTEXT_MM:
        raise ValueError(f"context_mm must be between 1 and {CONTEXT_MM:g} mm, got {context_mm:g}")
    if missed_off_key is not None and not 0.0 <= missed_off_key <= 1.0:
        raise ValueError(f"missed_off_key must be between 0 and 1, got {missed_off_key:g}")
    splits = patient_splits(patients, seed)
    plans = [
        plan_patient(
            p,
            seed=seed,
            size=size,
            split=splits[p],
            max_studies=max_studies,
            max_lesions=max_lesions,
            followup=followup,
            context_mm=context_mm,
            missed_off_key=missed_off_key,
        )
        for p in range(1, patients + 1)
    ]
    rows = [(plan, ob) for plan in plans for st in plan.studies for ob in st.observations if ob.annotated]
    rows.sort(
        key=lambda po: (po[0].index, po[1].study, po[1].series.series_id, po[1].key_index, po[1].lesion.index)
    )
    noisy_rng = np.random.default_rng([seed, 404])
    n_noisy = int(round(NOISY_RATE * len(rows)))
    if n_noisy == 0 and len(rows) >= 30:
        n_noisy = 1
    for i in sorted(noisy_rng.choice(len(rows), size=n_noisy, replace=False).tolist()) if n_noisy else []:
        _make_noisy(rows[i][1], noisy_rng)
    return DatasetPlan(plans, rows, missed_off_key)


def generate_dataset(
    out_dir: Path,
    *,
    patients: int,
    seed: int = 0,
    size: int = 512,
    progress: bool = True,
    workers: int | None = None,
    max_studies: int | None = None,
    max_lesions: int | None = None,
    followup: bool = False,
    context_mm: float = CONTEXT_MM,
    missed_off_key: float | None = None,
) -> SynthSummary:
    """Write a synthetic DeepLesion dataset (DL_info.csv, Images_png/, synth_truth.json) into `out_dir`."""
    # missed_off_key: the sub-volume model of missed lesions (docs/synthetic-data.md); None = the default.
    start = time.perf_counter()
    plan = plan_dataset(
        patients=patients,
        seed=seed,
        size=size,
        max_studies=max_studies,
        max_lesions=max_lesions,
        followup=followup,
        context_mm=context_mm,
        missed_off_key=missed_off_key,
    )
    plans, rows = plan.plans, plan.rows
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_dl_info(out / "DL_info.csv", plan.records())
    (out / "synth_truth.json").write_text(
        json.dumps(_truth(plans, seed, size, missed_off_key), indent=1) + "\n", encoding="utf-8"
    )
    images = out / IMAGES_DIR
    jobs = list(_jobs(plans, images, seed))
    total = sum(len(j.indices) for j in jobs)
    n_workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    written = _run_jobs(jobs, total, n_workers, progress, patients=len(plans))
    summary = SynthSummary(
        patients=patients,
        studies=sum(1 for p in plans for st in p.studies if any(o.annotated for o in st.observations)),
        series=sum(1 for p in plans for st in p.studies for s in st.series if s.stored),
        key_slices=len({ob.file_name for _, ob in rows}),
        lesions_annotated=len(rows),
        lesions_unannotated=sum(
            1 for p in plans for st in p.studies for o in st.observations if not o.annotated
        ),
        slices_written=written,
        seconds=round(time.perf_counter() - start, 2),
        out_dir=str(out),
    )
    log.info("synthetic dataset: %s", summary.describe())
    return summary


def _start_method() -> str | None:
    """Fork when it is safe (fastest: no re-import), forkserver when other threads run, else the default."""
    methods = multiprocessing.get_all_start_methods()
    # Forking a process in which another thread may hold a lock (a server, a logging handler) can
    # deadlock the child.
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    if "forkserver" in methods:
        return "forkserver"
    return None


def _run_jobs(jobs: list[_Job], total: int, workers: int, progress: bool, *, patients: int) -> int:
    """Render the jobs in-process or on a process pool, with a progress bar (slices and patients done)."""
    from tqdm import tqdm

    # Jobs come back in order, patient by patient, so a patient is done when its last job is.
    left: dict[int, int] = {}
    for job in jobs:
        left[job.series.patient] = left.get(job.series.patient, 0) + 1
    done = patients - len(left)
    written = 0
    with tqdm(total=total, unit="slice", desc="synth", disable=not progress) as bar:
        bar.set_postfix_str(f"patients {done}/{patients}", refresh=False)

        def finished(job: _Job, n: int) -> None:
            nonlocal written, done
            written += n
            left[job.series.patient] -= 1
            if left[job.series.patient] == 0:
                done += 1
                bar.set_postfix_str(f"patients {done}/{patients}", refresh=False)
            bar.update(n)

        # Small runs (the tests' fast path) are quicker without starting processes.
        if workers <= 1 or total < 120:
            for job in jobs:
                finished(job, _render_job(job))
            return written
        ctx = multiprocessing.get_context(_start_method())
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            for job, n in zip(jobs, pool.map(_render_job, jobs, chunksize=1), strict=True):
                finished(job, n)
    return written


def summary_dict(summary: SynthSummary) -> dict[str, Any]:
    """The summary as a plain dict (for JSON output)."""
    return asdict(summary)
