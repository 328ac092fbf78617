"""Warm start from an exported ONNX detector: its BatchNorm-folded weights put back into CenterNetLite."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from app.detection.reference import TOLERANCE, parity_error, reference_input
from app.detection.train.model import CenterNetLite, FlipAveraged

log = logging.getLogger(__name__)

# The exporter folds each BatchNorm into the conv before it and names the result onnx::Conv_N, so these
# convs are recognised by their order in the graph; the others keep their parameter names.
FOLDED_CONVS = (
    "s4.0.0", "s4.1.0", "s4.2.0", "s8.0.0", "s8.1.0", "s16.0.0", "s16.1.0", "s32.0.0", "smooth.1", "head.1",
)  # fmt: skip


def _bn_after(model: CenterNetLite, conv_name: str) -> nn.BatchNorm2d:
    parent, index = conv_name.rsplit(".", 1)
    seq = model.get_submodule(parent)
    assert isinstance(seq, nn.Sequential)
    bn = seq[int(index) + 1]
    assert isinstance(bn, nn.BatchNorm2d)
    return bn


def _set_bn(bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, bias: torch.Tensor) -> None:
    """Running statistics (mean, var) and the affine part that undoes them: out = x - mean + bias."""
    assert bn.running_mean is not None and bn.running_var is not None
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    bn.weight.copy_(torch.sqrt(var + bn.eps))
    bn.bias.copy_(bias)


def folded_weights(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray | None]], bool]:
    """Conv weight and bias per CenterNetLite conv name, and whether the graph flip-averages."""
    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    named: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    folded: list[tuple[np.ndarray, np.ndarray | None]] = []
    # The exporter shares a weight used twice (flip averaging runs every conv twice) through Identity nodes.
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in inits}
    seen: set[str] = set()
    calls = 0
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        calls += 1
        w_name, b_name = (alias.get(i, i) for i in (*node.input[1:3], "")[:2])
        if w_name in seen:
            continue
        seen.add(w_name)
        weight = inits[w_name]
        bias = inits[b_name] if b_name else None
        if w_name.startswith("onnx::"):
            folded.append((weight, bias))
        else:
            named[w_name.removeprefix("model.").removesuffix(".weight")] = (weight, bias)
    if len(folded) != len(FOLDED_CONVS):
        raise ValueError(
            f"{path}: {len(folded)} folded convs, a CenterNetLite export has {len(FOLDED_CONVS)}"
        )
    named.update(zip(FOLDED_CONVS, folded, strict=True))
    return named, calls == 2 * len(seen)


def load_onnx_weights(model: CenterNetLite, path: Path) -> float:
    """Copy the graph's weights in (folded BatchNorm: identity plus bias); return the parity error."""
    weights, flip = folded_weights(path)
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if set(weights) != set(convs):
        differ = sorted(set(weights) ^ set(convs))
        raise ValueError(f"{path} does not hold a CenterNetLite: convs {differ} differ")
    with torch.no_grad():
        for name, conv in convs.items():
            weight, bias = weights[name]
            if tuple(weight.shape) != tuple(conv.weight.shape):
                expected = tuple(conv.weight.shape)
                raise ValueError(f"{path}: {name} is {weight.shape}, the model expects {expected}")
            conv.weight.copy_(torch.from_numpy(weight.copy()))
            b = torch.from_numpy(bias.copy() if bias is not None else np.zeros(conv.out_channels))
            if name in FOLDED_CONVS:
                zeros = torch.zeros(conv.out_channels)
                _set_bn(_bn_after(model, name), zeros, zeros + 1.0, b)
            elif conv.bias is not None:
                conv.bias.copy_(b)
    error = _parity(model, path, flip)
    if error > TOLERANCE:
        raise ValueError(f"{path}: weights loaded but the model differs from the graph by {error:.2e}")
    return error


def _parity(model: CenterNetLite, path: Path, flip: bool) -> float:
    import onnxruntime as ort

    x = reference_input(0)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    was_training = model.training
    net = (FlipAveraged(model) if flip else model).eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    model.train(was_training)
    return parity_error(got, expected)


def calibrate_batchnorm(model: CenterNetLite, batches: Iterable[torch.Tensor]) -> int:
    """Give each BatchNorm the statistics of its input on `batches`, keeping the eval-mode function unchanged.

    After load_onnx_weights a BatchNorm computes x + b in eval mode. Training normalises by batch
    statistics instead, which would wreck the loaded weights at the first step; with running stats
    (mu, var), weight sqrt(var + eps) and bias mu + b, both modes compute about x + b.
    """
    bns = [_bn_after(model, name) for name in FOLDED_CONVS]
    sums: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(bns))}

    def hook(i: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach()
            sums[i].append(torch.stack([x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)]))

        return record

    handles = [bn.register_forward_pre_hook(hook(i)) for i, bn in enumerate(bns)]
    was_training = model.training
    model.eval()
    n = 0
    try:
        with torch.no_grad():
            for x in batches:
                model.forward_maps(x)
                n += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if n == 0:
        raise ValueError("no batches to calibrate BatchNorm on")
    with torch.no_grad():
        for i, bn in enumerate(bns):
            mean, var = torch.stack(sums[i]).mean(dim=0)
            _set_bn(bn, mean, var, bn.bias + mean)
    log.info("BatchNorm calibrated on %d batches", n)
    return n
