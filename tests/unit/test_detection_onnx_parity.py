"""ONNX Runtime output equals PyTorch output within 1e-4: live with torch, and against a stored reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from app.config import DEFAULT_MODEL
from app.detection.commands import reference_path
from app.detection.reference import TOLERANCE, load_reference, parity_error, reference_input
from app.detection.runtime import Detector
from tests.components import require_component

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _require_torch() -> None:
    require_component("torch", HAS_TORCH, "pip install -e '.[train]' (torch==2.13.0)")


@pytest.mark.parametrize("flip_tta", [False, True], ids=["plain", "flip-averaged"])
def test_exported_graph_matches_pytorch_within_tolerance(tmp_path: Path, flip_tta: bool) -> None:
    _require_torch()
    import torch

    from app.detection.train.export import export_onnx
    from app.detection.train.model import FlipAveraged, build_model

    torch.manual_seed(3)
    net = build_model()
    model = FlipAveraged(net) if flip_tta else net
    # Non-trivial BatchNorm statistics, so that folding them into the convs is exercised too.
    model.train()
    with torch.no_grad():
        for _ in range(2):
            net.forward_maps(torch.randn(2, 3, 128, 128) * 50)
    model.eval()
    path = export_onnx(
        model, tmp_path / "m.onnx", model_version="parity", synthetic=True, training_data="none"
    )
    x = reference_input(5)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = Detector.load(path, device="cpu").infer(x)
    assert got.shape == expected.shape == (1, 100, 5)
    assert parity_error(got, expected) <= TOLERANCE


def test_exported_graph_has_no_nms_and_fixed_input(tmp_path: Path) -> None:
    _require_torch()
    import onnx
    import torch

    from app.detection.train.export import export_onnx
    from app.detection.train.model import build_model

    torch.manual_seed(0)
    path = export_onnx(
        build_model(), tmp_path / "m.onnx", model_version="v", synthetic=True, training_data="none"
    )
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert "NonMaxSuppression" not in ops and {"MaxPool", "TopK"} <= ops
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 512, 512]


def test_shipped_model_matches_its_stored_pytorch_reference() -> None:
    ref = reference_path(DEFAULT_MODEL)
    if not DEFAULT_MODEL.is_file() or not ref.is_file():
        pytest.fail(f"the shipped model {DEFAULT_MODEL} and its reference {ref} must be in the repository")
    x, expected = load_reference(ref)
    got = Detector.load(DEFAULT_MODEL, device="cpu").infer(x)
    assert parity_error(got, expected) <= TOLERANCE


def test_parity_error_scales_boxes_by_the_input_side_and_not_scores() -> None:
    a = np.zeros((1, 2, 5), dtype=np.float32)
    a[0, 0, 4] = 0.5
    b = a.copy()
    b[0, 0, 0] = 0.0512  # 0.0512 px of 512 -> 1e-4
    assert parity_error(a, b) == pytest.approx(1e-4)
    b[0, 1, 4] = 2e-4  # a score differs by 2e-4
    assert parity_error(a, b) == pytest.approx(2e-4)


def test_parity_error_ignores_boxes_of_empty_slots_but_not_of_detections() -> None:
    a = np.zeros((1, 2, 5), dtype=np.float32)
    a[0, 0, 4] = 0.5
    b = a.copy()
    b[0, 1, :4] = 100.0  # an empty slot (score 0) with another box: TopK tie order, not a numeric error
    assert parity_error(a, b) == 0.0
    b[0, 0, :4] = 5.12  # the real detection moved by 5.12 px = 0.01 of the input side
    assert parity_error(a, b) == pytest.approx(0.01)


def test_parity_error_accepts_tied_detections_in_either_order_but_not_moved_ones() -> None:
    a = np.zeros((1, 3, 5), dtype=np.float32)
    a[0, 0] = [10, 10, 30, 30, 0.4]
    a[0, 1] = [200, 200, 230, 230, 0.4]
    b = a.copy()
    b[0, [0, 1]] = a[0, [1, 0]]  # TopK broke the tie the other way
    assert parity_error(a, b) == 0.0
    b[0, 0, 0] += 51.2  # now one of them really moved (0.1 of the input side)
    assert parity_error(a, b) == pytest.approx(0.1)
