"""Training of the CenterNet-lite detector on a DeepLesion-layout folder (synthetic or real)."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.deeplesion.csvio import read_dl_info
from app.deeplesion.schema import LesionRecord
from app.deeplesion.store import SliceStore
from app.detection.decode import decode_output
from app.detection.froc import FP_RATES, GtLesion, ImageCase, froc_curve
from app.detection.pipeline import group_key_slices, gt_from_record
from app.detection.preprocess import Transform, preprocess_key_slice
from app.detection.screening import load_hidden_lesions
from app.detection.train.model import STRIDE, CenterNetLite, build_model, count_parameters

log = logging.getLogger(__name__)
CALIBRATION_BATCHES = 32  # training batches whose statistics a warm start from ONNX gives its BatchNorms


@dataclass
class TrainConfig:
    """Everything that determines a training run; stored in the model card."""

    epochs: int = 30
    seed: int = 0
    batch_size: int = 16
    crop: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    lesion_crop_prob: float = 0.8
    iters_per_epoch: int = 0  # 0: one crop per training key slice per epoch
    max_minutes: float = 25.0
    device: str = "auto"
    threads: int = 2
    max_train_slices: int = 0  # 0: all
    init: str = ""  # warm start from a .pt state dict or an exported .onnx graph; "" for a fresh model
    # Synthetic data only: also label the lesions synth_truth.json lists as left out of DL_info.csv, so
    # that training does not teach the detector to ignore the very lesions screening should find.
    truth_labels: bool = True
    # Export the graph with test-time left-right flip averaging (two passes; 2x inference cost).
    flip_tta: bool = True


@dataclass
class Sample:
    """One preprocessed key slice: network input (float16 to halve memory), boxes in input pixels."""

    file_name: str
    image: np.ndarray
    boxes: np.ndarray
    transform: Transform
    spacing: tuple[float, float, float]
    lesions: list[GtLesion]
    content: tuple[int, int]  # width, height of the image inside the 512 input


@dataclass
class TrainResult:
    """What a run produced: the best model, its epoch and validation FROC, and the history."""

    model: CenterNetLite
    best_epoch: int
    best_val: list[float]
    history: list[dict[str, Any]] = field(default_factory=list)
    train_slices: int = 0
    train_lesions: int = 0
    val_slices: int = 0
    seconds: float = 0.0
    parameters: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"


def pick_device(device: str) -> torch.device:
    """auto: CUDA when torch sees a GPU, else CPU; cuda: refuse when none is there."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "--device cuda requested but torch sees no CUDA GPU (is a CUDA build of torch installed?)"
        )
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}")
    return torch.device("cpu")


def load_samples(
    data_dir: Path,
    records: Sequence[LesionRecord],
    split: str,
    *,
    drop_noisy: bool,
    limit: int = 0,
    progress: bool = True,
    extra_boxes: Mapping[str, Sequence[tuple[float, float, float, float]]] | None = None,
) -> list[Sample]:
    """Preprocess every stored key slice of a split once; extra_boxes adds unlisted lesions as targets."""
    from tqdm import tqdm

    store = SliceStore(data_dir)
    groups = group_key_slices(records, split)
    items = list(groups.items())[: limit or None]
    samples: list[Sample] = []
    for file_name, recs in tqdm(items, desc=f"load {split}", unit="slice", disable=not progress):
        keep = [r for r in recs if not (drop_noisy and r.possibly_noisy == 1)]
        if not keep or not store.exists(file_name):
            continue
        sp = recs[0].spacing_mm
        x, t = preprocess_key_slice(store, file_name, sp)
        known = [r.box_px for r in keep] + list((extra_boxes or {}).get(file_name, ()))
        boxes = t.to_input(np.array(known, dtype=np.float64))
        content = (round(t.width * t.scale_x), round(t.height * t.scale_y))
        samples.append(
            Sample(
                file_name,
                x[0].astype(np.float16),
                boxes.astype(np.float32),
                t,
                (sp[0], sp[1], sp[2]),
                [gt_from_record(r) for r in recs],
                content,
            )
        )
    return samples


