"""Warm start from an exported ONNX graph: folded weights go back into the model, and training mode agrees."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.components import require_component

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(autouse=True)
def _torch() -> None:
    require_component("torch", HAS_TORCH, "pip install -e '.[train]' (torch==2.13.0)")


def _exported(tmp_path: Path, flip_tta: bool, **kwargs: int) -> tuple[Path, object]:
    import torch

    from app.detection.train.export import export_onnx
    from app.detection.train.model import FlipAveraged, build_model

    torch.manual_seed(5)
    net = build_model(**kwargs)
    net.train()
    with torch.no_grad():
        for _ in range(3):  # BatchNorm statistics far from the defaults, so folding them matters
            net.forward_maps(torch.randn(2, 3, 96, 96) * 40 + 10)
    served = FlipAveraged(net) if flip_tta else net
    out = export_onnx(served, tmp_path / "m.onnx", model_version="warm", synthetic=True, training_data="x")
    return out, net.eval()


@pytest.mark.parametrize("flip_tta", [False, True], ids=["plain", "flip-averaged"])
def test_loaded_weights_reproduce_the_graph_and_survive_calibration(tmp_path: Path, flip_tta: bool) -> None:
    import torch

    from app.detection.reference import TOLERANCE, reference_input
    from app.detection.train.model import build_model
    from app.detection.train.warmstart import calibrate_batchnorm, load_onnx_weights

    path, original = _exported(tmp_path, flip_tta)
    model = build_model()
    x = torch.from_numpy(reference_input(0))
    with torch.no_grad():
        fresh_gap = float((model.eval().forward_maps(x) - original.forward_maps(x)).abs().max())
    assert fresh_gap > 1e-2  # a fresh model differs, so the checks below can fail

    assert load_onnx_weights(model, path) <= TOLERANCE
    with torch.no_grad():
        assert torch.allclose(model.eval().forward_maps(x), original.forward_maps(x), atol=1e-3)

    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 96, 96, generator=gen) * 40 + 10 for _ in range(8)]
    assert calibrate_batchnorm(model, batches) == 8
    with torch.no_grad():
        eval_maps = model.eval().forward_maps(batches[0])
        assert torch.allclose(eval_maps, original.forward_maps(batches[0]), atol=1e-3)
        train_maps = model.train().forward_maps(batches[0])
    model.eval()
    # Batch statistics now match the calibrated ones: the first training step starts from the same function.
    rel = float((train_maps - eval_maps).abs().mean() / eval_maps.abs().mean())
    assert rel < 0.05, rel
    with torch.no_grad():
        assert torch.allclose(model.forward_maps(x), original.forward_maps(x), atol=1e-3)


def test_a_graph_of_another_shape_is_refused(tmp_path: Path) -> None:
    from app.detection.train.model import build_model
    from app.detection.train.warmstart import load_onnx_weights

    path, _ = _exported(tmp_path, False, neck=16)
    with pytest.raises(ValueError, match="model expects"):
        load_onnx_weights(build_model(), path)


def test_train_warm_starts_from_the_shipped_onnx_model(tmp_path: Path) -> None:
    import torch

    from app.config import DEFAULT_MODEL
    from app.deeplesion.synth import generate_dataset
    from app.detection.reference import TOLERANCE
    from app.detection.train.loop import TrainConfig, train
    from app.detection.train.model import build_model
    from app.detection.train.warmstart import load_onnx_weights

    data = tmp_path / "d"
    generate_dataset(data, patients=3, seed=2, max_studies=1, progress=False, workers=1)
    cfg = TrainConfig(epochs=1, iters_per_epoch=1, batch_size=2, crop=128, lr=1e-9, seed=4)
    warm = train(data, TrainConfig(**{**cfg.__dict__, "init": str(DEFAULT_MODEL)}), progress=False)
    cold = train(data, cfg, progress=False)
    # The shipped graph's own function, read back into PyTorch: what a warm start must begin from. Compared
    # on the head maps, not on a FROC of this tiny dataset, which says more about the phantoms than the start.
    shipped = build_model()
    assert load_onnx_weights(shipped, DEFAULT_MODEL) <= TOLERANCE
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 40 + 10
    with torch.no_grad():
        reference = shipped.eval().forward_maps(x)
        warm_maps = warm.model.eval().forward_maps(x)
        cold_maps = cold.model.eval().forward_maps(x)

    # At a negligible learning rate the warm model is still the shipped one (its BatchNorm statistics move a
    # little with the training crops); the cold one is another function.
    def rel(maps: torch.Tensor) -> float:
        return float((maps - reference).abs().mean() / reference.abs().mean())

    assert rel(warm_maps) < 0.05, rel(warm_maps)
    assert rel(cold_maps) > 0.5, rel(cold_maps)
