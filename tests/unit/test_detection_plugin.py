"""Bring your own model: the preprocessing stated in ONNX metadata is read, checked and honoured."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.deeplesion.store import SliceStore
from app.detection.contract import (
    contract_metadata,
    preprocessing_from_metadata,
)
from app.detection.errors import ModelLoadError
from app.detection.preprocess import (
    DEFAULT_PREPROCESSING,
    Preprocessing,
    body_range,
    prepare_input,
    preprocess_key_slice,
    resize_linear,
)
from app.detection.runtime import Detector
from app.detection.testing import build_tiny_model

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "lesion-detector.onnx"

# A MULAN-style export: 5 slices 2 mm apart, a soft-tissue window scaled to 0..1, 0.8 mm pixels after
# cropping the black border, OpenCV resize, boxes scaled without the half-pixel shift, a 256 px input.
MULAN_LIKE = Preprocessing(
    slice_offsets_mm=(-4.0, -2.0, 0.0, 2.0, 4.0),
    window_hu=(-160.0, 240.0),
    value_max=1.0,
    pixel_mean=0.5,
    pad_value=0.0,
    spacing_mm=0.8,
    max_size=256,
    border_crop="mulan",
    resize="opencv-linear",
    box_mapping="scale",
    input_name="data",
    input_shape=(1, 5, 256, 256),
)


def _meta(pre: Preprocessing) -> dict[str, str]:
    return contract_metadata(model_version="byo-1", synthetic=True, training_data="none", preprocessing=pre)


def test_the_shipped_model_states_the_default_preprocessing() -> None:
    import onnx

    model = onnx.load(str(SHIPPED), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    assert preprocessing_from_metadata(meta, "shipped") == DEFAULT_PREPROCESSING


def test_a_contract_1_file_gets_the_recipe_it_was_trained_with() -> None:
    meta = {
        "lesion_review.contract": "1",
        "input_name": "image",
        "input_shape": "1,3,512,512",
        "input_window_hu": "-1024,3071",
        "input_pixel_mean": "50",
        "input_spacing_mm": "0.8",
        "input_slice_gap_mm": "2",
        "output_name": "detections",
        "output_format": "rows",
        "model_version": "old",
        "synthetic": "true",
        "training_data": "synthetic",
    }
    assert preprocessing_from_metadata(meta, "old.onnx") == DEFAULT_PREPROCESSING


def test_metadata_round_trips_every_field() -> None:
    assert preprocessing_from_metadata(_meta(MULAN_LIKE), "m") == MULAN_LIKE


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("input_border_crop", "auto", "input_border_crop.*none, mulan"),
        ("output_box_mapping", "corners", "output_box_mapping.*pixel-centre, scale"),
        ("input_window_hu", "240,-160", "window"),
        ("input_slice_offsets_mm", "-2,0,2", r"input shape \[1, 5, 256, 256\] must be \[1, 3, S, S\]"),
        ("input_max_size", "512", "max size 512 must be within 16..256"),
        ("lesion_review.contract", "3", "reads 1, 2"),
    ],
)
def test_unsupported_preprocessing_is_a_clear_load_error(key: str, value: str, message: str) -> None:
    meta = _meta(MULAN_LIKE)
    meta[key] = value
    with pytest.raises(ModelLoadError, match=message):
        preprocessing_from_metadata(meta, "m.onnx")


def test_a_contract_2_file_must_state_its_whole_preprocessing() -> None:
    meta = _meta(MULAN_LIKE)
    del meta["input_border_crop"]
    with pytest.raises(ModelLoadError, match="missing metadata 'input_border_crop'"):
        preprocessing_from_metadata(meta, "m.onnx")


def test_window_and_normalisation_follow_the_metadata() -> None:
    # HU 40 is the middle of -160..240: 0.5 on the 0..1 scale, minus the mean 0.5 = 0; -1000 clips to -0.5.
    ctx = np.full((5, 64, 64), -1000.0, dtype=np.float32)
    ctx[:, 16:48, 16:48] = 40.0
    pre = replace(MULAN_LIKE, border_crop="none", spacing_mm=0.0, max_size=64)
    x, t = prepare_input(ctx, 0.8, replace(pre, input_shape=(1, 5, 64, 64)))
    assert x.shape == (1, 5, 64, 64)
    assert x[0, 2, 32, 32] == pytest.approx(0.0) and x[0, 2, 0, 0] == pytest.approx(-0.5)


def _mulan_reference_range(key_hu: np.ndarray) -> tuple[int, int, int, int]:
    """MULAN load_ct_img.get_mask + get_range (rsummers11/CADLab), on HU instead of raw PNG values."""
    from scipy.ndimage import binary_opening

    mask = key_hu + 32768 > 32000
    mask = binary_opening(mask, structure=np.ones((7, 7)))
    if mask.sum() == 0:
        mask = key_hu * 0 + 1
    idx = np.nonzero(mask)
    return (int(idx[0].min()), int(idx[0].max()), int(idx[1].min()), int(idx[1].max()))


@settings(max_examples=60, deadline=None)
@given(
    top=st.integers(0, 40),
    left=st.integers(0, 40),
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    table_row=st.integers(0, 79),
    table_width=st.integers(1, 8),
)
def test_border_crop_finds_the_body_as_mulan_does(
    top: int, left: int, h: int, w: int, table_row: int, table_width: int
) -> None:
    hu = np.full((80, 90), -1000.0)
    hu[top : top + h, left : left + w] = 40.0
    hu[table_row, 5 : 5 + table_width * 10] = 200.0  # a thin table: the 7x7 opening removes it
    assert body_range(hu) == _mulan_reference_range(hu)


def test_opencv_linear_resize_samples_pixel_centres_with_replicated_edges() -> None:
    # cv2.resize([[0, 10]], fx=2, fy=1, INTER_LINEAR) = [[0, 2.5, 7.5, 10]].
    out = resize_linear(np.array([[0.0, 10.0]], dtype=np.float32), (4, 1), 2.0)
    np.testing.assert_allclose(out, [[0.0, 2.5, 7.5, 10.0]])


def _store_with_body(tmp_path: Path) -> SliceStore:
    store = SliceStore(tmp_path / "data")
    for index in range(6, 15):
        hu = np.full((512, 512), -1000, dtype=np.int16)
        # The body: rows 100..399, columns 60..459; each slice's soft tissue differs by its index.
        hu[100:400, 60:460] = 10 * index
        store.write_hu(f"000001_01_01_{index:03d}.png", hu)
    return store


def test_slices_at_the_models_offsets_fill_its_channels(tmp_path: Path) -> None:
    store = _store_with_body(tmp_path)
    pre = replace(MULAN_LIKE, window_hu=(0.0, 1000.0), value_max=1000.0, pixel_mean=0.0)
    x, _t = preprocess_key_slice(store, "000001_01_01_010.png", (0.8, 0.8, 1.0), pre)
    # dz = 1 mm: -4, -2, 0, 2, 4 mm are slices 6, 8, 10, 12, 14 (HU 60 .. 140); the crop keeps the body only.
    centre = x[0, :, 10, 10]
    np.testing.assert_allclose(centre, [60.0, 80.0, 100.0, 120.0, 140.0], atol=1e-3)


def test_a_byo_model_runs_through_the_runtime_and_its_boxes_map_back(tmp_path: Path) -> None:
    rows = np.array([[50.0, 40.0, 100.0, 90.0, 0.9]], dtype=np.float32)
    path = build_tiny_model(
        tmp_path / "byo.onnx",
        rows=rows,
        metadata=_meta(MULAN_LIKE),
        input_name="data",
        input_shape=MULAN_LIKE.input_shape,
    )
    det = Detector.load(path, device="cpu")
    assert det.preprocessing == MULAN_LIKE
    store = _store_with_body(tmp_path)
    dets = det.predict("000001_01_01_010.png", store, spacing_mm=(0.5, 0.5, 1.0))
    # Cropped to the body (origin x 60, y 100), then 0.5/0.8 = 0.625 and MULAN's box mapping x / 0.625.
    assert len(dets) == 1
    np.testing.assert_allclose(
        dets[0].box, [50 / 0.625 + 60, 40 / 0.625 + 100, 100 / 0.625 + 60, 90 / 0.625 + 100]
    )


def test_the_default_preprocessing_is_unchanged_for_the_shipped_recipe() -> None:
    # Pixel-centre mapping and PIL's rounded size: a 512 px slice at 0.4 mm fills 256 px, maps back exactly.
    ctx = np.zeros((3, 512, 512), dtype=np.float32)
    x, t = prepare_input(ctx, 0.4)
    assert x.shape == (1, 3, 512, 512) and (t.scale_x, t.offset_x, t.centred) == (0.5, 0, True)
    np.testing.assert_allclose(
        t.to_original(t.to_input(np.array([[10.0, 20.0, 30.0, 40.0]]))), [[10, 20, 30, 40]]
    )


def test_a_model_carries_its_score_calibration_and_queue_threshold(tmp_path: Path) -> None:
    from app.detection.contract import screening_metadata, write_metadata
    from app.detection.screening import Calibration

    plain = build_tiny_model(tmp_path / "plain.onnx")
    assert Detector.load(plain).probability([0.5]) is None
    cal = Calibration((0.1, 0.9), (0.0, 0.8))
    stamped = write_metadata(plain, tmp_path / "cal.onnx", screening_metadata(cal, 0.4))
    det = Detector.load(stamped)
    assert det.screening_threshold == 0.4 and det.probability([0.5]) == pytest.approx([0.4])
    assert det.model_version == Detector.load(plain).model_version


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"score_calibration": '{"scores": [0.2, 0.1], "probabilities": [0, 1]}'}, "ascending"),
        ({"score_calibration": "not json"}, "calibration"),
        ({"screening_threshold": "0.5"}, "score_calibration is missing"),
    ],
)
def test_an_unusable_calibration_is_a_load_error(
    tmp_path: Path, updates: dict[str, str], message: str
) -> None:
    from app.detection.contract import write_metadata

    path = write_metadata(build_tiny_model(tmp_path / "m.onnx"), tmp_path / "bad.onnx", updates)
    with pytest.raises(ModelLoadError, match=message):
        Detector.load(path)
