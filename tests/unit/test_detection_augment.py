"""Domain randomisation of training crops: boxes follow the zoom and flip; intensities vary like scanners."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.components import require_component

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(autouse=True)
def _torch() -> None:
    require_component("torch", HAS_TORCH, "pip install -e '.[train]' (torch==2.13.0)")


def _sample(box: tuple[int, int, int, int]) -> object:
    """A 512 px input of soft tissue with one bright square lesion exactly at `box`."""
    from app.detection.preprocess import Transform
    from app.detection.train.loop import Sample, _hu_units

    img = np.full((3, 512, 512), _hu_units(40.0), dtype=np.float16)
    x1, y1, x2, y2 = box
    img[:, y1:y2, x1:x2] = _hu_units(400.0)
    return Sample(
        file_name="x.png",
        image=img,
        boxes=np.array([box], dtype=np.float32),
        transform=Transform(scale_x=1.0, scale_y=1.0, width=512, height=512),
        spacing=(0.8, 0.8, 1.0),
        lesions=[],
        content=(512, 512),
    )


def test_zoomed_and_flipped_crops_keep_the_box_on_the_lesion() -> None:
    from app.detection.train.loop import _hu_units, random_crop

    sample = _sample((200, 240, 260, 280))
    rng = np.random.default_rng(3)
    zooms = set()
    for _ in range(40):
        patch, boxes = random_crop(sample, 192, rng, lesion_prob=1.0, augment=True)  # type: ignore[arg-type]
        assert patch.shape == (3, 192, 192) and patch.dtype == np.float32
        # Where the lesion is now: pixels well above soft tissue even after contrast, offset and noise.
        ys, xs = np.nonzero(patch[1] > (_hu_units(40.0) + _hu_units(400.0)) / 2)
        found = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        np.testing.assert_allclose(found, boxes[0], atol=2.5)
        zooms.add(round(float(boxes[0, 2] - boxes[0, 0]) / 60.0, 2))
    # The zoom is really drawn: lesions of several apparent sizes, beyond and below the original 60 px.
    assert min(zooms) < 0.85 and max(zooms) > 1.2 and 1.0 in zooms


def test_randomise_varies_contrast_and_noise_but_keeps_air_at_the_padding_value() -> None:
    from app.detection.train.loop import _hu_units, randomise

    patch = np.full((3, 64, 64), _hu_units(40.0), dtype=np.float32)
    patch[:, :, :16] = _hu_units(-1024.0)  # air
    patch[:, 20:40, 30:50] = _hu_units(200.0)  # enhancing lesion
    rng = np.random.default_rng(0)
    contrasts, noises = [], []
    for _ in range(60):
        out = randomise(patch, rng)
        assert out.shape == patch.shape and out.dtype == np.float32
        assert out.min() >= _hu_units(-1024.0) - 1e-4
        contrasts.append(float(np.median(out[1, 25:35, 35:45]) - np.median(out[1, 50:60, 40:60])))
        noises.append(float(np.std(out[1, 50:60, 40:60])))
    base = _hu_units(200.0) - _hu_units(40.0)
    assert min(contrasts) < 0.9 * base < base < 1.1 * base < max(contrasts)
    assert min(noises) < 0.05 and max(noises) > 0.5  # some crops clean, some at a low-dose noise level


def test_without_augment_the_crop_is_the_plain_window() -> None:
    from app.detection.train.loop import random_crop

    sample = _sample((100, 100, 140, 130))
    a = np.random.default_rng(9)
    patch, boxes = random_crop(sample, 128, a, lesion_prob=1.0)  # type: ignore[arg-type]
    assert boxes[0, 2] - boxes[0, 0] == 40 and boxes[0, 3] - boxes[0, 1] == 30  # no zoom
    # No intensity change either: only the two values the input holds.
    assert set(np.unique(patch).tolist()) == set(np.unique(sample.image.astype(np.float32)).tolist())