def truth_boxes(data_dir: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """Boxes of the lesions synth_truth.json lists as unannotated, per key slice; empty for real data."""
    out: dict[str, list[tuple[float, float, float, float]]] = {}
    for hidden in load_hidden_lesions(data_dir) or []:
        out.setdefault(hidden.file_name, []).append(hidden.box)
    return out


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: the largest centre shift keeping IoU >= min_overlap with the true box."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def make_targets(boxes: np.ndarray, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmap [1,S,S], regression [4,S,S] (log w, log h, offset x, offset y) and its mask [S,S]."""
    heat = np.zeros((1, out_size, out_size), dtype=np.float32)
    reg = np.zeros((4, out_size, out_size), dtype=np.float32)
    mask = np.zeros((out_size, out_size), dtype=np.float32)
    yy, xx = np.mgrid[0:out_size, 0:out_size].astype(np.float32)
    for x1, y1, x2, y2 in boxes:
        w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
        ix, iy = int(math.floor(cx)), int(math.floor(cy))
        if not (0 <= ix < out_size and 0 <= iy < out_size):
            continue
        radius = max(0.0, gaussian_radius(h / STRIDE, w / STRIDE))
        sigma = max((2 * radius + 1) / 6, 0.5)
        g = np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sigma**2))
        np.maximum(heat[0], g, out=heat[0])
        heat[0, iy, ix] = 1.0
        reg[:, iy, ix] = (math.log(w / STRIDE), math.log(h / STRIDE), cx - ix, cy - iy)
        mask[iy, ix] = 1.0
    return heat, reg, mask


