"""Phantom confusers and acquisition variety: normal look-alikes of lesions, phases, kernels, artefacts."""

from __future__ import annotations

import numpy as np
import pytest

from app.deeplesion.synth import anatomy as an
from app.deeplesion.synth.acquisition import PHASES, Acquisition, apply_kernel, noise_field
from app.deeplesion.synth.anatomy import Phantom
from app.deeplesion.synth.generator import plan_dataset, render_slice
from app.deeplesion.synth.raster import Grid

GRID = Grid.centred(320, 1.25, (160.0, 150.0))


@pytest.fixture(scope="module", params=[0, 1, 2])
def phantom(request: pytest.FixtureRequest) -> Phantom:
    """Three different random patients."""
    return Phantom.random(np.random.default_rng(200 + request.param), "MF"[request.param % 2])


def _render(ph: Phantom, z_ref: float, phase: str = "portal venous") -> tuple[np.ndarray, np.ndarray]:
    hu, labels = ph.with_phase(phase).render(z_ref * ph.z_scale, GRID, with_labels=True)
    assert labels is not None
    return hu, labels


def _median(hu: np.ndarray, labels: np.ndarray, label: int) -> float:
    sel = labels == label
    assert sel.sum() >= 3, f"{an.LABEL_NAMES[label]} missing"
    return float(np.median(hu[sel]))


def test_every_confuser_appears_where_anatomy_puts_it(phantom: Phantom) -> None:
    expect = {
        200.0: {an.NERVE, an.CSF, an.VESSEL},  # chest: cord in the canal, pulmonary vessels
        310.0: {an.ADRENAL, an.VESSEL},
        360.0: {an.URETER, an.VESSEL, an.BOWEL},  # renal pelvis and calyces
        420.0: {an.URETER, an.BOWEL, an.NERVE},  # cauda equina and lumbar roots
        640.0: {an.VESSEL},  # femoral vessels
    }
    for z_ref, labels_wanted in expect.items():
        _, labels = _render(phantom, z_ref)
        present = set(np.unique(labels).tolist())
        missing = {an.LABEL_NAMES[k] for k in labels_wanted - present}
        assert not missing, f"z {z_ref}: missing {missing}"


def test_normal_nodes_lie_in_fat_of_the_mediastinum_and_abdomen_at_soft_tissue_hu(phantom: Phantom) -> None:
    for z_range in ((60.0, 80.0, 100.0, 120.0, 140.0), (340.0, 380.0, 420.0, 460.0, 500.0, 520.0)):
        node_hu: list[float] = []
        for z_ref in z_range:
            hu, labels = _render(phantom, z_ref)
            node_hu += hu[labels == an.NODE].tolist()
        assert len(node_hu) > 20, z_range
        assert 0.0 <= float(np.median(node_hu)) <= 80.0


def test_confusers_have_the_attenuation_of_their_tissue(phantom: Phantom) -> None:
    hu, labels = _render(phantom, 420.0)
    assert 15.0 <= _median(hu, labels, an.NERVE) <= 55.0
    hu, labels = _render(phantom, 200.0)
    assert -10.0 <= _median(hu, labels, an.CSF) <= 30.0
    hu, labels = _render(phantom, 310.0)
    assert 30.0 <= _median(hu, labels, an.ADRENAL) <= 110.0
    # Bowel in the lower abdomen holds gas somewhere along its course.
    gas = 0
    for z_ref in (380.0, 420.0, 460.0, 500.0):
        hu, labels = _render(phantom, z_ref)
        gas += int(((labels == an.BOWEL) & (hu < -900)).sum())
    assert gas > 20


def test_calcifications_are_small_and_dense(phantom: Phantom) -> None:
    assert len(phantom.calcs) > 0 or len(Phantom.random(np.random.default_rng(9), "M").calcs) > 0
    for x, y, z, r, _ in phantom.calcs[:3]:
        hu, labels = _render(phantom, z)
        col, row = (int(round(v)) for v in GRID.to_px(x * phantom.scale, y * phantom.scale))
        near = (slice(max(0, row - 8), row + 9), slice(max(0, col - 8), col + 9))
        sel = labels[near] == an.CALCIFICATION
        assert sel.sum() > 0
        assert float(hu[near][sel].max()) > 200.0
        # No more than a few millimetres across.
        assert sel.sum() * GRID.spacing**2 <= 4 * (2 * r * phantom.scale + 2 * GRID.spacing) ** 2


def test_femoral_vessels_enhance_with_contrast_and_not_without(phantom: Phantom) -> None:
    pv_hu, labels = _render(phantom, 640.0, "portal venous")
    nc_hu, _ = _render(phantom, 640.0, "non-contrast")
    vessel = labels == an.VESSEL
    assert vessel.sum() > 30
    assert float(np.median(pv_hu[vessel])) > 120.0
    assert 25.0 <= float(np.median(nc_hu[vessel])) <= 60.0


def test_contrast_phases_order_the_aorta_liver_and_urine(phantom: Phantom) -> None:
    marks = phantom.landmarks()
    _, (x, y, z) = marks["aorta"]
    col, row = (int(round(v)) for v in GRID.to_px(x, y))
    aorta = {}
    for phase in PHASES:
        hu, _ = phantom.with_phase(phase).render(z, GRID)
        aorta[phase] = float(np.median(hu[row - 1 : row + 2, col - 1 : col + 2]))
    assert aorta["arterial"] > aorta["portal venous"] > aorta["delayed"] > aorta["non-contrast"]
    assert 30.0 <= aorta["non-contrast"] <= 55.0
    assert 50.0 <= phantom.with_phase("non-contrast").liver_hu <= 70.0
    hu_d, labels = _render(phantom, 360.0, "delayed")
    hu_n, _ = _render(phantom, 360.0, "non-contrast")
    # Excreted contrast fills the collecting system in the delayed phase only.
    uro = labels == an.URETER
    assert float(hu_d[uro].max()) > 300.0 and float(hu_n[uro].max()) < 80.0


