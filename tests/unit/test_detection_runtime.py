"""ONNX Runtime detector: contract checks on load, provider choice, predict() geometry, load_detector."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from app.deeplesion.store import SliceStore
from app.detection.contract import contract_metadata
from app.detection.errors import ModelLoadError
from app.detection.runtime import CPU, CUDA, Detector, cuda_libraries_load, load_detector
from app.detection.testing import TINY_MODEL_VERSION, TINY_ROWS, build_tiny_model

FILE = "000001_01_01_010.png"


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return build_tiny_model(tmp_path / "tiny.onnx")


@pytest.fixture()
def store(tmp_path: Path) -> SliceStore:
    s = SliceStore(tmp_path / "data")
    for index in (9, 10, 11):
        s.write_hu(f"000001_01_01_{index:03d}.png", np.zeros((512, 512), dtype=np.int16))
    return s


def test_tiny_model_loads_with_its_contract_metadata(tiny: Path) -> None:
    det = Detector.load(tiny, device="cpu")
    assert det.model_version == TINY_MODEL_VERSION
    assert det.synthetic is True
    assert det.provider == CPU
    assert det.metadata["input_spacing_mm"] == "0.8"


def test_auto_device_reports_the_provider_really_in_use(tiny: Path) -> None:
    det = Detector.load(tiny, device="auto")
    assert det.provider in (CPU, CUDA)
    if not cuda_libraries_load():
        assert det.provider == CPU


def test_cuda_device_without_cuda_is_a_clear_load_error(tiny: Path) -> None:
    if cuda_libraries_load():
        pytest.skip("this machine has CUDA libraries; the failure path cannot be shown here")
    with pytest.raises(ModelLoadError, match="cuda"):
        Detector.load(tiny, device="cuda")


def test_unknown_device_is_a_load_error(tiny: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown device"):
        Detector.load(tiny, device="tpu")


def test_missing_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no model file"):
        Detector.load(tmp_path / "absent.onnx")


def test_garbage_file_is_a_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        Detector.load(bad)


def test_model_without_metadata_is_rejected_naming_the_fields(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "m.onnx", metadata={})
    with pytest.raises(ModelLoadError) as err:
        Detector.load(path)
    assert "input_spacing_mm" in str(err.value) and "model_version" in str(err.value)


def test_model_asking_for_an_unsupported_resize_is_rejected_naming_the_choices(tmp_path: Path) -> None:
    meta = contract_metadata(model_version="v", synthetic=True, training_data="x")
    meta["input_resize"] = "lanczos"
    path = build_tiny_model(tmp_path / "m.onnx", metadata=meta)
    with pytest.raises(ModelLoadError, match="input_resize.*pil-bilinear, opencv-linear"):
        Detector.load(path)


def test_graph_with_wrong_input_name_is_rejected(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "m.onnx", input_name="data")
    with pytest.raises(ModelLoadError, match="'data'"):
        Detector.load(path)


def test_graph_with_wrong_input_shape_is_rejected(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "m.onnx", input_shape=(1, 3, 256, 256))
    with pytest.raises(ModelLoadError, match="input shape"):
        Detector.load(path)


def test_graph_with_wrong_output_rows_is_rejected(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "m.onnx", rows=np.zeros((2, 4), dtype=np.float32), row_width=4)
    with pytest.raises(ModelLoadError, match=r"\[1,K,5\]"):
        Detector.load(path)


def test_boxes_outside_the_image_are_dropped(tmp_path: Path, store: SliceStore) -> None:
    rows = np.array([[300.0, 300.0, 360.0, 360.0, 0.9], [10.0, 10.0, 50.0, 50.0, 0.8]], dtype=np.float32)
    det = Detector.load(build_tiny_model(tmp_path / "m.onnx", rows=rows))
    # At 0.4 mm the 512 px slice fills only the top-left 256 px of the input; the first row lies outside.
    dets = det.predict(FILE, store, spacing_mm=(0.4, 0.4, 1.0))
    assert [round(d.score, 3) for d in dets] == [0.8]


def test_predict_maps_boxes_back_to_original_pixels(tiny: Path, store: SliceStore) -> None:
    det = Detector.load(tiny)
    # 0.6 mm pixels: the image is scaled by 0.75 for the network, so boxes grow by 4/3 on the way back.
    dets = det.predict(FILE, store, spacing_mm=(0.6, 0.6, 1.0), threshold=0.05)
    kept = TINY_ROWS[TINY_ROWS[:, 4] >= 0.05]
    assert len(dets) == len(kept)
    for d, row in zip(dets, kept, strict=True):
        expected = (row[:4].astype(np.float64) + 0.5) / 0.75 - 0.5
        np.testing.assert_allclose(d.box, expected, atol=1e-3)
        assert d.score == pytest.approx(float(row[4]), abs=1e-6)


def test_predict_threshold_filters_low_scores(tiny: Path, store: SliceStore) -> None:
    det = Detector.load(tiny)
    assert len(det.predict(FILE, store, spacing_mm=(0.8, 0.8, 1.0), threshold=0.0)) == 3
    assert len(det.predict(FILE, store, spacing_mm=(0.8, 0.8, 1.0), threshold=0.7)) == 1


def test_predict_rejects_threshold_outside_0_1(tiny: Path, store: SliceStore) -> None:
    det = Detector.load(tiny)
    with pytest.raises(ValueError, match="threshold"):
        det.predict(FILE, store, spacing_mm=(0.8, 0.8, 1.0), threshold=1.5)


def test_predict_from_threads_shares_one_session(tiny: Path, store: SliceStore) -> None:
    det = Detector.load(tiny)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: det.predict(FILE, store, spacing_mm=(0.8, 0.8, 1.0)), range(8)))
    assert all(r == results[0] for r in results) and len(results[0]) == 2


def test_load_detector_without_model_file_gives_reason(tmp_path: Path) -> None:
    det, reason = load_detector(SimpleNamespace(model_path=tmp_path / "none.onnx", device="auto"))
    assert det is None and reason is not None and "none.onnx" in reason


def test_load_detector_with_broken_model_gives_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01")
    det, reason = load_detector(SimpleNamespace(model_path=bad, device="auto"))
    assert det is None and reason is not None and "bad.onnx" in reason


def test_load_detector_loads_a_valid_model(tiny: Path) -> None:
    det, reason = load_detector(SimpleNamespace(model_path=tiny, device="cpu"))
    assert reason is None and det is not None and det.info()["model_version"] == TINY_MODEL_VERSION


def test_auto_device_prints_no_provider_errors(tiny: Path, capfd: pytest.CaptureFixture[str]) -> None:
    Detector.load(tiny, device="auto")
    _, err = capfd.readouterr()
    assert "error" not in err.lower() and "libcu" not in err


def test_an_onnx_runtime_failure_becomes_an_inference_error(tiny: Path) -> None:
    from app.detection.errors import InferenceError

    det = Detector.load(tiny, device="cpu")

    class Failing:
        def run(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : out of memory")

    det._session = Failing()
    with pytest.raises(InferenceError, match="out of memory"):
        det.infer(np.zeros((1, 3, 512, 512), dtype=np.float32))
