"""What the detector CLI commands do (train, predict, evaluate), as plain functions returning data."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.detection.batch import SliceRunner
from app.detection.runtime import Detector

log = logging.getLogger(__name__)


def reference_path(model: Path) -> Path:
    """Where the PyTorch reference output of a model is stored: next to it, `NAME.reference.json`."""
    return model.with_name(model.stem + ".reference.json")


def is_synthetic_dataset(data_dir: Path) -> bool:
    """A dataset made by the synthetic generator carries synth_truth.json."""
    return (Path(data_dir) / "synth_truth.json").is_file()


def run_predict(
    data_dir: Path, file_name: str, *, model: Path, device: str = "auto", threshold: float = 0.05
) -> dict[str, Any]:
    """Predict one key slice; spacing comes from DL_info.csv (0.8 mm and unknown dz when absent)."""
    from app.deeplesion.csvio import read_dl_info
    from app.deeplesion.store import SliceStore

    det = Detector.load(model, device=device)
    spacing: tuple[float, ...] = (0.8, 0.8, 0.0)
    csv_path = Path(data_dir) / "DL_info.csv"
    source = "default (no DL_info.csv row)"
    if csv_path.is_file():
        for rec in read_dl_info(csv_path):
            if rec.file_name == file_name:
                spacing, source = rec.spacing_mm, "DL_info.csv"
                break
    store = SliceStore(data_dir)
    start = time.perf_counter()
    dets = det.predict(file_name, store, spacing_mm=spacing, threshold=threshold)
    elapsed = (time.perf_counter() - start) * 1e3
    return {
        "file_name": file_name,
        "model_version": det.model_version,
        "provider": det.provider,
        "synthetic_model": det.synthetic,
        "spacing_mm": list(spacing),
        "spacing_source": source,
        "threshold": threshold,
        "elapsed_ms": round(elapsed, 1),
        "predictions": [d.as_dict() for d in dets],
    }


def run_evaluate(
    data_dir: Path | str,
    *,
    model: Path,
    split: str = "test",
    device: str = "auto",
    against: str = "original",
    corrected_records: list[Any] | None = None,
    progress: bool = True,
    pool_with: tuple[Path, ...] = (),
    runner: SliceRunner | None = None,
) -> dict[str, Any]:
    """FROC of a model on a split against the CSV or the given corrected records (the caller stores it).

    `runner` runs the detector elsewhere (a Ray cluster) at the evaluation threshold; None: here.
    """
    from app.detection.pipeline import evaluate_dataset, truth_from_records

    det = Detector.load(model, device=device)
    truths = None
    if against == "corrected":
        if corrected_records is None:
            raise ValueError("--against corrected needs the reviewers' state from the database")
        truths = truth_from_records(corrected_records, split)
    return evaluate_dataset(
        data_dir,
        det,
        split=split,
        truths=truths,
        against=against,
        progress=progress,
        pool_with=pool_with,
        runner=runner,
    )


def checkpoint_path(out: Path) -> Path:
    """Where a training run for `out` keeps its resumable checkpoint by default."""
    return out.with_suffix(".ckpt")


def run_train(
    data_dir: Path,
    out: Path,
    *,
    epochs: int,
    seed: int,
    device: str,
    val_dir: Path | None = None,
    extra_train_dirs: tuple[Path, ...] = (),
    max_minutes: float = 25.0,
    batch_size: int = 16,
    crop: int = 256,
    lr: float = 2e-3,
    iters_per_epoch: int = 0,
    init: Path | None = None,
    model_version: str | None = None,
    truth_labels: bool = True,
    flip_tta: bool = True,
    card: Path | None = None,
    command: str = "",
    progress: bool = True,
    num_workers: int = 0,
    cache_slices: int | None = None,
    amp: str = "auto",
    checkpoint: Path | None = None,
    resume: bool = False,
    arch: str = "lite",
    augment: bool = True,
) -> dict[str, Any]:
    """Train, export to ONNX with the contract metadata, evaluate with ONNX Runtime, write the card.

    Under torchrun every rank trains; rank 0 alone exports, and the others answer {"is_main": False}.
    """
    try:
        from app.detection.train.export import export_onnx, write_reference
        from app.detection.train.loop import TrainConfig, train
    except ImportError as exc:
        raise RuntimeError(
            f"training needs the [train] extra (torch): pip install -e '.[train]' ({exc})"
        ) from exc
    from app.detection.card import write_model_card
    from app.detection.pipeline import evaluate_dataset

    data_dir = Path(data_dir)
    config = TrainConfig(
        epochs=epochs,
        seed=seed,
        device=device,
        max_minutes=max_minutes,
        batch_size=batch_size,
        crop=crop,
        lr=lr,
        iters_per_epoch=iters_per_epoch,
        init=str(init) if init else "",
        truth_labels=truth_labels,
        flip_tta=flip_tta,
        num_workers=num_workers,
        **({} if cache_slices is None else {"cache_slices": cache_slices}),
        amp=amp,
        checkpoint=str(checkpoint if checkpoint is not None else checkpoint_path(out)),
        resume=resume,
        arch=arch,
        augment=augment,
    )
    result = train(data_dir, config, val_dir=val_dir, extra_train_dirs=extra_train_dirs, progress=progress)
    if not result.is_main:
        return {"is_main": False}
    synthetic = is_synthetic_dataset(data_dir)
    version = model_version or f"{out.stem}-s{seed}-{datetime.now(UTC):%Y%m%d%H%M}"
    kind = (
        "synthetic CT phantoms from the lesion-review generator" if synthetic else "DeepLesion-layout CT data"
    )
    training_data = (
        f"{result.train_slices} key slices / {result.train_lesions} lesions of "
        f"{', '.join(d.name for d in (data_dir, *extra_train_dirs))} ({kind}); "
        f"train split, noisy rows dropped; seed {seed}"
    )
    from app.detection.train.model import FlipAveraged

    served = FlipAveraged(result.model) if flip_tta else result.model
    export_onnx(served, out, model_version=version, synthetic=synthetic, training_data=training_data)
    write_reference(served, reference_path(out))
    import torch

    # The PyTorch weights, for a warm start (--init); not needed to serve.
    torch.save(result.model.state_dict(), out.with_suffix(".pt"))
    det = Detector.load(out, device="cpu")
    evals = {}
    pool = () if val_dir else extra_train_dirs
    for split, folder, more in (("val", val_dir or data_dir, pool), ("test", data_dir, extra_train_dirs)):
        # The val/test splits of the extra datasets hold patients never trained on: pooled, they make
        # the figures rest on more lesions.
        evals[split] = evaluate_dataset(Path(folder), det, split=split, progress=progress, pool_with=more)
    info: dict[str, Any] = {
        "model_version": version,
        "synthetic": synthetic,
        "training_data": training_data,
        "parameters": result.parameters,
        "train_slices": result.train_slices,
        "train_lesions": result.train_lesions,
        "val_slices": result.val_slices,
        "best_epoch": result.best_epoch,
        "best_val_torch": result.best_val,
        "history": result.history,
        "config": result.config,
        "device": result.device,
        "seconds": result.seconds,
        "command": command,
        "val_result": evals["val"],
        "test_result": evals["test"],
        "out": str(out),
    }
    card_path = card or out.parent / "MODEL_CARD.md"
    write_model_card(card_path, info)
    info["card"] = str(card_path)
    return info
