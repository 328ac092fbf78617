"""Training of the CenterNet-lite detector on a DeepLesion-layout folder (synthetic or real)."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
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
from app.detection.preprocess import (
    PIXEL_MEAN,
    WINDOW_HI_HU,
    WINDOW_LO_HU,
    Transform,
    preprocess_key_slice,
)
from app.detection.screening import load_hidden_lesions
from app.detection.train.model import STRIDE, CenterNet, CenterNetLite, build_model, count_parameters

log = logging.getLogger(__name__)
CALIBRATION_BATCHES = 32  # training batches whose statistics a warm start from ONNX gives its BatchNorms


@dataclass
class TrainConfig:
    """Everything that determines a training run; stored in the model card."""

    epochs: int = 30
    seed: int = 0
    batch_size: int = 16  # crops per optimizer step over all processes (split across torchrun ranks)
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
    # lite: the shipped CenterNet-lite; resnet: the ResNet-style backbone (app.detection.train.model).
    arch: str = "lite"
    # DataLoader processes that decode the 16-bit PNGs and cut the crops (0: in the training process).
    num_workers: int = 0
    # Mixed precision: auto = float16 autocast with a GradScaler on CUDA, full float32 on the CPU;
    # bf16 = bfloat16 autocast on any device (no scaler needed); off = float32 everywhere.
    amp: str = "auto"
    # Up to this many key slices are preprocessed once and kept in memory (float16, 1.5 MB each); a larger
    # dataset (the real one) is decoded from its PNGs for every crop, in the DataLoader workers.
    cache_slices: int = 3000
    # A checkpoint written after every epoch (optimizer, schedule, scaler, best state, history); "" for none.
    checkpoint: str = ""
    # Continue from `checkpoint` when it exists: the run goes on as if it had never stopped.
    resume: bool = False
    # Domain randomisation of every crop (scale, contrast, noise, kernel; see `randomise`).
    augment: bool = True


# Config fields a resumed run may change: they do not alter what is computed.
RESUMABLE_CHANGES = frozenset(
    {"max_minutes", "device", "threads", "num_workers", "cache_slices", "checkpoint", "resume"}
)
AMP_MODES = ("auto", "bf16", "off")


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


@dataclass(frozen=True)
class SliceRef:
    """A key slice to train or validate on, before decoding: where it is, its targets and its truth."""

    data_dir: Path
    file_name: str
    spacing: tuple[float, float, float]
    boxes: tuple[tuple[float, float, float, float], ...]  # training targets, original pixels
    lesions: tuple[GtLesion, ...]  # evaluation truth (the CSV's rows, noisy ones flagged)


@dataclass
class TrainResult:
    """What a run produced: the best model, its epoch and validation FROC, and the history."""

    model: CenterNet
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
    world_size: int = 1
    is_main: bool = True  # False on the other torchrun ranks, which export nothing


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    """auto: CUDA when torch sees a GPU, else CPU; cuda: refuse when none is there."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "--device cuda requested but torch sees no CUDA GPU (is a CUDA build of torch installed?)"
        )
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}")
    return torch.device("cpu")


def autocast_dtype(device: torch.device, amp: str) -> tuple[torch.dtype | None, bool]:
    """The autocast dtype for this device and mode (None: float32) and whether a GradScaler is needed."""
    if amp not in AMP_MODES:
        raise ValueError(f"unknown mixed-precision mode {amp!r}; use one of {', '.join(AMP_MODES)}")
    if amp == "bf16":
        return torch.bfloat16, False
    if amp == "auto" and device.type == "cuda":
        return torch.float16, True
    return None, False