def random_crop(
    sample: Sample, crop: int, rng: np.random.Generator, lesion_prob: float
) -> tuple[np.ndarray, np.ndarray]:
    """A crop x crop window of the input (float32) and its boxes, biased toward lesions, randomly flipped."""
    img = sample.image
    size = img.shape[-1]
    cw, ch = sample.content
    max_x, max_y = size - crop, size - crop
    if len(sample.boxes) and rng.random() < lesion_prob:
        b = sample.boxes[rng.integers(len(sample.boxes))]
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        x0 = int(np.clip(cx - rng.uniform(0.15, 0.85) * crop, 0, max_x))
        y0 = int(np.clip(cy - rng.uniform(0.15, 0.85) * crop, 0, max_y))
    else:
        x0 = int(rng.integers(0, max(1, min(max_x, cw - crop // 2)) + 1))
        y0 = int(rng.integers(0, max(1, min(max_y, ch - crop // 2)) + 1))
    patch = img[:, y0 : y0 + crop, x0 : x0 + crop].astype(np.float32)
    boxes = sample.boxes - np.array([x0, y0, x0, y0], dtype=np.float32)
    if rng.random() < 0.5:
        patch = patch[:, :, ::-1].copy()
        boxes = boxes.copy()
        boxes[:, [0, 2]] = (crop - 1) - boxes[:, [2, 0]]
    return patch, boxes


def center_loss(
    maps: torch.Tensor, heat: torch.Tensor, reg: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """CenterNet focal loss on the heatmap plus L1 on log size and offset at the lesion centres."""
    pred = torch.sigmoid(maps[:, 0:1]).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    neg_w = torch.pow(1 - heat, 4)
    pos_loss = torch.log(pred) * torch.pow(1 - pred, 2) * pos
    neg_loss = torch.log(1 - pred) * torch.pow(pred, 2) * neg_w * (1 - pos)
    n = pos.sum().clamp(min=1.0)
    focal = -(pos_loss.sum() + neg_loss.sum()) / n
    m = mask.unsqueeze(1)
    reg_loss = (torch.abs(maps[:, 1:5] - reg) * m).sum() / (m.sum() * 4).clamp(min=1.0)
    return focal + reg_loss


def predict_samples(
    model: CenterNetLite, samples: Sequence[Sample], device: torch.device, batch: int = 4
) -> list[ImageCase]:
    """Run the model (graph decoding included) on full inputs; boxes mapped back to original pixels."""
    model.eval()
    cases: list[ImageCase] = []
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            chunk = samples[i : i + batch]
            x = torch.from_numpy(np.stack([s.image.astype(np.float32) for s in chunk])).to(device)
            rows = model(x).cpu().numpy()
            for s, r in zip(chunk, rows, strict=True):
                dets = decode_output(r, s.transform, threshold=0.0)
                boxes = np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4)
                scores = np.array([d.score for d in dets], dtype=np.float64)
                cases.append(ImageCase(s.file_name, s.lesions, boxes, scores))
    return cases


def _calibration_batches(samples: Sequence[Sample], config: TrainConfig) -> Iterator[torch.Tensor]:
    # Its own generator, so that a warm start draws the same training crops as a cold one.
    rng = np.random.default_rng(config.seed + 1)
    for _ in range(CALIBRATION_BATCHES):
        picks = rng.integers(0, len(samples), config.batch_size)
        crops = [random_crop(samples[i], config.crop, rng, config.lesion_crop_prob)[0] for i in picks]
        yield torch.from_numpy(np.stack(crops))


def train(
    data_dir: Path,
    config: TrainConfig,
    *,
    val_dir: Path | None = None,
    extra_train_dirs: Sequence[Path] = (),
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train on the train split (noisy rows dropped); select the epoch with the best val sensitivity."""
    from tqdm import tqdm

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    torch.set_num_threads(max(1, config.threads))
    device = pick_device(config.device)
    records = read_dl_info(data_dir / "DL_info.csv")
    train_samples = load_samples(
        data_dir,
        records,
        "train",
        drop_noisy=True,
        limit=config.max_train_slices,
        progress=progress,
        extra_boxes=truth_boxes(data_dir) if config.truth_labels else None,
    )
    for extra in extra_train_dirs:
        train_samples += load_samples(
            extra,
            read_dl_info(extra / "DL_info.csv"),
            "train",
            drop_noisy=True,
            progress=progress,
            extra_boxes=truth_boxes(extra) if config.truth_labels else None,
        )
    # Without --val-dir, the val splits of every training dataset select the epoch (more lesions, less luck).
    val_dirs = [val_dir] if val_dir is not None else [data_dir, *extra_train_dirs]
    val_samples = []
    for vdir in val_dirs:
        val_records = records if vdir == data_dir else read_dl_info(vdir / "DL_info.csv")
        val_samples += load_samples(vdir, val_records, "val", drop_noisy=False, progress=progress)
    if not train_samples:
        raise ValueError(f"no stored training key slices (Train_Val_Test = 1) in {data_dir}")
    log.info("training on %d key slices, validating on %d", len(train_samples), len(val_samples))

    model = build_model()
    if config.init.endswith(".onnx"):
        from app.detection.train.warmstart import calibrate_batchnorm, load_onnx_weights

        load_onnx_weights(model, Path(config.init))
        calibrate_batchnorm(model, _calibration_batches(train_samples, config))
        log.info("warm start from the exported graph %s", config.init)
    elif config.init:
        model.load_state_dict(torch.load(config.init, map_location="cpu", weights_only=True))
        log.info("warm start from %s", config.init)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    iters = config.iters_per_epoch or max(1, math.ceil(len(train_samples) / config.batch_size))
    total = iters * config.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, pct_start=0.1)
    out_size = config.crop // STRIDE
    best_state: dict[str, Any] | None = None
    best_key = (-1.0, -1.0)
    best_epoch, best_val = 0, [0.0] * len(FP_RATES)
    history: list[dict[str, Any]] = []
    deadline = started + config.max_minutes * 60
    for epoch in range(1, config.epochs + 1):
        model.train()
        losses = []
        bar = tqdm(range(iters), desc=f"epoch {epoch}/{config.epochs}", unit="it", disable=not progress)
        for _ in bar:
            xs, hs, rs, ms = [], [], [], []
            for idx in rng.integers(0, len(train_samples), config.batch_size):
                patch, boxes = random_crop(train_samples[idx], config.crop, rng, config.lesion_crop_prob)
                h, r, m = make_targets(boxes, out_size)
                xs.append(patch)
                hs.append(h)
                rs.append(r)
                ms.append(m)
            x = torch.from_numpy(np.stack(xs)).to(device)
            maps = model.forward_maps(x)
            loss = center_loss(
                maps,
                torch.from_numpy(np.stack(hs)).to(device),
                torch.from_numpy(np.stack(rs)).to(device),
                torch.from_numpy(np.stack(ms)).to(device),
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            losses.append(float(loss.item()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        entry: dict[str, Any] = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4)}
        if val_samples:
            sens = froc_curve(predict_samples(model, val_samples, device)).sens_at(FP_RATES)
            entry["val_sensitivity"] = [round(v, 4) for v in sens]
            key = (sens[FP_RATES.index(4.0)], float(np.mean(sens)))
        else:
            sens, key = [0.0] * len(FP_RATES), (0.0, -float(np.mean(losses)))
        entry["seconds"] = round(time.perf_counter() - started, 1)
        history.append(entry)
        log.info("epoch %d: %s", epoch, entry)
        if on_epoch is not None:
            on_epoch(entry)
        if key >= best_key:
            best_key, best_epoch, best_val = key, epoch, sens
            best_state = copy.deepcopy(model.state_dict())
        if time.perf_counter() > deadline and epoch < config.epochs:
            log.warning("time budget of %.0f min reached after epoch %d; stopping", config.max_minutes, epoch)
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval().cpu()
    return TrainResult(
        model=model,
        best_epoch=best_epoch,
        best_val=[round(v, 4) for v in best_val],
        history=history,
        train_slices=len(train_samples),
        train_lesions=int(sum(len(s.boxes) for s in train_samples)),
        val_slices=len(val_samples),
        seconds=round(time.perf_counter() - started, 1),
        parameters=count_parameters(model),
        config=asdict(config),
        device=str(device),
    )
