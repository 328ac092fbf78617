"""Export a trained CenterNetLite to ONNX (legacy exporter, opset 17) and stamp the I/O contract."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import torch

from app.detection.contract import INPUT_NAME, OUTPUT_NAME, contract_metadata
from app.detection.preprocess import INPUT_SHAPE

log = logging.getLogger(__name__)
OPSET = 17


def add_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the metadata_props of an ONNX file in place."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_onnx(
    model: torch.nn.Module, out: Path, *, model_version: str, synthetic: bool, training_data: str
) -> Path:
    """Write `model` as a contract-conforming ONNX file at `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    dummy = torch.zeros(INPUT_SHAPE, dtype=torch.float32)
    tmp = out.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    add_metadata(
        tmp, contract_metadata(model_version=model_version, synthetic=synthetic, training_data=training_data)
    )
    tmp.replace(out)
    log.info("exported %s (%s)", out, model_version)
    return out


def write_reference(model: torch.nn.Module, path: Path, seed: int = 0) -> Path:
    """Store PyTorch's output on a seeded input, so ONNX Runtime can be checked against it without torch."""
    from app.detection.reference import reference_input, save_reference

    model = model.eval().cpu()
    with torch.no_grad():
        rows = model(torch.from_numpy(reference_input(seed))).numpy()
    return save_reference(path, rows, seed)
