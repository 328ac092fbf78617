"""A tiny hand-built ONNX detector for tests: valid contract, fixed outputs, no torch needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.detection.contract import INPUT_NAME, OUTPUT_NAME, contract_metadata
from app.detection.preprocess import INPUT_SHAPE

TINY_MODEL_VERSION = "tiny-test-1"
# Rows in network-input pixels (x1,y1,x2,y2,score); on a 512x512 slice at 0.8 mm they are original pixels.
TINY_ROWS = np.array(
    [
        [100.0, 120.0, 140.0, 150.0, 0.90],
        [300.0, 200.0, 360.0, 260.0, 0.60],
        [50.0, 400.0, 70.0, 430.0, 0.03],
    ],
    dtype=np.float32,
)


def build_tiny_model(
    path: str | Path,
    *,
    rows: np.ndarray | None = None,
    metadata: dict[str, str] | None = None,
    input_name: str = INPUT_NAME,
    input_shape: tuple[int, ...] = INPUT_SHAPE,
    row_width: int = 5,
) -> Path:
    """Write an ONNX model that always outputs `rows` (default TINY_ROWS); keywords make broken variants."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.asarray(TINY_ROWS if rows is None else rows, dtype=np.float32).reshape(1, -1, row_width)
    const = numpy_helper.from_array(table, name="rows")
    # Multiply the input's max by 0 and add it, so the graph really consumes its input.
    nodes = [
        helper.make_node("ReduceMax", [input_name], ["mx"], keepdims=0),
        helper.make_node(
            "Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0.0, dtype=np.float32), "z")
        ),
        helper.make_node("Mul", ["mx", "zero"], ["nothing"]),
        helper.make_node("Add", ["rows", "nothing"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_detector",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, list(table.shape))],
        initializer=[const],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    meta = (
        contract_metadata(
            model_version=TINY_MODEL_VERSION, synthetic=True, training_data="none: fixed test rows"
        )
        if metadata is None
        else metadata
    )
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out
