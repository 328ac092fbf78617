"""The analytic CT phantom: tissues at plausible HU, organs where expected, smooth along z, CT-like noise."""

from __future__ import annotations

import numpy as np
import pytest

from app.deeplesion.synth import anatomy as an
from app.deeplesion.synth.anatomy import Phantom
from app.deeplesion.synth.raster import Grid

GRID = Grid.centred(512, 0.8, (256.0, 240.0))

# Reference ranges from deeplesion.md (portal venous phase), with room for the blurred edges.
LANDMARK_HU = {
    "liver": (100, 130),
    "spleen": (90, 130),
    "right lung": (-900, -700),
    "left lung": (-900, -700),
    "right kidney": (110, 200),
    "aorta": (150, 300),
    "vertebral body": (200, 400),
    "bladder": (0, 20),
    "subcutaneous fat": (-120, -80),
    "abdominal wall muscle": (35, 55),
    "air": (-1010, -990),
}


@pytest.fixture(scope="module", params=[0, 1, 2])
def phantom(request: pytest.FixtureRequest) -> Phantom:
    """Three different random patients."""
    return Phantom.random(np.random.default_rng(100 + request.param), "MF"[request.param % 2])


def test_landmarks_have_their_tissue_label_and_hu(phantom: Phantom) -> None:
    marks = phantom.landmarks()
    assert set(marks) == set(LANDMARK_HU)
    for name, (label, (x, y, z)) in marks.items():
        hu, labels = phantom.render(z, GRID, with_labels=True)
        assert labels is not None
        col, row = (int(round(v)) for v in GRID.to_px(x, y))
        assert labels[row, col] == label, f"{name}: found {an.LABEL_NAMES[int(labels[row, col])]}"
        # A median over a small patch ignores a vessel crossing the exact point.
        value = float(np.median(hu[row - 2 : row + 3, col - 2 : col + 3]))
        lo, hi = LANDMARK_HU[name]
        assert lo <= value <= hi, f"{name}: {value:.0f} HU not in {lo}..{hi}"


def test_tissue_medians_match_reference_values(phantom: Phantom) -> None:
    expected = {an.LIVER: (100, 130), an.LUNG: (-900, -700), an.SUBCUT_FAT: (-120, -80), an.MUSCLE: (35, 55)}
    for z_ref in (160.0, 280.0):
        hu, labels = phantom.render(z_ref * phantom.z_scale, GRID, with_labels=True)
        assert labels is not None
        for label, (lo, hi) in expected.items():
            sel = labels == label
            if sel.sum() > 200:
                assert lo <= float(np.median(hu[sel])) <= hi, an.LABEL_NAMES[label]


def test_body_is_300_to_360_mm_wide_and_200_to_260_mm_deep(phantom: Phantom) -> None:
    for z_ref in (150.0, 350.0):
        xmin, xmax, ymin, ymax = phantom.body_extent(z_ref * phantom.z_scale)
        assert 290 <= xmax - xmin <= 370
        assert 195 <= ymax - ymin <= 265


def test_regions_along_z_hold_their_organs(phantom: Phantom) -> None:
    def present(z_ref: float) -> set[int]:
        _, labels = phantom.render(z_ref * phantom.z_scale, GRID, with_labels=True)
        assert labels is not None
        counts = np.bincount(labels.ravel(), minlength=32)
        return {int(i) for i in np.nonzero(counts > 150)[0]}

    chest = present(170.0)
    assert {an.LUNG, an.HEART, an.BONE, an.VESSEL} <= chest and an.KIDNEY not in chest
    upper_abdomen = present(290.0)
    assert {an.LIVER, an.SPLEEN} <= upper_abdomen
    kidneys = present(370.0)
    assert {an.KIDNEY, an.BOWEL} <= kidneys and an.LUNG not in kidneys
    pelvis = present(595.0)
    assert {an.BLADDER, an.BONE} <= pelvis and an.LIVER not in pelvis


def test_consecutive_slices_change_smoothly_along_z(phantom: Phantom) -> None:
    z = 300.0 * phantom.z_scale
    a, _ = phantom.render(z, GRID)
    b, _ = phantom.render(z + 1.0, GRID)
    far, _ = phantom.render(z + 60.0, GRID)
    near_change = float(np.mean(np.abs(a - b)))
    far_change = float(np.mean(np.abs(a - far)))
    assert near_change < 0.25 * far_change


def test_noise_is_10_to_20_hu_and_correlated_between_neighbours(phantom: Phantom) -> None:
    z = 280.0 * phantom.z_scale
    clean, labels = phantom.render(z, GRID, with_labels=True)
    noisy, _ = phantom.render(z, GRID, rng=np.random.default_rng(5), noise_sd=15.0)
    assert labels is not None
    noise = (noisy - clean)[labels == an.LIVER]
    assert 12.0 < float(noise.std()) < 18.0
    field = noisy - clean
    inner = field[100:400, 100:400]
    corr = np.corrcoef(inner[:, :-1].ravel(), inner[:, 1:].ravel())[0, 1]
    assert 0.3 < corr < 0.9


def test_same_patient_renders_the_same_slice_twice() -> None:
    a = Phantom.random(np.random.default_rng(7), "F")
    b = Phantom.random(np.random.default_rng(7), "F")
    ha, _ = a.render(300.0, GRID, rng=np.random.default_rng(1), noise_sd=12.0)
    hb, _ = b.render(300.0, GRID, rng=np.random.default_rng(1), noise_sd=12.0)
    assert np.array_equal(ha, hb)
