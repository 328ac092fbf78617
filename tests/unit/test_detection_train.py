"""Training pieces (torch): CenterNet targets, crops, a short reproducible run, and the full train command."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from tests.components import require_component

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(autouse=True)
def _torch() -> None:
    require_component("torch", HAS_TORCH, "pip install -e '.[train]' (torch==2.13.0)")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.deeplesion.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, patients=3, seed=1, max_studies=1, progress=False, workers=1)
    return root


def test_targets_put_a_unit_peak_at_the_centre_cell_with_offset_and_log_size() -> None:
    from app.detection.train.loop import make_targets

    # Box centred at (41, 22) input px, 16 x 8 px: cell (10, 5), offset (0.25, 0.5), log size (log 4, log 2).
    heat, reg, mask = make_targets(np.array([[33.0, 18.0, 49.0, 26.0]]), 32)
    assert heat[0, 5, 10] == 1.0 and heat.max() == 1.0 and mask.sum() == 1.0 and mask[5, 10] == 1.0
    np.testing.assert_allclose(reg[:, 5, 10], [math.log(4), math.log(2), 0.25, 0.5], atol=1e-6)
    assert 0 < heat[0, 5, 11] < 1.0


def test_targets_skip_boxes_whose_centre_is_outside_the_crop() -> None:
    from app.detection.train.loop import make_targets

    heat, _, mask = make_targets(np.array([[-40.0, -40.0, -10.0, -10.0]]), 16)
    assert mask.sum() == 0 and heat.max() == 0.0


def test_decoding_inverts_the_targets() -> None:
    import torch

    from app.detection.train.loop import make_targets
    from app.detection.train.model import decode_maps

    box = np.array([[33.0, 18.0, 49.0, 26.0]])
    heat, reg, _ = make_targets(box, 32)
    logit = np.log(np.clip(heat, 1e-6, 1 - 1e-6) / (1 - np.clip(heat, 1e-6, 1 - 1e-6)))
    maps = torch.from_numpy(np.concatenate([logit, reg])[None].astype(np.float32))
    rows = decode_maps(maps, 3).numpy()[0]
    np.testing.assert_allclose(rows[0, :4], box[0], atol=1e-3)


def test_random_crop_flips_boxes_with_the_image(tiny_dataset: Path) -> None:
    from app.deeplesion.csvio import read_dl_info
    from app.detection.train.loop import load_samples, random_crop

    samples = load_samples(
        tiny_dataset, read_dl_info(tiny_dataset / "DL_info.csv"), "all", drop_noisy=True, progress=False
    )
    sample = next(s for s in samples if len(s.boxes))
    rng = np.random.default_rng(0)
    for _ in range(20):
        patch, boxes = random_crop(sample, 128, rng, lesion_prob=1.0)
        assert patch.shape == (3, 128, 128)
        # Some lesion centre lies inside the crop whenever the crop was placed on a lesion.
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        assert np.any((cx >= 0) & (cx < 128) & (cy >= 0) & (cy < 128))
        assert np.all(boxes[:, 2] >= boxes[:, 0])


def test_short_training_is_reproducible_by_seed(tiny_dataset: Path) -> None:
    from app.detection.train.loop import TrainConfig, train

    cfg = TrainConfig(epochs=1, iters_per_epoch=2, batch_size=2, crop=128, seed=5, max_train_slices=4)
    a = train(tiny_dataset, cfg, progress=False)
    b = train(tiny_dataset, cfg, progress=False)
    assert a.history[0]["loss"] == b.history[0]["loss"]
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert bool((pa == pb).all())


def test_train_command_writes_a_loadable_model_its_card_and_reference(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from app.cli import main
    from app.detection.runtime import Detector

    out = tmp_path / "m" / "tiny.onnx"
    result = CliRunner().invoke(
        main,
        [
            "train",
            str(tiny_dataset),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--crop",
            "128",
            "--seed",
            "3",
            "--model-version",
            "tiny-train-test",
        ],
    )
    assert result.exit_code == 0, result.output
    det = Detector.load(out)
    assert det.model_version == "tiny-train-test" and det.synthetic is True
    card = (out.parent / "MODEL_CARD.md").read_text()
    assert "NOT for clinical use" in card and "tiny-train-test" in card and "seed 3" in card
    assert (out.parent / "tiny.reference.json").is_file()
    assert (out.parent / "tiny.pt").is_file()  # the weights a later --init warm start reads
    assert "test FROC sensitivity" in result.output


def test_training_labels_the_lesions_the_truth_file_lists_as_left_out(tmp_path: Path) -> None:
    import json

    from app.deeplesion.csvio import read_dl_info
    from app.deeplesion.synth import generate_dataset
    from app.detection.train.loop import load_samples, truth_boxes

    root = tmp_path / "d"
    generate_dataset(root, patients=3, seed=1, max_studies=1, progress=False, workers=1)
    records = read_dl_info(root / "DL_info.csv")
    train_rows = [r for r in records if r.train_val_test == 1 and r.possibly_noisy != 1]
    key = train_rows[0].file_name
    hidden_box = (100.0, 120.0, 130.0, 150.0)
    doc = json.loads((root / "synth_truth.json").read_text())
    doc["unannotated"] = [{"lesion_id": "x", "file_name": key, "box": list(hidden_box)}]
    (root / "synth_truth.json").write_text(json.dumps(doc))

    extra = truth_boxes(root)
    assert extra == {key: [hidden_box]}
    plain = {s.file_name: s for s in load_samples(root, records, "train", drop_noisy=True, progress=False)}
    labelled = {
        s.file_name: s
        for s in load_samples(root, records, "train", drop_noisy=True, progress=False, extra_boxes=extra)
    }
    assert len(labelled[key].boxes) == len(plain[key].boxes) + 1
    expected = labelled[key].transform.to_input(np.array([hidden_box]))[0]
    np.testing.assert_allclose(labelled[key].boxes[-1], expected, rtol=1e-5)
    # Evaluation truth stays the CSV's: the hidden lesion is a training target only.
    assert len(labelled[key].lesions) == len(plain[key].lesions)
    (root / "synth_truth.json").unlink()
    assert truth_boxes(root) == {}


def test_flip_averaging_decodes_the_same_box_as_a_perfect_model_and_its_mirror() -> None:
    import torch

    from app.detection.train.loop import make_targets
    from app.detection.train.model import FlipAveraged, decode_maps

    box = np.array([[201.0, 90.0, 229.0, 111.0]])  # centre (215, 100.5): offsets (0.75, 0.125)
    mirrored = box.copy()
    mirrored[:, [0, 2]] = 511 - box[:, [2, 0]]

    class Oracle(torch.nn.Module):
        """Returns perfect targets for the box, mirrored when the marker pixel moved to the right edge."""

        def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
            flipped = bool(x[0, 0, 0, -1] > 0)
            heat, reg, _ = make_targets(mirrored if flipped else box, 128)
            logit = np.log(np.clip(heat, 1e-6, 1 - 1e-6) / (1 - np.clip(heat, 1e-6, 1 - 1e-6)))
            # Off-centre cells carry no regression; give them the mirror-consistent value of the peak's.
            return torch.from_numpy(np.concatenate([logit, reg])[None].astype(np.float32))

    x = torch.zeros(1, 3, 512, 512)
    x[0, 0, 0, 0] = 1.0
    oracle = Oracle()
    plain = decode_maps(oracle.forward_maps(x), 1).numpy()[0, 0]
    averaged = FlipAveraged(oracle).forward(x).numpy()[0, 0]  # type: ignore[arg-type]
    np.testing.assert_allclose(plain[:4], box[0], atol=1e-3)
    np.testing.assert_allclose(averaged[:4], box[0], atol=1e-3)
    assert averaged[4] > 0.99


def _weights(model: object) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in model.state_dict().values()]  # type: ignore[attr-defined]


def test_mixed_precision_switch_follows_the_device_and_mode() -> None:
    import torch

    from app.detection.train.loop import autocast_dtype

    assert autocast_dtype(torch.device("cpu"), "auto") == (None, False)
    assert autocast_dtype(torch.device("cuda", 0), "auto") == (torch.float16, True)
    assert autocast_dtype(torch.device("cuda", 0), "off") == (None, False)
    assert autocast_dtype(torch.device("cpu"), "bf16") == (torch.bfloat16, False)
    with pytest.raises(ValueError, match="mixed-precision mode 'fp8'"):
        autocast_dtype(torch.device("cpu"), "fp8")


def test_a_killed_run_resumed_from_its_checkpoint_ends_with_the_same_weights(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    from app.detection.train.loop import TrainConfig, train

    def cfg(name: str, resume: bool = False) -> TrainConfig:
        return TrainConfig(
            epochs=2, iters_per_epoch=2, batch_size=2, crop=64, seed=7, max_train_slices=4,
            checkpoint=str(tmp_path / name), resume=resume,
        )  # fmt: skip

    whole = train(tiny_dataset, cfg("whole.ckpt"), progress=False)

    def kill(entry: dict[str, object]) -> None:
        if entry["epoch"] == 1:
            raise KeyboardInterrupt  # the run dies right after its first epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(tiny_dataset, cfg("split.ckpt"), progress=False, on_epoch=kill)
    resumed = train(tiny_dataset, cfg("split.ckpt", resume=True), progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.best_epoch == whole.best_epoch
    for a, b in zip(_weights(whole.model), _weights(resumed.model), strict=True):
        np.testing.assert_array_equal(a, b)
    other = TrainConfig(**{**cfg("split.ckpt", resume=True).__dict__, "lr": 1e-3})
    with pytest.raises(ValueError, match="other settings \\(lr\\)"):
        train(tiny_dataset, other, progress=False)


def test_decoding_in_dataloader_workers_trains_like_the_in_memory_cache(tiny_dataset: Path) -> None:
    from app.detection.train.loop import TrainConfig, train

    base = dict(epochs=1, iters_per_epoch=2, batch_size=2, crop=64, seed=3, max_train_slices=4)
    cached = train(tiny_dataset, TrainConfig(**base), progress=False)  # type: ignore[arg-type]
    workers = train(
        tiny_dataset,
        TrainConfig(**base, num_workers=2, cache_slices=0),  # type: ignore[arg-type]
        progress=False,
    )
    assert workers.history[0]["loss"] == cached.history[0]["loss"]
    for a, b in zip(_weights(cached.model), _weights(workers.model), strict=True):
        np.testing.assert_array_equal(a, b)
    # The same run under bfloat16 autocast trains too (the CUDA float16 path is the same code with a scaler).
    bf16 = train(tiny_dataset, TrainConfig(**base, amp="bf16"), progress=False)  # type: ignore[arg-type]
    assert math.isfinite(bf16.history[0]["loss"]) and bf16.history[0]["loss"] != cached.history[0]["loss"]


def _ddp_rank(rank: int, data: str, out: str, port: int) -> None:
    import os

    import torch

    from app.detection.train.loop import TrainConfig, train

    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
         "LOCAL_RANK": str(rank)}
    )  # fmt: skip
    cfg = TrainConfig(epochs=1, iters_per_epoch=2, batch_size=4, crop=64, seed=3, max_train_slices=4,
                      threads=1, checkpoint=f"{out}/ddp.ckpt")  # fmt: skip
    res = train(Path(data), cfg, progress=False)
    # The last weights, not the selected ones: rank 0 alone validates and selects.
    last = torch.load(f"{out}/ddp.ckpt", weights_only=False)["model"] if rank == 0 else None
    torch.save({"main": res.is_main, "world": res.world_size, "ckpt": last, "model": res.model.state_dict()},
               f"{out}/rank{rank}.pt")  # fmt: skip
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_train_one_model_as_torchrun_would(tiny_dataset: Path, tmp_path: Path) -> None:
    import socket

    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(
        _ddp_rank, args=(str(tiny_dataset), str(tmp_path), port), nprocs=2, start_method="spawn"
    )
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert (r0["main"], r1["main"], r0["world"], r1["world"]) == (True, False, 2, 2)
    # DistributedDataParallel keeps the ranks' weights identical (BatchNorm statistics stay per rank).
    weights = [
        k for k in r1["model"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert len(weights) > 20
    for k in weights:
        assert torch.equal(r1["model"][k], r0["ckpt"][k]), k


def test_the_resnet_architecture_exports_under_the_contract_and_onnx_runtime_agrees(tmp_path: Path) -> None:
    import torch

    from app.detection.reference import TOLERANCE, parity_error, reference_input
    from app.detection.runtime import Detector
    from app.detection.train.export import export_onnx
    from app.detection.train.model import FlipAveraged, build_model, count_macs, count_parameters

    torch.manual_seed(0)
    model = build_model("resnet")
    assert count_parameters(model) > 5 * count_parameters(build_model("lite"))
    served = FlipAveraged(model).eval()
    out = export_onnx(
        served, tmp_path / "r.onnx", model_version="resnet-test", synthetic=True, training_data="x"
    )
    det = Detector.load(out, device="cpu")
    x = reference_input(0)
    with torch.no_grad():
        want = served(torch.from_numpy(x)).numpy()
    assert parity_error(det.infer(x), want) <= TOLERANCE
    # The MAC count of one 3x3 conv, 3 -> 8 channels, stride 2 on 16x16: 8x8 outputs x 8 x 3 x 9.
    conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
    assert count_macs(conv, (1, 3, 16, 16)) == 8 * 8 * 8 * 3 * 9
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        build_model("vit")


def test_train_command_passes_the_cache_size_to_the_training_run(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import app.detection.train.loop as loop
    from app.cli import main

    seen: list[loop.TrainConfig] = []

    def fake_train(data_dir: Path, config: loop.TrainConfig, **kwargs: object) -> None:
        seen.append(config)
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(loop, "train", fake_train)
    out = str(tmp_path / "m.onnx")
    result = CliRunner().invoke(main, ["train", str(tiny_dataset), "--out", out, "--cache-slices", "4500"])
    assert result.exit_code == 1 and "stopped by the test" in result.output
    assert [c.cache_slices for c in seen] == [4500]
    CliRunner().invoke(main, ["train", str(tiny_dataset), "--out", out])
    assert seen[-1].cache_slices == loop.TrainConfig().cache_slices
