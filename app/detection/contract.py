"""The detector's I/O contract, stored in the ONNX file's metadata_props and checked on every load.

Contract "2" states the whole preprocessing a model expects (see Preprocessing, and
docs/detector-contract.md, "Bring your own model"); the runtime honours it. Contract "1" files (the models
shipped before it) name only part of it; the rest is the recipe they were all trained with (the defaults).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from app.detection.errors import ModelLoadError
from app.detection.preprocess import (
    BORDER_CROPS,
    BOX_MAPPINGS,
    DEFAULT_PREPROCESSING,
    INPUT_NAME,
    INPUT_SHAPE,
    RESIZES,
    Preprocessing,
)
from app.detection.screening import Calibration

CONTRACT_KEY = "lesion_review.contract"
CONTRACT_VERSION = "2"
CONTRACT_VERSIONS: tuple[str, ...] = ("1", "2")
OUTPUT_NAME = "detections"
OUTPUT_FORMAT = "float32 [1,K,5] rows x1,y1,x2,y2,score in network-input pixels, sorted by score desc"
FREE_FIELDS: tuple[str, ...] = ("model_version", "synthetic", "training_data")
# Optional: the score calibration and the missed-lesion queue threshold chosen on val (screen-study).
CALIBRATION_KEY = "score_calibration"
SCREENING_THRESHOLD_KEY = "screening_threshold"
# What a contract-1 file had to carry; everything else of its preprocessing is the default recipe.
V1_FIELDS: tuple[str, ...] = (
    "input_name",
    "input_shape",
    "input_window_hu",
    "input_pixel_mean",
    "input_spacing_mm",
    "input_slice_gap_mm",
    "output_name",
    "output_format",
)
V2_FIELDS: tuple[str, ...] = (
    "input_name",
    "input_shape",
    "input_slice_offsets_mm",
    "input_window_hu",
    "input_value_max",
    "input_pixel_mean",
    "input_pad_value",
    "input_spacing_mm",
    "input_max_size",
    "input_border_crop",
    "input_resize",
    "output_box_mapping",
    "output_name",
    "output_format",
)


def _csv(values: tuple[float, ...] | tuple[int, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


def preprocessing_metadata(pre: Preprocessing = DEFAULT_PREPROCESSING) -> dict[str, str]:
    """The contract-2 keys that state `pre`."""
    return {
        CONTRACT_KEY: CONTRACT_VERSION,
        "input_name": pre.input_name,
        "input_shape": _csv(pre.input_shape),
        "input_slice_offsets_mm": _csv(pre.slice_offsets_mm),
        "input_window_hu": _csv(pre.window_hu),
        "input_value_max": f"{pre.value_max:g}",
        "input_pixel_mean": f"{pre.pixel_mean:g}",
        "input_pad_value": f"{pre.pad_value:g}",
        "input_spacing_mm": f"{pre.spacing_mm:g}",
        "input_max_size": str(pre.max_size),
        "input_border_crop": pre.border_crop,
        "input_resize": pre.resize,
        "output_box_mapping": pre.box_mapping,
        "output_name": OUTPUT_NAME,
        "output_format": OUTPUT_FORMAT,
    }


def contract_metadata(
    *,
    model_version: str,
    synthetic: bool,
    training_data: str,
    preprocessing: Preprocessing = DEFAULT_PREPROCESSING,
) -> dict[str, str]:
    """The full metadata_props dict for a model that follows this contract."""
    if not model_version.strip():
        raise ValueError("model_version must not be empty")
    return {
        **preprocessing_metadata(preprocessing),
        "model_version": model_version,
        "synthetic": "true" if synthetic else "false",
        "training_data": training_data,
    }


class _Reader:
    """Parses metadata values, collecting every problem instead of stopping at the first."""

    def __init__(self, meta: Mapping[str, str]) -> None:
        self.meta = meta
        self.problems: list[str] = []

    def get(self, key: str, parse: Callable[[str], Any], default: Any) -> Any:
        raw = self.meta.get(key)
        if raw is None:
            return default
        try:
            return parse(raw.strip())
        except (ValueError, TypeError) as exc:
            self.problems.append(f"metadata '{key}' is {raw!r}: {exc}")
            return default


def _numbers(count: int | None) -> Callable[[str], tuple[float, ...]]:
    def parse(raw: str) -> tuple[float, ...]:
        values = tuple(float(v) for v in raw.replace(" ", "").split(",") if v != "")
        if count is not None and len(values) != count:
            raise ValueError(f"expected {count} comma-separated numbers")
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError("expected finite comma-separated numbers")
        return values

    return parse


def _number(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _shape(raw: str) -> tuple[int, int, int, int]:
    dims = tuple(int(v) for v in raw.replace(" ", "").split(","))
    if len(dims) != 4:
        raise ValueError("expected 4 comma-separated sizes N,C,H,W")
    return (dims[0], dims[1], dims[2], dims[3])


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"not supported; use one of {', '.join(options)}")
        return raw

    return parse


def preprocessing_from_metadata(meta: Mapping[str, str], source: str) -> Preprocessing:
    """The preprocessing a model's metadata asks for; ModelLoadError names every missing or bad field."""
    problems: list[str] = []
    version = meta.get(CONTRACT_KEY)
    if version is None:
        problems.append(f"missing metadata '{CONTRACT_KEY}' (expected one of {', '.join(CONTRACT_VERSIONS)})")
    elif version.strip() not in CONTRACT_VERSIONS:
        problems.append(
            f"metadata '{CONTRACT_KEY}' is {version!r}; this app reads {', '.join(CONTRACT_VERSIONS)}"
        )
    required = V1_FIELDS if version is not None and version.strip() == "1" else V2_FIELDS
    problems += [f"missing metadata '{key}'" for key in required if key not in meta]
    problems += [f"missing metadata '{key}'" for key in FREE_FIELDS if not meta.get(key, "").strip()]
    if meta.get("synthetic", "true") not in ("true", "false"):
        problems.append(f"metadata 'synthetic' must be 'true' or 'false', got {meta.get('synthetic')!r}")
    if meta.get("output_name", OUTPUT_NAME) != OUTPUT_NAME:
        problems.append(f"metadata 'output_name' is {meta['output_name']!r}, this app needs {OUTPUT_NAME!r}")
    d = DEFAULT_PREPROCESSING
    r = _Reader(meta)
    gap = r.get("input_slice_gap_mm", _number, None)
    offsets = d.slice_offsets_mm if gap is None else (-abs(gap), 0.0, abs(gap))
    pixel_mean = r.get("input_pixel_mean", _number, d.pixel_mean)
    window = r.get("input_window_hu", _numbers(2), d.window_hu)
    pre = Preprocessing(
        slice_offsets_mm=r.get("input_slice_offsets_mm", _numbers(None), offsets),
        window_hu=(window[0], window[1]),
        value_max=r.get("input_value_max", _number, d.value_max),
        pixel_mean=pixel_mean,
        # Contract 1 padded with air after windowing, whatever the mean.
        pad_value=r.get("input_pad_value", _number, -pixel_mean),
        spacing_mm=r.get("input_spacing_mm", _number, d.spacing_mm),
        max_size=r.get("input_max_size", int, d.max_size),
        border_crop=r.get("input_border_crop", _choice(BORDER_CROPS), d.border_crop),
        resize=r.get("input_resize", _choice(RESIZES), d.resize),
        box_mapping=r.get("output_box_mapping", _choice(BOX_MAPPINGS), d.box_mapping),
        input_name=meta.get("input_name", INPUT_NAME),
        input_shape=r.get("input_shape", _shape, INPUT_SHAPE),
    )
    problems += r.problems
    if not r.problems:
        problems += pre.problems()
    if problems:
        raise ModelLoadError(f"{source} does not fit the detector contract: " + "; ".join(problems))
    return pre


