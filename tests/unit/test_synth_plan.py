"""Synthetic dataset planning, no rendering: CSV rules, RECIST, lesion sites, splits, follow-ups."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from app.deeplesion.csvio import read_dl_info
from app.deeplesion.geometry import axes_angle_deg, measure_recist
from app.deeplesion.synth import generate_metadata_only
from app.deeplesion.synth.generator import DatasetPlan, patient_splits, plan_dataset
from app.deeplesion.synth.lesions import SITES
from app.deeplesion.synth.raster import Grid

PATIENTS = 12


@pytest.fixture(scope="module")
def plan() -> DatasetPlan:
    """Twelve patients with follow-up studies, planned and measured but not rendered."""
    return plan_dataset(patients=PATIENTS, seed=31, max_studies=4)


def _dist(ax: float, ay: float, bx: float, by: float) -> float:
    return math.hypot(bx - ax, by - ay)


def test_every_row_obeys_the_recist_box_and_diameter_rules(plan: DatasetPlan) -> None:
    records = plan.records()
    assert len(records) >= PATIENTS
    for r in records:
        c = r.measurement_coordinates
        xs, ys = c[0::2], c[1::2]
        assert r.bounding_box == pytest.approx((min(xs) - 5, min(ys) - 5, max(xs) + 5, max(ys) + 5), abs=2e-3)
        long_px, short_px = _dist(*c[0:4]), _dist(*c[4:8])
        assert r.lesion_diameters_px == pytest.approx((long_px, short_px), abs=2e-3)
        assert 0 < short_px <= long_px + 1e-6
        assert abs(axes_angle_deg(c) - 90.0) < 3.0
        w, h = r.image_size
        assert all(0 <= x <= w for x in xs) and all(0 <= y <= h for y in ys)


def test_key_slice_lies_in_its_slice_range_of_plus_minus_30_mm(plan: DatasetPlan) -> None:
    for r in plan.records():
        first, last = r.slice_range
        assert first <= r.key_slice_index <= last
        dz = r.spacing_mm[2]
        half = round(30 / dz)
        assert first == max(1, r.key_slice_index - half)
        assert last >= first and last - r.key_slice_index <= half


def test_recist_measures_the_lesion_cross_section_on_the_key_slice(plan: DatasetPlan) -> None:
    for _, ob in plan.rows:
        if ob.noisy:
            continue
        s = ob.series
        cut = ob.shape.cross_section(s.z_of(ob.key_index))
        assert cut is not None
        long_mm = ob.diameters[0] * s.spacing_mm
        short_mm = ob.diameters[1] * s.spacing_mm
        # The measured pixel mask can differ from the analytic ellipse by about a pixel on each side, and a
        # lobulated outline (large masses, conglomerate nodes) by its lobulation on each side.
        lobe_mm = ob.shape.lobes[0] * min(cut)
        tol = 2.5 * s.spacing_mm + 2 * lobe_mm
        assert long_mm == pytest.approx(2 * cut[0], abs=tol)
        assert short_mm == pytest.approx(2 * cut[1], abs=tol)
        col, row = s.grid.to_px(ob.shape.centre[0], ob.shape.centre[1])
        mid_x = (ob.recist[0] + ob.recist[2]) / 2
        mid_y = (ob.recist[1] + ob.recist[3]) / 2
        if lobe_mm == 0:
            assert _dist(mid_x, mid_y, col, row) < 1.5
        else:
            # A lobulated outline's longest chord need not pass through the centre, but runs through it.
            measured = ob.shape.mask(s.grid, s.z_of(ob.key_index))
            assert measured is not None
            inside, c0, r0 = measured
            assert inside[round(mid_y) - r0, round(mid_x) - c0]


def test_key_slice_is_the_slice_through_the_largest_cross_section(plan: DatasetPlan) -> None:
    for _, ob in plan.rows:
        s = ob.series
        areas = {}
        for k in range(max(1, ob.key_index - 3), min(s.n_slices, ob.key_index + 3) + 1):
            cut = ob.shape.cross_section(s.z_of(k))
            areas[k] = 0.0 if cut is None else cut[0] * cut[1]
        assert areas[ob.key_index] == max(areas.values())


def test_measure_recist_on_an_axis_aligned_ellipse_mask() -> None:
    yy, xx = np.mgrid[0:40, 0:60]
    inside = ((xx - 30) / 20.5) ** 2 + ((yy - 20) / 8.5) ** 2 <= 1.0
    r = measure_recist(inside, 100, 200)
    long_px, short_px = _dist(*r[0:4]), _dist(*r[4:8])
    assert long_px == pytest.approx(41, abs=1.0)
    assert short_px == pytest.approx(17, abs=1.0)
    assert abs(axes_angle_deg(r) - 90) < 1e-6
    # Long axis horizontal through the centre, offset by the window origin.
    assert (r[1] + r[3]) / 2 == pytest.approx(220, abs=0.6)
    assert min(r[0], r[2]) == pytest.approx(109.5, abs=0.6)


def test_lesions_lie_in_the_organ_matching_their_type(plan: DatasetPlan) -> None:
    seen_types = set()
    for p in plan.plans:
        grid = Grid.centred(512, 0.8, (256.0, 256.0))
        for les in p.lesions:
            _, labels = p.phantom.render(les.centre[2], grid, with_labels=True)
            assert labels is not None
            col, row = grid.to_px(les.centre[0], les.centre[1])
            label = int(labels[int(round(row)), int(round(col))])
            assert label in SITES[les.lesion_type].hosts, (les.site, label)
            seen_types.add(les.lesion_type)
    assert len(seen_types) >= 4


def test_lesion_sizes_stay_within_5_to_80_mm_and_skew_small(plan: DatasetPlan) -> None:
    diameters = [2 * les.semi_axes[0] for p in plan.plans for les in p.lesions]
    assert all(5.0 <= d <= 80.0 for d in diameters)
    assert np.median(diameters) < 30.0


def test_follow_up_studies_show_the_same_lesion_at_a_different_size(plan: DatasetPlan) -> None:
    changed = 0
    for p in plan.plans:
        if len(p.studies) < 2:
            continue
        for les in p.lesions:
            sizes = [ob.shape.semi_axes[0] for st in p.studies for ob in st.observations if ob.lesion is les]
            assert len(sizes) == len(p.studies)
            changed += max(sizes) - min(sizes) > 0.05 * min(sizes)
    assert changed > 0


def test_some_lesions_are_deliberately_left_out_of_the_csv(plan: DatasetPlan) -> None:
    observations = [ob for p in plan.plans for st in p.studies for ob in st.observations]
    left_out = [ob for ob in observations if not ob.annotated]
    assert 0.05 < len(left_out) / len(observations) < 0.4
    for p in plan.plans:
        for st in p.studies:
            assert any(ob.annotated for ob in st.observations)


def test_type_is_minus_one_exactly_in_the_train_split(plan: DatasetPlan) -> None:
    for (_, ob), r in zip(plan.rows, plan.records(), strict=True):
        if r.train_val_test == 1:
            assert r.coarse_lesion_type == -1
        else:
            assert r.coarse_lesion_type == ob.lesion.lesion_type


def test_split_is_patient_level_and_never_leaves_val_or_test_empty() -> None:
    for n in (3, 4, 7, 10, 100):
        split = patient_splits(n, seed=n)
        counts = np.bincount(list(split.values()), minlength=4)
        assert set(split) == set(range(1, n + 1))
        assert counts[2] >= 1 and counts[3] >= 1 and counts[1] >= 1
    split = patient_splits(1000, seed=1)
    counts = np.bincount(list(split.values()), minlength=4)
    assert counts[1] == 700 and counts[2] == 150 and counts[3] == 150


def test_rows_of_one_patient_share_one_split(plan: DatasetPlan) -> None:
    by_patient: dict[int, set[int]] = defaultdict(set)
    for r in plan.records():
        by_patient[r.patient_index].add(r.train_val_test)
    assert all(len(v) == 1 for v in by_patient.values())


def test_rows_on_one_key_slice_share_spacing_range_and_window(plan: DatasetPlan) -> None:
    by_file = defaultdict(list)
    for r in plan.records():
        by_file[r.file_name].append(r)
    for rows in by_file.values():
        assert len({(r.slice_range, r.spacing_mm, r.dicom_window, r.image_size) for r in rows}) == 1


def test_noisy_rows_put_the_recist_off_the_lesion() -> None:
    plan = plan_dataset(patients=20, seed=4, max_studies=2)
    noisy = [ob for _, ob in plan.rows if ob.noisy]
    assert noisy, "a run with 30+ rows marks at least one row noisy"
    for ob in noisy:
        mx, my = (ob.recist[0] + ob.recist[2]) / 2, (ob.recist[1] + ob.recist[3]) / 2
        col, row = ob.series.grid.to_px(ob.shape.centre[0], ob.shape.centre[1])
        assert _dist(mx, my, col, row) > 1.2 * ob.diameters[0]
    records = {r.file_name: r for r in plan.records() if r.possibly_noisy}
    assert {ob.file_name for ob in noisy} == set(records)


def test_metadata_only_writes_the_requested_rows_with_valid_records(tmp_path: Path) -> None:
    summary = generate_metadata_only(tmp_path, lesions=3000, seed=2)
    records = read_dl_info(tmp_path / "DL_info.csv")
    assert len(records) == 3000 == summary.lesions_annotated
    assert not (tmp_path / "Images_png").exists()
    intervals = [r.spacing_mm[2] for r in records]
    assert 0.4 < intervals.count(1.0) / len(records) < 0.56
    assert 0.4 < intervals.count(5.0) / len(records) < 0.56
    keys = {r.file_name for r in records}
    assert len(keys) < len(records) < 1.1 * len(keys)
    for r in records[:500]:
        c = r.measurement_coordinates
        xs, ys = c[0::2], c[1::2]
        assert r.bounding_box == pytest.approx((min(xs) - 5, min(ys) - 5, max(xs) + 5, max(ys) + 5), abs=2e-3)
        assert r.slice_range[0] <= r.key_slice_index <= r.slice_range[1]
        assert (r.coarse_lesion_type == -1) == (r.train_val_test == 1)


def test_most_left_out_lesions_show_on_a_stored_slice_a_reviewer_sees() -> None:
    plan = plan_dataset(patients=30, seed=12)
    left_out = [ob for p in plan.plans for st in p.studies for ob in st.observations if not ob.annotated]
    shown = [o for o in left_out if any(o.shape.cross_section(o.series.z_of(k)) for k in o.series.stored)]
    assert len(left_out) >= 5
    assert len(shown) / len(left_out) >= 0.5


def test_every_annotated_lesion_stands_out_of_the_noise_on_its_key_slice(plan: DatasetPlan) -> None:
    from app.deeplesion.synth.generator import ROSE_K

    # A radiologist measures a lesion on the slice where they see it; an isodense one is not marked.
    for _, ob in plan.rows:
        assert ob.visible and ob.conspicuity >= ROSE_K, (ob.file_name, ob.conspicuity)
    faint = [
        ob for p in plan.plans for st in p.studies for ob in st.observations if 0 < ob.conspicuity < ROSE_K
    ]
    assert all(not ob.visible and not ob.annotated for ob in faint)


def test_conspicuity_is_the_rose_snr_of_a_uniform_disc() -> None:
    from dataclasses import replace

    from app.deeplesion.synth.generator import conspicuity

    plan = plan_dataset(patients=1, seed=31, max_studies=1)
    p, ob = plan.rows[0]
    body = p.phantom.with_phase(p.studies[0].phase)
    z = ob.series.z_of(ob.key_index)
    # A disc in the air beside the patient: background -1000 HU everywhere, no texture, rim or core.
    disc = replace(
        ob.shape,
        centre=(260.0, 0.0, z),
        semi_axes=(6.0, 6.0, 6.0),
        hu=-900.0,
        texture_hu=0.0,
        core_frac=0.0,
        rim_mm=0.0,
        lobes=(0.0, 0.0, 0.0),
        spicules=(),
        hetero_hu=0.0,
    )
    grid = Grid(512, 0.8, -300.0, -200.0)
    area_px = math.pi * 6.0 * 6.0 / 0.8**2
    rose = 100.0 * math.sqrt(area_px) / 10.0
    got = conspicuity(body, grid, "standard", 10.0, disc, z)
    # The soft edge and the kernel's blur take a little of the sum of squares, never add to it.
    assert 0.85 * rose < got <= 1.02 * rose
    assert conspicuity(body, grid, "standard", 20.0, disc, z) == pytest.approx(got / 2, rel=1e-6)
    assert conspicuity(body, grid, "standard", 10.0, replace(disc, hu=-1000.0), z) < 0.05 * rose