def test_kernels_change_edges_and_noise_texture() -> None:
    rng = np.random.default_rng(0)
    step = np.zeros((64, 64), dtype=np.float32)
    step[:, 32:] = 100.0
    sharp, soft = apply_kernel(step.copy(), "sharp"), apply_kernel(step.copy(), "soft")
    assert float(sharp.max()) > 100.0 and float(sharp.min()) < 0.0  # overshoot at the edge
    assert 0.0 < float(soft[10, 31]) < 100.0 and 0.0 < float(soft[10, 32]) < 100.0

    def corr(kernel: str) -> float:
        f = noise_field(rng, (256, 256), 15.0, kernel)
        assert 13.0 < float(f.std()) < 17.0
        return float(np.corrcoef(f[:, :-1].ravel(), f[:, 1:].ravel())[0, 1])

    assert corr("soft") > corr("standard") > corr("sharp")


def test_streak_and_beam_hardening_artefacts_darken_tissue_between_dense_bones(phantom: Phantom) -> None:
    z = 590.0 * phantom.z_scale  # femoral heads
    _, labels = phantom.render(z, GRID, with_labels=True)
    plain, _ = phantom.render(z, GRID, rng=np.random.default_rng(3))
    hit, _ = phantom.render(z, GRID, rng=np.random.default_rng(3), artefacts=1.0)
    diff = hit - plain
    soft_tissue = (labels == an.MUSCLE) | (labels == an.CAVITY_FAT) | (labels == an.BLADDER)
    assert float(diff[soft_tissue].min()) < -15.0
    assert float(np.abs(diff).max()) > 20.0


def test_acquisitions_vary_and_are_drawn_per_patient_deterministically() -> None:
    plan = plan_dataset(patients=12, seed=17, max_studies=2)
    phases = [st.phase for p in plan.plans for st in p.studies]
    series = [s for p in plan.plans for st in p.studies for s in st.series]
    assert set(phases) == set(PHASES)
    assert {s.kernel for s in series} == {"soft", "standard", "sharp"}
    assert max(s.noise_sd for s in series) > 1.8 * min(s.noise_sd for s in series)
    assert 0 < sum(s.artefacts > 0 for s in series) < len(series)
    # A patient's acquisitions depend on the seed and the patient only, not on how many patients there are.
    few = plan_dataset(patients=3, seed=17, max_studies=2)
    acq = [
        (st.phase, [(s.kernel, s.noise_sd, s.artefacts) for s in st.series])
        for p in few.plans
        for st in p.studies
    ]
    assert acq == [
        (st.phase, [(s.kernel, s.noise_sd, s.artefacts) for s in st.series])
        for p in plan.plans[:3]
        for st in p.studies
    ]


def test_acquisition_draw_scales_noise_by_kernel() -> None:
    draws = [Acquisition.random(np.random.default_rng(i), 12.0) for i in range(300)]
    mean = {k: np.mean([d.noise_sd for d in draws if d.kernel == k]) for k in ("soft", "standard", "sharp")}
    assert mean["soft"] < mean["standard"] < mean["sharp"]


def test_no_confuser_is_a_lesion_and_key_slices_show_confusers_outside_the_boxes() -> None:
    plan = plan_dataset(patients=4, seed=23, max_studies=1)
    confuser_px_outside = 0
    for patient, ob in plan.rows:
        assert an.LABEL_NAMES[an.LESION] not in ob.lesion.host
        study = patient.studies[ob.study - 1]
        shapes = tuple(o.shape for o in study.observations)
        body = patient.phantom.with_phase(study.phase)
        _, labels = body.render(ob.series.z_of(ob.key_index), ob.series.grid, shapes, with_labels=True)
        assert labels is not None
        if ob.noisy:
            continue
        r = ob.recist
        col, row = round((r[0] + r[2]) / 2), round((r[1] + r[3]) / 2)
        # The CSV row's lesion is what lies under its RECIST centre, never a confuser.
        assert labels[row, col] == an.LESION, an.LABEL_NAMES[int(labels[row, col])]
        x1, y1, x2, y2 = (int(round(v)) for v in ob.box)
        outside = np.ones_like(labels, dtype=bool)
        outside[max(0, y1) : y2 + 1, max(0, x1) : x2 + 1] = False
        confusers = np.isin(labels, [an.NODE, an.VESSEL, an.BOWEL, an.NERVE, an.CALCIFICATION, an.URETER])
        confuser_px_outside += int((confusers & outside).sum())
        # Same slice rendered the way the dataset writes it differs only by noise and artefacts.
        hu = render_slice(body, ob.series, shapes, ob.key_index, seed=23)
        assert hu.shape == labels.shape
    assert confuser_px_outside > 500


def test_patient_sizes_range_from_slim_to_large() -> None:
    widths = []
    for i in range(25):
        ph = Phantom.random(np.random.default_rng(500 + i), "MF"[i % 2])
        xmin, xmax, _, _ = ph.body_extent(350.0 * ph.z_scale)
        widths.append(xmax - xmin)
    # The widest still fits the largest real field of view (0.98 mm x 512 px) with a margin.
    assert min(widths) >= 240.0 and max(widths) <= 460.0
    assert max(widths) - min(widths) > 80.0