def check_metadata(meta: Mapping[str, str], source: str) -> None:
    """Raise ModelLoadError naming every contract field that is missing or unusable."""
    preprocessing_from_metadata(meta, source)


def screening_from_metadata(meta: Mapping[str, str], source: str) -> tuple[Calibration | None, float | None]:
    """The model's score calibration and queue threshold (a probability), None where it has none."""
    cal: Calibration | None = None
    threshold: float | None = None
    try:
        if CALIBRATION_KEY in meta:
            cal = Calibration.from_dict(json.loads(meta[CALIBRATION_KEY]))
        if SCREENING_THRESHOLD_KEY in meta:
            threshold = float(meta[SCREENING_THRESHOLD_KEY])
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(
                    f"{SCREENING_THRESHOLD_KEY} must be a probability within 0..1, got {threshold}"
                )
            if cal is None:
                raise ValueError(
                    f"{SCREENING_THRESHOLD_KEY} is a calibrated probability: {CALIBRATION_KEY} is missing"
                )
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"{source} has an unusable score calibration: {exc}") from None
    return cal, threshold


def screening_metadata(calibration: Calibration, threshold: float) -> dict[str, str]:
    """The optional keys that give a model its calibration and queue threshold."""
    return {
        CALIBRATION_KEY: json.dumps(calibration.as_dict(), separators=(",", ":")),
        SCREENING_THRESHOLD_KEY: f"{threshold:.6g}",
    }


def write_metadata(src: Path, dst: Path, updates: Mapping[str, str]) -> Path:
    """Copy the ONNX file `src` to `dst` with `updates` merged into its metadata (weights untouched)."""
    try:
        import onnx
    except ImportError as exc:  # onnx comes with the [train] and [test] extras only
        raise ModelLoadError("writing model metadata needs the onnx package (pip install onnx)") from exc
    model = onnx.load(str(src))
    meta = {e.key: e.value for e in model.metadata_props}
    meta.update(updates)
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst
