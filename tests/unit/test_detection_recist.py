"""RECIST proposals: segmented long and short axis of the lesion in a box, box fallback, runtime plumbing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from app.deeplesion.geometry import box_from_recist, recist_diameters, validate_recist
from app.deeplesion.store import SliceStore
from app.detection.decode import Detection
from app.detection.recist import SEGMENTED_PER_SLICE, box_recist, propose_recist, with_recist
from app.detection.runtime import Detector
from app.detection.testing import build_tiny_model

SIZE = 256


def ellipse_slice(
    a: float, b: float, angle_deg: float, *, centre: tuple[float, float] = (128.0, 120.0), seed: int = 0
) -> tuple[np.ndarray, tuple[float, ...]]:
    """A noisy 0 HU slice with a 60 HU ellipse (soft 1 px edge) and its true RECIST (its two axes)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    t = math.radians(angle_deg)
    u = (xx - centre[0]) * math.cos(t) + (yy - centre[1]) * math.sin(t)
    v = -(xx - centre[0]) * math.sin(t) + (yy - centre[1]) * math.cos(t)
    dist = (1.0 - np.sqrt((u / a) ** 2 + (v / b) ** 2)) * min(a, b)
    hu = 60.0 * np.clip(dist + 0.5, 0.0, 1.0) + rng.normal(0.0, 12.0, (SIZE, SIZE))
    cx, cy = centre
    ca, sa = math.cos(t), math.sin(t)
    truth = (
        cx - a * ca,
        cy - a * sa,
        cx + a * ca,
        cy + a * sa,
        cx + b * sa,
        cy - b * ca,
        cx - b * sa,
        cy + b * ca,
    )
    return hu.astype(np.float32), truth


@pytest.mark.parametrize(("a", "b", "angle"), [(20.0, 12.0, 30.0), (9.0, 6.0, 90.0), (35.0, 30.0, -50.0)])
def test_proposal_measures_the_lesion_within_a_pixel_on_its_true_box(
    a: float, b: float, angle: float
) -> None:
    hu, truth = ellipse_slice(a, b, angle)
    rec = propose_recist(hu, box_from_recist(truth))
    long_px, short_px = recist_diameters(rec)
    assert long_px == pytest.approx(2 * a, abs=1.5)
    assert short_px == pytest.approx(2 * b, abs=1.5)
    validate_recist(rec, (SIZE, SIZE))  # inside the image, axes perpendicular


def test_proposal_beats_the_box_when_the_detector_box_is_off() -> None:
    hu, truth = ellipse_slice(20.0, 12.0, 0.0)
    x1, y1, x2, y2 = box_from_recist(truth)
    # A detector box shifted by 3 px and 20% too large, as a hit (IoU >= 0.5) may be.
    grow = 0.1 * (x2 - x1)
    box = (x1 - grow + 3, y1 - grow + 3, x2 + grow + 3, y2 + grow + 3)
    long_px = recist_diameters(propose_recist(hu, box))[0]
    box_long = recist_diameters(box_recist(box))[0]
    assert abs(long_px - 40.0) <= 2.0 < abs(box_long - 40.0)


def test_a_bridge_to_touching_tissue_of_the_same_hu_does_not_leak() -> None:
    hu, truth = ellipse_slice(15.0, 10.0, 0.0)
    # An organ of the lesion's HU right of it, joined by a 2 px bridge.
    hu[100:140, 150:230] += 60.0
    hu[119:121, 140:152] += 60.0
    long_px = recist_diameters(propose_recist(hu, box_from_recist(truth)))[0]
    assert long_px == pytest.approx(30.0, abs=1.5)


def test_no_contrast_falls_back_to_the_box_axes() -> None:
    flat = np.zeros((SIZE, SIZE), dtype=np.float32)
    box = (40.0, 50.0, 90.0, 80.0)
    rec = propose_recist(flat, box)
    assert rec == box_recist(box)
    # Along the unpadded sides (5 px padding), through the centre.
    assert rec == (45.0, 65.0, 85.0, 65.0, 65.0, 55.0, 65.0, 75.0)


