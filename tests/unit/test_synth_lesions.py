"""Synthetic lesions as varied as DeepLesion's: sizes, types, inner structure, phases, measured outline."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from app.deeplesion.synth import anatomy as an
from app.deeplesion.synth.acquisition import PHASES
from app.deeplesion.synth.anatomy import Phantom
from app.deeplesion.synth.generator import DatasetPlan, plan_dataset
from app.deeplesion.synth.lesions import KINDS, LARGE_MM, TYPE_WEIGHTS, LesionShape, _look, place_lesions
from app.deeplesion.synth.raster import Canvas, Grid

GRID = Grid.centred(200, 0.5, (100.0, 100.0))


@pytest.fixture(scope="module")
def plan() -> DatasetPlan:
    """Twenty patients, planned (lesions placed and measured), not rendered."""
    return plan_dataset(patients=20, seed=5)


def _long_mm(plan: DatasetPlan) -> np.ndarray:
    return np.array([ob.diameters[0] * ob.series.spacing_mm for _, ob in plan.rows if not ob.noisy])


def test_sizes_span_small_to_large_with_a_fifth_over_30_mm(plan: DatasetPlan) -> None:
    long_mm = _long_mm(plan)
    assert len(long_mm) >= 60
    assert 0.12 <= float((long_mm > LARGE_MM).mean()) <= 0.4
    assert 0.05 <= float((long_mm < 10).mean()) <= 0.3
    assert float(long_mm.max()) > 60.0


def test_lesion_types_follow_the_dataset_frequencies(plan: DatasetPlan) -> None:
    counts = Counter(ob.lesion.lesion_type for _, ob in plan.rows)
    total = sum(counts.values())
    assert set(counts) == set(TYPE_WEIGHTS)
    for t, w in TYPE_WEIGHTS.items():
        assert abs(counts[t] / total - w) < 0.1, (t, counts[t] / total, w)


def test_many_kinds_appear_and_each_is_one_its_type_allows(plan: DatasetPlan) -> None:
    kinds = {(ob.lesion.lesion_type, ob.lesion.kind) for _, ob in plan.rows}
    for t, k in kinds:
        assert k in {name for name, _, _ in KINDS[t]}
    names = {k for _, k in kinds}
    assert {"necrotic", "spiculated", "metastasis", "solid"} <= names
    assert len(names) >= 8


def _paint(shape: LesionShape, background: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    cv = Canvas(GRID, background, with_labels=True)
    cv.edge = 1.3 * GRID.spacing
    shape.paint(cv, 0.0, 1.0, 1.0)
    assert cv.labels is not None
    return cv.hu, cv.labels


def _shape(**kw: object) -> LesionShape:
    base: dict[str, object] = {
        "centre": (0.0, 0.0, 0.0),
        "semi_axes": (20.0, 15.0, 15.0),
        "angle": 0.4,
        "hu": 50.0,
        "texture_hu": 0.0,
        "texture_k": (0.5, 0.5, 0.3, 0.0),
        "edge_mm": 1.0,
    }
    base.update(kw)
    return LesionShape(**base)  # type: ignore[arg-type]


def _at(x: float, y: float) -> tuple[int, int]:
    col, row = GRID.to_px(x, y)
    return int(round(row)), int(round(col))


def test_necrotic_centre_rim_enhancement_and_ground_glass_have_their_hu() -> None:
    necrotic = _shape(kind="necrotic", core_hu=15.0, core_frac=0.5)
    hu, _ = _paint(necrotic, background=-100.0)
    assert necrotic.centre_hu(0.0) == 15.0
    assert hu[_at(0, 0)] == pytest.approx(15.0, abs=1)
    assert hu[_at(15 * math.cos(0.4), 15 * math.sin(0.4))] == pytest.approx(50.0, abs=3)
    rim = _shape(kind="rim", core_hu=15.0, core_frac=0.6, rim_hu=110.0, rim_mm=3.0)
    hu, _ = _paint(rim, background=-100.0)
    r_in = 18.5
    assert hu[_at(r_in * math.cos(0.4), r_in * math.sin(0.4))] > 90.0
    assert hu[_at(0, 0)] < 25.0
    ggo = _shape(kind="ground glass", hu=-550.0)
    hu, _ = _paint(ggo, background=-850.0)
    assert -750.0 < hu[_at(0, 0)] < -300.0


def test_spicules_reach_beyond_the_measured_outline() -> None:
    shape = _shape(semi_axes=(8.0, 8.0, 8.0), spicules=(0.0, 1.5, 3.0, 4.5), kind="spiculated")
    hu, labels = _paint(shape, background=-850.0)
    inside, c0, r0 = shape.mask(GRID, 0.0) or (None, 0, 0)
    assert inside is not None
    outline = np.zeros_like(labels, dtype=bool)
    outline[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]] = inside
    strands = (hu > -700.0) & ~outline
    assert strands.sum() > 20  # the strands are drawn...
    assert (labels == an.LESION).sum() == pytest.approx(outline.sum(), rel=0.05)  # ...but not measured


def test_lobulated_outline_is_the_measured_outline() -> None:
    shape = _shape(kind="conglomerate", lobes=(0.12, 5.0, 0.7), hetero_hu=20.0)
    _, labels = _paint(shape, background=-100.0)
    inside, c0, r0 = shape.mask(GRID, 0.0) or (None, 0, 0)
    assert inside is not None
    mask = np.zeros_like(labels, dtype=bool)
    mask[r0 : r0 + inside.shape[0], c0 : c0 + inside.shape[1]] = inside
    painted = labels == an.LESION
    iou = (mask & painted).sum() / (mask | painted).sum()
    assert iou > 0.97
    # Lobulation makes it differ from the plain ellipse.
    plain = _shape()
    p_inside, pc0, pr0 = plain.mask(GRID, 0.0) or (None, 0, 0)
    assert p_inside is not None
    p_mask = np.zeros_like(mask)
    p_mask[pr0 : pr0 + p_inside.shape[0], pc0 : pc0 + p_inside.shape[1]] = p_inside
    assert (p_mask ^ mask).sum() > 100


def test_liver_lesions_change_with_the_phase_as_their_kind_does() -> None:
    ph = Phantom.random(np.random.default_rng(4), "M")
    liver = {p: ph.with_phase(p).liver_hu for p in PHASES}
    rng = np.random.default_rng(0)
    for _ in range(10):
        hyper = _look(4, "hypervascular", an.LIVER, ph, 20.0, rng)
        solid = dict(zip(PHASES, hyper.solid, strict=True))
        assert solid["arterial"] > liver["arterial"] + 30
        assert solid["portal venous"] < liver["portal venous"]
        meta = _look(4, "metastasis", an.LIVER, ph, 20.0, rng)
        solid = dict(zip(PHASES, meta.solid, strict=True))
        assert liver["portal venous"] - 65 <= solid["portal venous"] <= liver["portal venous"] - 20
        cyst = _look(4, "cyst", an.LIVER, ph, 20.0, rng)
        assert all(0 <= v <= 20 for v in cyst.solid)
    lytic = _look(1, "lytic", an.BONE, ph, 20.0, rng)
    sclerotic = _look(1, "sclerotic", an.BONE, ph, 20.0, rng)
    assert max(lytic.solid) < 100 and min(sclerotic.solid) > 600


def test_placement_is_deterministic_and_keeps_lesions_in_their_organs() -> None:
    ph = Phantom.random(np.random.default_rng(8), "F")
    a = place_lesions(ph, np.random.default_rng(3), 6)
    b = place_lesions(ph, np.random.default_rng(3), 6)
    assert a == b and len(a) == 6
    grid = Grid.centred(256, 1.6, (128.0, 128.0))
    for les in a:
        _, labels = ph.render(les.centre[2], grid, with_labels=True)
        assert labels is not None
        row, col = (int(round(v)) for v in grid.to_px(les.centre[0], les.centre[1])[::-1])
        assert an.LABEL_NAMES[int(labels[row, col])] == les.host