def slice_refs(
    data_dir: Path,
    records: Sequence[LesionRecord],
    split: str,
    *,
    drop_noisy: bool,
    limit: int = 0,
    extra_boxes: Mapping[str, Sequence[tuple[float, float, float, float]]] | None = None,
) -> list[SliceRef]:
    """The stored key slices of a split (official Train_Val_Test codes); extra_boxes adds unlisted lesions."""
    store = SliceStore(data_dir)
    refs: list[SliceRef] = []
    for file_name, recs in list(group_key_slices(records, split).items())[: limit or None]:
        keep = [r for r in recs if not (drop_noisy and r.possibly_noisy == 1)]
        if not keep or not store.exists(file_name):
            continue
        boxes = [tuple(r.box_px) for r in keep] + list((extra_boxes or {}).get(file_name, ()))
        sp = recs[0].spacing_mm
        refs.append(
            SliceRef(
                Path(data_dir),
                file_name,
                (sp[0], sp[1], sp[2]),
                tuple((float(b[0]), float(b[1]), float(b[2]), float(b[3])) for b in boxes),
                tuple(gt_from_record(r) for r in recs),
            )
        )
    return refs


def load_sample(ref: SliceRef, store: Any | None = None) -> Sample:
    """Decode a key slice's context from its 16-bit PNGs and preprocess it as the detector sees it."""
    x, t = preprocess_key_slice(store or SliceStore(ref.data_dir), ref.file_name, ref.spacing)
    boxes = t.to_input(np.array(ref.boxes, dtype=np.float64).reshape(-1, 4))
    content = (round(t.width * t.scale_x), round(t.height * t.scale_y))
    return Sample(
        ref.file_name,
        x[0].astype(np.float16),
        boxes.astype(np.float32),
        t,
        ref.spacing,
        list(ref.lesions),
        content,
    )


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
    refs = slice_refs(data_dir, records, split, drop_noisy=drop_noisy, limit=limit, extra_boxes=extra_boxes)
    return _decode_all(refs, split, progress)


def _decode_all(refs: Sequence[SliceRef], what: str, progress: bool) -> list[Sample]:
    from tqdm import tqdm

    stores = _Stores()
    return [
        load_sample(ref, stores.get(ref.data_dir))
        for ref in tqdm(refs, desc=f"load {what}", unit="slice", disable=not progress)
    ]


class _Stores:
    """One SliceStore per dataset folder, opened on first use (also inside each DataLoader worker)."""

    def __init__(self) -> None:
        self._open: dict[Path, SliceStore] = {}

    def get(self, data_dir: Path) -> SliceStore:
        if data_dir not in self._open:
            self._open[data_dir] = SliceStore(data_dir)
        return self._open[data_dir]


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


# Domain randomisation: what changes between scanners, protocols and patients, drawn per crop. Input units
# are the network's (0..255 over WINDOW_LO_HU..WINDOW_HI_HU, minus PIXEL_MEAN), so HU figures are converted.
UNITS_PER_HU = 255.0 / (WINDOW_HI_HU - WINDOW_LO_HU)
SCALE_RANGE = (0.7, 1.4)  # zoom of the crop: lesion sizes beyond the phantoms' and other fields of view
SCALE_PROB = 0.5
SOFT_TISSUE_HU = 40.0  # contrast gain pivots here, so enhancement varies but soft tissue stays put
GAIN_RANGE = (0.85, 1.15)  # contrast phases and enhancement
OFFSET_SD_HU = 15.0  # calibration drift between scanners
NOISE_SD_HU = (0.0, 18.0)  # dose
NOISE_PROB = 0.5
BLUR_SIGMA_PX = (0.4, 1.1)  # smooth reconstruction kernels
BLUR_PROB = 0.25
SHARPEN_GAIN = (0.3, 0.9)  # sharp (bone, lung) kernels
SHARPEN_PROB = 0.2


def _hu_units(hu: float) -> float:
    """The network-input value of an HU value."""
    return (hu - WINDOW_LO_HU) * UNITS_PER_HU - PIXEL_MEAN


