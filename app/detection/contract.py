"""The detector's I/O contract, stored in the ONNX file's metadata_props and checked on every load."""

from __future__ import annotations

from collections.abc import Mapping

from app.detection.errors import ModelLoadError
from app.detection.preprocess import (
    INPUT_NAME,
    INPUT_SHAPE,
    PIXEL_MEAN,
    SLICE_GAP_MM,
    TARGET_SPACING_MM,
    WINDOW_HI_HU,
    WINDOW_LO_HU,
)

CONTRACT_VERSION = "1"
OUTPUT_NAME = "detections"
OUTPUT_FORMAT = "float32 [1,K,5] rows x1,y1,x2,y2,score in network-input pixels, sorted by score desc"

# Keys every shipped model carries, with the values this code's preprocessing produces.
FIXED_FIELDS: dict[str, str] = {
    "lesion_review.contract": CONTRACT_VERSION,
    "input_name": INPUT_NAME,
    "input_shape": ",".join(str(d) for d in INPUT_SHAPE),
    "input_window_hu": f"{WINDOW_LO_HU:g},{WINDOW_HI_HU:g}",
    "input_pixel_mean": f"{PIXEL_MEAN:g}",
    "input_spacing_mm": f"{TARGET_SPACING_MM:g}",
    "input_slice_gap_mm": f"{SLICE_GAP_MM:g}",
    "output_name": OUTPUT_NAME,
    "output_format": OUTPUT_FORMAT,
}
FREE_FIELDS: tuple[str, ...] = ("model_version", "synthetic", "training_data")


def contract_metadata(*, model_version: str, synthetic: bool, training_data: str) -> dict[str, str]:
    """The full metadata_props dict for a model that follows this contract."""
    if not model_version.strip():
        raise ValueError("model_version must not be empty")
    return {
        **FIXED_FIELDS,
        "model_version": model_version,
        "synthetic": "true" if synthetic else "false",
        "training_data": training_data,
    }


def check_metadata(meta: Mapping[str, str], source: str) -> None:
    """Raise ModelLoadError naming every contract field that is missing or different."""
    problems: list[str] = []
    for key, expected in FIXED_FIELDS.items():
        got = meta.get(key)
        if got is None:
            problems.append(f"missing metadata '{key}' (expected {expected!r})")
        elif got.replace(" ", "") != expected.replace(" ", "") and key != "output_format":
            problems.append(f"metadata '{key}' is {got!r}, this app needs {expected!r}")
    for key in FREE_FIELDS:
        if not meta.get(key, "").strip():
            problems.append(f"missing metadata '{key}'")
    if meta.get("synthetic", "true") not in ("true", "false"):
        problems.append(f"metadata 'synthetic' must be 'true' or 'false', got {meta.get('synthetic')!r}")
    if problems:
        raise ModelLoadError(f"{source} does not fit the detector contract: " + "; ".join(problems))