def test_every_detection_gets_a_proposal_and_only_the_best_are_segmented() -> None:
    hu, truth = ellipse_slice(20.0, 12.0, 30.0)
    box = box_from_recist(truth)
    dets = [Detection(box, 0.9 - i * 0.01) for i in range(SEGMENTED_PER_SLICE + 2)]
    out = with_recist(dets, hu)
    assert [d.box for d in out] == [d.box for d in dets] and [d.score for d in out] == [d.score for d in dets]
    assert all(d.recist == propose_recist(hu, box) for d in out[:SEGMENTED_PER_SLICE])
    assert all(d.recist == box_recist(box) for d in out[SEGMENTED_PER_SLICE:])


def test_detector_predict_returns_a_proposal_measured_on_the_key_slice(tmp_path: Path) -> None:
    hu, truth = ellipse_slice(20.0, 12.0, 30.0, centre=(120.0, 135.0))
    box = box_from_recist(truth)
    store = SliceStore(tmp_path / "data")
    for index in (9, 10, 11):
        # The neighbours differ, so a proposal measured on the wrong slice would differ too.
        store.write_hu(f"000001_01_01_{index:03d}.png", (hu if index == 10 else hu * 0).astype(np.int16))
    rows = np.array([[*box, 0.9]], dtype=np.float32)
    det = Detector.load(build_tiny_model(tmp_path / "m.onnx", rows=rows))
    found = det.predict("000001_01_01_010.png", store, spacing_mm=(0.8, 0.8, 2.0))
    assert len(found) == 1 and found[0].recist is not None
    assert recist_diameters(found[0].recist)[0] == pytest.approx(40.0, abs=1.5)
    assert found[0].as_dict()["recist"] == [round(v, 2) for v in found[0].recist]


def test_the_cluster_encoding_carries_the_proposals_back_unchanged() -> None:
    from app.detection.cluster import decode_detections, encode_detections

    dets = (
        Detection((1.5, 2.25, 30.0, 40.125), 0.9, (3.0, 20.0, 28.5, 21.0, 15.0, 5.0, 15.25, 36.0)),
        Detection((5.0, 5.0, 20.0, 20.0), 0.1 + 0.2),
    )
    assert decode_detections(encode_detections(dets)) == dets


def lung_nodule(
    a: float,
    b: float,
    *,
    core: float = 0.0,
    halo_hu: float = 30.0,
    spicules: int = 0,
    base: float = 1.0,
    seed: int = 1,
) -> tuple[np.ndarray, tuple[float, ...]]:
    """A noisy -850 HU lung slice with a nodule (halo and core, or strands) and its true RECIST."""
    # The truth leaves the strands out, as a reader measuring the nodule does.
    rng = np.random.default_rng(seed)
    cx, cy = 128.0, 120.0
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    r = np.sqrt(((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2)
    hu = np.full((SIZE, SIZE), -850.0)
    hu = np.where(r <= 1.0, halo_hu, hu)
    if core:
        hu = np.where(r <= core, 30.0, hu)
    for k in range(spicules):
        theta = 2 * math.pi * (k + 0.3) / spicules
        # From inside the edge to 8 px beyond it, `base` px either side of its axis there, tapering to 30%
        # of that at its tip (the generator's strands taper so).
        t = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
        s = -(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)
        edge = 1.0 / math.hypot(math.cos(theta) / a, math.sin(theta) / b)
        half = base * (1.0 - 0.7 * np.clip((t - 0.8 * edge) / (0.2 * edge + 8.0), 0.0, 1.0))
        hu = np.where((np.abs(s) <= half) & (t >= 0.8 * edge) & (t <= edge + 8.0), 30.0, hu)
    hu = hu + rng.normal(0.0, 25.0, (SIZE, SIZE))
    truth = (cx - a, cy, cx + a, cy, cx, cy - b, cx, cy + b)
    return hu.astype(np.float32), truth


@pytest.mark.parametrize("halo_hu", [-650.0, -450.0])
def test_a_part_solid_nodule_is_measured_to_its_ground_glass_edge_not_its_core(halo_hu: float) -> None:
    hu, truth = lung_nodule(14.0, 10.0, core=0.4, halo_hu=halo_hu)
    x1, y1, x2, y2 = box_from_recist(truth)
    assert recist_diameters(propose_recist(hu, (x1, y1, x2, y2)))[0] == pytest.approx(28.0, abs=1.5)
    # A detector box that stops 2 px short of the faint edge on every side still finds it.
    short = (x1 + 2, y1 + 2, x2 - 2, y2 - 2)
    assert recist_diameters(propose_recist(hu, short))[0] == pytest.approx(28.0, abs=2.0)


def test_a_solid_nodule_in_the_lung_is_not_grown_beyond_its_edge() -> None:
    hu, truth = lung_nodule(14.0, 10.0)
    assert recist_diameters(propose_recist(hu, box_from_recist(truth)))[0] == pytest.approx(28.0, abs=1.5)


@pytest.mark.parametrize("base", [1.0, 3.0])
def test_the_strands_of_a_spiculated_nodule_do_not_count_in_its_long_axis(base: float) -> None:
    # Strands 6 px wide where they leave the nodule: an opening by a square (whose corners reach further
    # than its radius) kept their bases, 3 px too long; a disk cuts them.
    hu, truth = lung_nodule(12.0, 9.0, spicules=7, base=base)
    assert recist_diameters(propose_recist(hu, box_from_recist(truth)))[0] == pytest.approx(24.0, abs=1.5)


def test_a_necrotic_lesion_whose_core_matches_its_surroundings_is_measured_to_its_rim() -> None:
    # A node with a 55 HU rim round a necrotic core of about the surroundings' HU: the centre shows no
    # contrast, so only the band inside the edge tells the lesion from its surroundings.
    a, b, angle = 18.0, 12.0, 35.0
    hu, truth = ellipse_slice(a, b, angle)
    t = math.radians(angle)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    u = (xx - 128.0) * math.cos(t) + (yy - 120.0) * math.sin(t)
    v = -(xx - 128.0) * math.sin(t) + (yy - 120.0) * math.cos(t)
    core = (u / a) ** 2 + (v / b) ** 2 <= 0.55**2
    hu = np.where(core, hu - 55.0, hu - 5.0).astype(np.float32)
    long_px, short_px = recist_diameters(propose_recist(hu, box_from_recist(truth)))
    assert long_px == pytest.approx(2 * a, abs=1.5)
    assert short_px == pytest.approx(2 * b, abs=1.5)


@pytest.mark.parametrize("angle", [0.0, 45.0])
def test_tissue_of_like_hu_touching_the_lesion_broadly_adds_at_most_a_few_pixels(angle: float) -> None:
    # An opening cannot cut a broad contact, so only the reach allowed beyond the box bounds the leak; a
    # lesion at 45 degrees still reaches its box's corners and is measured tip to tip.
    hu, truth = ellipse_slice(20.0, 8.0, angle)
    x1, y1, x2, y2 = box_from_recist(truth)
    # An organ of the lesion's HU from the lesion's rightmost pixel on (the box holds 5 px of padding).
    hu[60:180, round(x2 - 5.0) - 1 :] += 60.0
    long_px = recist_diameters(propose_recist(hu, (x1, y1, x2, y2)))[0]
    assert 40.0 - 1.5 <= long_px <= 40.0 + 4.0


def test_a_bright_patch_inside_a_large_mass_is_not_taken_for_the_mass() -> None:
    # A heterogeneous mass: the centre's HU picks out a patch half its size, which is a part of the lesion,
    # so the box's axes (here the mass's own) are the better proposal.
    hu, truth = ellipse_slice(20.0, 18.0, 0.0)
    hu *= 0.6  # a 36 HU mass: its edge too faint for the part-solid rule
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    hu = np.where((xx - 128.0) ** 2 + (yy - 120.0) ** 2 <= 10.0**2, hu + 140.0, hu).astype(np.float32)
    long_px = recist_diameters(propose_recist(hu, box_from_recist(truth)))[0]
    assert long_px == pytest.approx(40.0, abs=1.5)