def randomise(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast, calibration, noise and kernel of a crop (channels x H x W, input units) drawn anew."""
    from scipy.ndimage import gaussian_filter

    pivot = _hu_units(SOFT_TISSUE_HU)
    gain = rng.uniform(*GAIN_RANGE)
    out = (patch - pivot) * gain + pivot + rng.normal(0.0, OFFSET_SD_HU) * UNITS_PER_HU
    if rng.random() < BLUR_PROB:
        out = gaussian_filter(out, sigma=(0.0, *(2 * [rng.uniform(*BLUR_SIGMA_PX)])))
    elif rng.random() < SHARPEN_PROB:
        out = out + rng.uniform(*SHARPEN_GAIN) * (out - gaussian_filter(out, sigma=(0.0, 1.0, 1.0)))
    if rng.random() < NOISE_PROB:
        sd = rng.uniform(*NOISE_SD_HU) * UNITS_PER_HU
        out = out + rng.normal(0.0, sd, size=out.shape)
    # Air and padding stay at the padding value, as the runtime pads them.
    return np.maximum(out, _hu_units(WINDOW_LO_HU)).astype(np.float32)


def random_crop(
    sample: Sample, crop: int, rng: np.random.Generator, lesion_prob: float, augment: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A crop x crop window of the input (float32) and its boxes, biased toward lesions, randomly flipped.

    With `augment`, the window is zoomed (SCALE_RANGE) and the crop randomised (`randomise`).
    """
    from scipy.ndimage import zoom

    img = sample.image
    size = img.shape[-1]
    cw, ch = sample.content
    win = crop
    if augment and rng.random() < SCALE_PROB:
        scale = math.exp(rng.uniform(math.log(SCALE_RANGE[0]), math.log(SCALE_RANGE[1])))
        win = min(size, int(round(crop / scale)))
    max_x, max_y = size - win, size - win
    if len(sample.boxes) and rng.random() < lesion_prob:
        b = sample.boxes[rng.integers(len(sample.boxes))]
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        x0 = int(np.clip(cx - rng.uniform(0.15, 0.85) * win, 0, max_x))
        y0 = int(np.clip(cy - rng.uniform(0.15, 0.85) * win, 0, max_y))
    else:
        x0 = int(rng.integers(0, max(1, min(max_x, cw - win // 2)) + 1))
        y0 = int(rng.integers(0, max(1, min(max_y, ch - win // 2)) + 1))
    patch = img[:, y0 : y0 + win, x0 : x0 + win].astype(np.float32)
    boxes = sample.boxes - np.array([x0, y0, x0, y0], dtype=np.float32)
    if win != crop:
        patch = zoom(patch, (1.0, crop / win, crop / win), order=1, grid_mode=True, mode="nearest")
        boxes = boxes * np.float32(crop / win)
    if rng.random() < 0.5:
        patch = patch[:, :, ::-1].copy()
        boxes = boxes.copy()
        boxes[:, [0, 2]] = (crop - 1) - boxes[:, [2, 0]]
    if augment:
        patch = randomise(patch, rng)
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
    model: CenterNet, samples: Sequence[Sample], device: torch.device, batch: int = 4
) -> list[ImageCase]:
    """Run the model (graph decoding included) on full inputs; boxes mapped back to original pixels."""
    model.eval()
    cases: list[ImageCase] = []
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            chunk = samples[i : i + batch]
            x = torch.from_numpy(np.stack([s.image.astype(np.float32) for s in chunk])).to(device)
            rows = model(x).float().cpu().numpy()
            for s, r in zip(chunk, rows, strict=True):
                cases.append(_case(s.file_name, s.lesions, s.transform, r))
    return cases


def _case(file_name: str, lesions: Sequence[GtLesion], transform: Transform, rows: np.ndarray) -> ImageCase:
    dets = decode_output(rows, transform, threshold=0.0)
    boxes = np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4)
    scores = np.array([d.score for d in dets], dtype=np.float64)
    return ImageCase(file_name, list(lesions), boxes, scores)


class CropDataset(torch.utils.data.Dataset[tuple[torch.Tensor, ...]]):
    """Training crops and their CenterNet targets; item (slice, epoch, draw) always gives the same crop."""

    def __init__(self, refs: Sequence[SliceRef], config: TrainConfig, cache: Sequence[Sample] | None) -> None:
        self.refs = list(refs)
        self.config = config
        self.cache = cache
        self._stores = _Stores()

    def __len__(self) -> int:
        return len(self.refs)

    def sample(self, index: int) -> Sample:
        """The preprocessed key slice: from memory, or decoded from its PNGs now."""
        if self.cache is not None:
            return self.cache[index]
        ref = self.refs[index]
        return load_sample(ref, self._stores.get(ref.data_dir))

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[torch.Tensor, ...]:
        index, epoch, draw = item
        # Seeded by the draw itself: the same crops whatever the workers, ranks or restarts.
        rng = np.random.default_rng([self.config.seed, epoch, draw])
        patch, boxes = random_crop(
            self.sample(index), self.config.crop, rng, self.config.lesion_crop_prob, self.config.augment
        )
        heat, reg, mask = make_targets(boxes, self.config.crop // STRIDE)
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (patch, heat, reg, mask))


class DrawSampler(torch.utils.data.Sampler[tuple[int, int, int]]):
    """The epoch's random draws of key slices (with replacement), this rank's share of them.

    The role of a DistributedSampler, but over a fixed number of seeded draws: one process and N torchrun
    ranks see the same crops in total, and a resumed run sees the ones it would have seen.
    """

    def __init__(self, slices: int, draws: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.slices, self.draws, self.seed, self.rank, self.world = slices, draws, seed, rank, world
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's slices next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(range(self.rank, self.draws, self.world))

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        picks = np.random.default_rng([self.seed, self.epoch]).integers(0, self.slices, self.draws)
        for k in range(self.rank, self.draws, self.world):
            yield int(picks[k]), self.epoch, k


class _FullDataset(torch.utils.data.Dataset[tuple[int, torch.Tensor, Transform]]):
    """Whole network inputs of the validation key slices and their transforms, decoded in the workers."""

    def __init__(self, refs: Sequence[SliceRef]) -> None:
        self.refs = list(refs)
        self._stores = _Stores()

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, Transform]:
        ref = self.refs[index]
        x, t = preprocess_key_slice(self._stores.get(ref.data_dir), ref.file_name, ref.spacing)
        return index, torch.from_numpy(x[0]), t


def _collate_full(
    batch: list[tuple[int, torch.Tensor, Transform]],
) -> tuple[list[int], torch.Tensor, list[Any]]:
    return [b[0] for b in batch], torch.stack([b[1] for b in batch]), [b[2] for b in batch]


def predict_refs(
    model: CenterNet, refs: Sequence[SliceRef], device: torch.device, workers: int, batch: int = 4
) -> list[ImageCase]:
    """Like predict_samples for key slices not kept in memory: decoded by `workers` DataLoader processes."""
    from torch.utils.data import DataLoader

    model.eval()
    cases: list[ImageCase] = []
    loader = DataLoader(_FullDataset(refs), batch_size=batch, num_workers=workers, collate_fn=_collate_full)
    with torch.no_grad():
        for idx, x, transforms in loader:
            rows = model(x.to(device)).float().cpu().numpy()
            for i, t, r in zip(idx, transforms, rows, strict=True):
                cases.append(_case(refs[i].file_name, refs[i].lesions, t, r))
    return cases


class _Maps(torch.nn.Module):
    """The model's raw head maps as its forward(), which DistributedDataParallel hooks."""

    def __init__(self, model: CenterNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_maps(x)


def _calibration_batches(dataset: CropDataset, config: TrainConfig) -> Iterator[torch.Tensor]:
    # Epoch 0 draws, so that a warm start trains on the same crops as a cold one.
    draws = CALIBRATION_BATCHES * config.batch_size
    picks = np.random.default_rng([config.seed, 0]).integers(0, len(dataset), draws)
    for b in range(CALIBRATION_BATCHES):
        idx = range(b * config.batch_size, (b + 1) * config.batch_size)
        yield torch.stack([dataset[(int(picks[k]), 0, k)][0] for k in idx])


@dataclass
class _Dist:
    """This process's place in a torchrun job (world 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_pref: str) -> _Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = device_pref in ("auto", "cuda") and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return _Dist(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def _broadcast_flag(flag: bool, dist_info: _Dist, device: torch.device) -> bool:
    """Rank 0's decision (stop now), shared with every rank."""
    if dist_info.world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write the checkpoint whole or not at all (a run killed while saving keeps the previous one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    changed = sorted(
        k for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES and saved.get(k, v) != v
    )
    if changed:
        raise ValueError(
            f"{path} was written by a run with other settings ({', '.join(changed)}); resume with the same "
            "settings or start a new checkpoint"
        )


def train(
    data_dir: Path,
    config: TrainConfig,
    *,
    val_dir: Path | None = None,
    extra_train_dirs: Sequence[Path] = (),
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train on the train split (noisy rows dropped); select the epoch with the best official val FROC."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    started = time.perf_counter()
    dist_info = _init_distributed(config.device)
    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, config.threads))
    device = pick_device(config.device, dist_info.local_rank)
    amp_dtype, use_scaler = autocast_dtype(device, config.amp)
    if config.batch_size % dist_info.world:
        raise ValueError(f"batch size {config.batch_size} must split evenly over {dist_info.world} processes")
    show = progress and dist_info.main
    records = read_dl_info(data_dir / "DL_info.csv")
    train_refs = slice_refs(
        data_dir,
        records,
        "train",
        drop_noisy=True,
        limit=config.max_train_slices,
        extra_boxes=truth_boxes(data_dir) if config.truth_labels else None,
    )
    for extra in extra_train_dirs:
        train_refs += slice_refs(
            extra,
            read_dl_info(extra / "DL_info.csv"),
            "train",
            drop_noisy=True,
            extra_boxes=truth_boxes(extra) if config.truth_labels else None,
        )
    # Without --val-dir, the val splits of every training dataset select the epoch (more lesions, less luck).
    val_dirs = [val_dir] if val_dir is not None else [data_dir, *extra_train_dirs]
    val_refs: list[SliceRef] = []
    for vdir in val_dirs:
        val_records = records if vdir == data_dir else read_dl_info(vdir / "DL_info.csv")
        val_refs += slice_refs(vdir, val_records, "val", drop_noisy=False)
    if not train_refs:
        raise ValueError(f"no stored training key slices (Train_Val_Test = 1) in {data_dir}")
    cached = len(train_refs) + len(val_refs) <= config.cache_slices
    train_cache = _decode_all(train_refs, "train", show) if cached else None
    val_cache = _decode_all(val_refs, "val", show) if cached and dist_info.main else None
    log.info(
        "training on %d key slices, validating on %d (%s), %d process(es) on %s, autocast %s",
        len(train_refs),
        len(val_refs),
        "kept in memory" if cached else f"decoded by {config.num_workers} workers",
        dist_info.world,
        device,
        amp_dtype,
    )
    dataset = CropDataset(train_refs, config, train_cache)

    model = build_model(config.arch)
    if config.init.endswith(".onnx"):
        if not isinstance(model, CenterNetLite):
            raise ValueError("a warm start from an .onnx graph needs --arch lite (use a .pt for resnet)")
        from app.detection.train.warmstart import calibrate_batchnorm, load_onnx_weights

        load_onnx_weights(model, Path(config.init))
        calibrate_batchnorm(model, _calibration_batches(dataset, config))
        log.info("warm start from the exported graph %s", config.init)
    elif config.init:
        model.load_state_dict(torch.load(config.init, map_location="cpu", weights_only=True))
        log.info("warm start from %s", config.init)
    model = model.to(device)
    net: torch.nn.Module = _Maps(model)
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(net, device_ids=ids)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    iters = config.iters_per_epoch or max(1, math.ceil(len(train_refs) / config.batch_size))
    total = iters * config.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, pct_start=0.1)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    sampler = DrawSampler(
        len(train_refs), iters * config.batch_size, config.seed, dist_info.rank, dist_info.world
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size // dist_info.world,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.num_workers > 0,
    )
    best_state: dict[str, Any] | None = None
    best_key = (-1.0, -1.0)
    best_epoch, best_val = 0, [0.0] * len(FP_RATES)
    history: list[dict[str, Any]] = []
    first_epoch, spent = 1, 0.0
    ckpt = Path(config.checkpoint) if config.checkpoint else None
    if config.resume and (ckpt is None or not ckpt.is_file()):
        log.warning("nothing to resume (no checkpoint at %s): starting from the first epoch", ckpt)
    if ckpt is not None and config.resume and ckpt.is_file():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        _check_resumable(saved["config"], config, ckpt)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        if saved["scaler"] and use_scaler:  # empty when written without a scaler (a CPU run resumed on CUDA)
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["torch_rng"])
        best_state, best_key = saved["best_state"], tuple(saved["best_key"])
        best_epoch, best_val, history = saved["best_epoch"], saved["best_val"], saved["history"]
        first_epoch, spent = saved["epoch"] + 1, float(saved["seconds"])
        log.info("resumed from %s after epoch %d", ckpt, saved["epoch"])
    deadline = started - spent + config.max_minutes * 60
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        sampler.set_epoch(epoch)
        losses = []
        epoch_start = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", unit="it", disable=not show)
        for x, heat, reg, mask in bar:
            x, heat, reg, mask = (t.to(device, non_blocking=True) for t in (x, heat, reg, mask))
            with (
                torch.autocast(device.type, dtype=amp_dtype)
                if amp_dtype is not None
                else contextlib.nullcontext()
            ):
                maps = net(x)
            # The loss in float32: the focal terms' logs underflow in float16.
            loss = center_loss(maps.float(), heat, reg, mask)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(float(loss.item()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        crops_per_s = iters * config.batch_size / max(time.perf_counter() - epoch_start, 1e-9)
        entry: dict[str, Any] = {
            "epoch": epoch,
            "loss": round(float(np.mean(losses)), 4),
            "crops_per_s": round(crops_per_s, 1),
        }
        if dist_info.main:
            if val_refs:
                cases = (
                    predict_samples(model, val_cache, device)
                    if val_cache is not None
                    else predict_refs(model, val_refs, device, config.num_workers)
                )
                sens = froc_curve(cases).sens_at(FP_RATES)
                entry["val_sensitivity"] = [round(v, 4) for v in sens]
                key = (sens[FP_RATES.index(4.0)], float(np.mean(sens)))
            else:
                sens, key = [0.0] * len(FP_RATES), (0.0, -float(np.mean(losses)))
            entry["seconds"] = round(time.perf_counter() - started + spent, 1)
            history.append(entry)
            log.info("epoch %d: %s", epoch, entry)
            if show:
                tqdm.write(f"epoch {epoch}: {entry}")
            if key >= best_key:
                best_key, best_epoch, best_val = key, epoch, sens
                best_state = copy.deepcopy(model.state_dict())
            if ckpt is not None:
                _save_checkpoint(
                    ckpt,
                    {
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict(),
                        "torch_rng": torch.get_rng_state(),
                        "best_state": best_state,
                        "best_key": list(best_key),
                        "best_epoch": best_epoch,
                        "best_val": best_val,
                        "history": history,
                        "config": asdict(config),
                        "seconds": time.perf_counter() - started + spent,
                    },
                )
            if on_epoch is not None:
                on_epoch(entry)
        out_of_time = time.perf_counter() > deadline and epoch < config.epochs
        if _broadcast_flag(out_of_time, dist_info, device):
            log.warning("time budget of %.0f min reached after epoch %d; stopping", config.max_minutes, epoch)
            break
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval().cpu()
    return TrainResult(
        model=model,
        best_epoch=best_epoch,
        best_val=[round(v, 4) for v in best_val],
        history=history,
        train_slices=len(train_refs),
        train_lesions=int(sum(len(r.boxes) for r in train_refs)),
        val_slices=len(val_refs),
        seconds=round(time.perf_counter() - started + spent, 1),
        parameters=count_parameters(model),
        config=asdict(config),
        device=str(device),
        world_size=dist_info.world,
        is_main=dist_info.main,
    )
