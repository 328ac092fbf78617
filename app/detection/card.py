"""The model card written next to a trained detector (models/MODEL_CARD.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from app.detection.froc import FP_RATES

SYNTHETIC_WARNING = (
    "**This model was trained on synthetic CT phantoms, not on patient data. It is NOT for clinical use "
    "and its figures say nothing about performance on real CT.** It exists so that the app's detector "
    "features (predictions, evaluation, screening) can be demonstrated and tested without DeepLesion."
)


def _sens_row(label: str, sens: Sequence[float]) -> str:
    return f"| {label} | " + " | ".join(f"{100 * v:.1f}" for v in sens) + " |"


def _froc_table(rows: Sequence[tuple[str, Sequence[float]]]) -> str:
    head = "| split | " + " | ".join(f"{r:g} FP" for r in FP_RATES) + " |"
    sep = "|---" * (len(FP_RATES) + 1) + "|"
    return "\n".join([head, sep, *(_sens_row(label, s) for label, s in rows)])


def _breakdown(result: Mapping[str, Any]) -> str:
    lines = []
    bd = result.get("breakdowns", {})
    for name in ("lesion_type", "size", "slice_interval"):
        for g in bd.get(name, []):
            lines.append(
                f"| {name} | {g['label']} | {g['lesions']} | "
                + " | ".join(f"{100 * v:.1f}" for v in g["sensitivity"])
                + " |"
            )
    head = "| group | value | lesions | " + " | ".join(f"{r:g} FP" for r in FP_RATES) + " |"
    return "\n".join([head, "|---" * (len(FP_RATES) + 3) + "|", *lines])


def _datasets(result: Mapping[str, Any]) -> str:
    """Folder names of the dataset(s) an evaluation pooled."""
    dirs = [result.get("data_dir", ""), *result.get("pooled_with", [])]
    return " + ".join(Path(d).name for d in dirs if d) or "?"


def render_model_card(info: Mapping[str, Any]) -> str:
    """Markdown model card from a training summary (see run_train for the keys)."""
    synthetic = bool(info.get("synthetic", True))
    val = info.get("val_result") or {}
    test = info.get("test_result") or {}
    rows = [
        (
            f"{name} of {_datasets(res)} "
            f"({res.get('images', 0)} key slices, {res.get('lesions', 0)} lesions)",
            res["sensitivity"],
        )
        for name, res in (("val", val), ("test", test))
        if res
    ]
    cfg = info.get("config", {})
    parts = [
        f"# Model card: {info['model_version']}",
        "",
        SYNTHETIC_WARNING if synthetic else "Trained on the data described below. Not a medical device.",
        "",
        "## What it is",
        f"- A CenterNet-style one-stage lesion detector, {info.get('parameters', 0):,} parameters: "
        + (
            "a ResNet-style backbone (basic blocks) to stride 32"
            if cfg.get("arch") == "resnet"
            else "a small conv backbone to stride 32"
        )
        + ", a top-down neck to stride 4, heatmap + log-size + offset heads.",
        "- Decoding is inside the ONNX graph (3x3 max-pool peak picking + TopK 100), "
        "no NonMaxSuppression op."
        + (
            " Test-time flip averaging is in the graph too: the head maps of the input and of its "
            "left-right mirror are averaged before decoding (two passes per prediction)."
            if cfg.get("flip_tta")
            else ""
        ),
        "- Input `image` float32 [1,3,512,512]: the key slice and the slices 2 mm above and below "
        "(interpolated; nearest stored slice when one is missing; the key slice repeated when the interval "
        "is unknown), window -1024..3071 HU to 0..255 minus 50, rescaled to 0.8 mm pixels (longest side "
        "<= 512), padded at the bottom/right with air. Output `detections` [1,100,5]: x1,y1,x2,y2,score in "
        "network-input pixels; `app.detection` maps them back to original pixels.",
        "- The same contract is stored in the file's ONNX metadata (contract 2: every preprocessing step) "
        "and honoured on every load; docs/detector-contract.md says how to bring your own model.",
        "- Each prediction gets a proposed RECIST (long and short axis) from the key slice's HU after the "
        "graph (app.detection.recist); bench/bench_recist.py measures its long-axis error on phantoms.",
        "",
        "## Data",
        f"- Training data: {info.get('training_data', '')}",
        f"- {info.get('train_slices', 0)} training key slices ({info.get('train_lesions', 0)} lesions; "
        "rows with Possibly_noisy = 1 dropped), model selection on the val split "
        f"({info.get('val_slices', 0)} key slices).",
        "- Training boxes are the CSV's Bounding_boxes (RECIST end points padded 5 px)"
        + (
            ", plus, on synthetic data, the boxes of the lesions synth_truth.json lists as deliberately left "
            "out of the CSV but visible on those key slices (so training does not teach the model to ignore "
            "the lesions screening should find; the val/test FROC still scores against the CSV only)."
            if cfg.get("truth_labels")
            else "."
        ),
        "",
        "## Settings",
        f"- seed {cfg.get('seed')}, epochs run {len(info.get('history', []))} of {cfg.get('epochs')} "
        f"(best epoch {info.get('best_epoch')}), batch {cfg.get('batch_size')} random "
        f"{cfg.get('crop')}x{cfg.get('crop')} crops (p={cfg.get('lesion_crop_prob')} centred near a lesion, "
        "random left-right flip"
        + (
            "; domain randomisation: zoom 0.7-1.4x, contrast gain about soft tissue, HU offset, noise, "
            "smooth or sharp kernel, as app.detection.train.loop.randomise draws them"
            if cfg.get("augment")
            else ""
        )
        + f"), AdamW lr {cfg.get('lr')} one-cycle, "
        f"weight decay {cfg.get('weight_decay')}.",
        f"- Trained on {info.get('device', 'cpu')} in {info.get('seconds', 0) / 60:.1f} min "
        f"({cfg.get('threads')} threads); command: `{info.get('command', '')}`.",
        "",
        "## FROC (DeepLesion protocol as the authors' scripts compute it: IoU >= 0.5, noisy lesions "
        "dropped, MULAN's curve reading), sensitivity %, ONNX Runtime",
        _froc_table(rows) if rows else "(not evaluated)",
        "",
    ]
    if test:
        parts += ["### Test split breakdown", _breakdown(test), ""]
    screening = info.get("screening")
    if screening:
        parts += ["## Screening for missed lesions", str(screening), ""]
    parts += [
        "## Training on the real DeepLesion",
        "1. Unzip the NIH images into `DATA/Images_png/` and put `DL_info.csv` in `DATA/`.",
        "2. `pip install -e '.[train]'` (a CUDA build of torch for GPU training: install it from "
        "https://pytorch.org first, then the extra).",
        "3. `lesion-review train DATA --out models/deeplesion.onnx --device cuda --epochs 60 "
        "--max-minutes 600 --num-workers 8`; "
        "`--device auto` uses the GPU when torch sees one. Several GPUs: `torchrun --nproc_per_node 4 -m "
        "app.cli train DATA --out ... --num-workers 8`. A stopped run: the same command with `--resume`. "
        "The training split is Train_Val_Test = 1, "
        "model selection on 2; evaluate on 3 with "
        "`lesion-review evaluate DATA --model models/deeplesion.onnx`.",
        "4. Point the app at it with `LESION_REVIEW_MODEL_PATH=models/deeplesion.onnx`. Expect far lower "
        "figures than on the phantoms: the published 3-slice detectors reach about 80% at 4 FP.",
        "",
    ]
    return "\n".join(parts)


def write_model_card(path: Path, info: Mapping[str, Any]) -> Path:
    """Write the model card markdown."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_model_card(info), encoding="utf-8")
    return path
