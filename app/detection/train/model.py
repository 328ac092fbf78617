"""CenterNet-style detectors whose ONNX graph decodes its own boxes: a small one and a ResNet-style one."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 4
TOP_K = 100
# Keeps exp() of the size head finite whatever the weights: at most e^6 * 4 px.
MAX_LOG_SIZE = 6.0


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _sep(ch: int) -> nn.Sequential:
    # Depthwise-separable: the stride-4 maps are large, so full 3x3 convs there would dominate the cost.
    return nn.Sequential(
        nn.Conv2d(ch, ch, 3, padding=1, groups=ch, bias=False),
        nn.Conv2d(ch, ch, 1, bias=False),
        nn.BatchNorm2d(ch),
        nn.ReLU(inplace=True),
    )


class CenterNet(nn.Module):
    """What every architecture provides: raw head maps at stride 4, and decoded boxes as forward()."""

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head maps [N,5,H/4,W/4]: heatmap logit, log w, log h, offset x, offset y."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded detections [N,K,5]: x1,y1,x2,y2 (input pixels), score; max-pool peak picking + TopK."""
        return decode_maps(self.forward_maps(x), TOP_K)


def _pyramid_maps(m: Any, c4: torch.Tensor) -> torch.Tensor:
    """The stages after stride 4, the top-down neck back to stride 4, and the heads (both architectures)."""
    c8 = m.s8(c4)
    c16 = m.s16(c8)
    c32 = m.s32(c16)
    p = m.lat32(c32)
    p = F.interpolate(p, size=c16.shape[-2:], mode="nearest") + m.lat16(c16)
    p = F.interpolate(p, size=c8.shape[-2:], mode="nearest") + m.lat8(c8)
    p = F.interpolate(p, size=c4.shape[-2:], mode="nearest") + m.lat4(c4)
    out: torch.Tensor = m.out(m.head(m.smooth(p)))
    return out


def _init_head(out: nn.Conv2d) -> None:
    bias = out.bias
    assert bias is not None
    with torch.no_grad():
        # Heatmap prior 0.1, as in CenterNet, so the focal loss starts stable.
        bias[0] = -2.19
        bias[1:] = 0.0


class CenterNetLite(CenterNet):
    """Backbone to stride 32, top-down neck to stride 4, heatmap + log-size + offset heads."""

    def __init__(self, neck: int = 32) -> None:
        super().__init__()
        # A third stride-4 conv: the small (< 10 mm) lesions are found from these maps alone.
        self.s4 = nn.Sequential(_conv(3, 16, 2), _conv(16, 24, 2), _conv(24, 24))
        self.s8 = nn.Sequential(_conv(24, 48, 2), _conv(48, 48))
        self.s16 = nn.Sequential(_conv(48, 96, 2), _conv(96, 96))
        self.s32 = nn.Sequential(_conv(96, 96, 2))
        self.lat4 = nn.Conv2d(24, neck, 1)
        self.lat8 = nn.Conv2d(48, neck, 1)
        self.lat16 = nn.Conv2d(96, neck, 1)
        self.lat32 = nn.Conv2d(96, neck, 1)
        self.smooth = _sep(neck)
        self.head = _sep(neck)
        self.out = nn.Conv2d(neck, 5, 1)
        _init_head(self.out)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head maps [N,5,H/4,W/4]: heatmap logit, log w, log h, offset x, offset y."""
        return _pyramid_maps(self, self.s4(x))


class _Basic(nn.Module):
    """ResNet's basic block: two 3x3 convs and a shortcut (a strided 1x1 conv where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.short = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.short(x))


class CenterNetRes(CenterNet):
    """ResNet-style backbone (basic blocks at strides 4, 8, 16, 32), FPN neck to stride 4, the same heads.

    Widths are kept small so that the flip-averaged graph stays within the 2-core latency budget.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (24, 48, 96, 192), neck: int = 48) -> None:
        super().__init__()
        w4, w8, w16, w32 = widths
        self.stem = nn.Sequential(_conv(3, 16, 2), _conv(16, w4, 2))
        self.s4 = _Basic(w4, w4)
        self.s8 = nn.Sequential(_Basic(w4, w8, 2), _Basic(w8, w8))
        self.s16 = nn.Sequential(_Basic(w8, w16, 2), _Basic(w16, w16))
        self.s32 = nn.Sequential(_Basic(w16, w32, 2), _Basic(w32, w32))
        self.lat4 = nn.Conv2d(w4, neck, 1)
        self.lat8 = nn.Conv2d(w8, neck, 1)
        self.lat16 = nn.Conv2d(w16, neck, 1)
        self.lat32 = nn.Conv2d(w32, neck, 1)
        self.smooth = _sep(neck)
        self.head = _sep(neck)
        self.out = nn.Conv2d(neck, 5, 1)
        _init_head(self.out)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head maps [N,5,H/4,W/4]: heatmap logit, log w, log h, offset x, offset y."""
        return _pyramid_maps(self, self.s4(self.stem(x)))


def decode_maps(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Peak picking by 3x3 max pool, TopK over the heatmap, boxes from the size and offset heads."""
    n, _, h, w = maps.shape
    heat = torch.sigmoid(maps[:, 0:1])
    peaks = F.max_pool2d(heat, 3, stride=1, padding=1)
    heat = heat * (peaks == heat).to(heat.dtype)
    scores, idx = torch.topk(heat.reshape(n, h * w), k)
    ys = torch.div(idx, w, rounding_mode="floor")
    xs = idx - ys * w
    reg = maps[:, 1:5].reshape(n, 4, h * w)
    picked = torch.gather(reg, 2, idx.unsqueeze(1).expand(n, 4, k))
    size = torch.exp(torch.clamp(picked[:, 0:2], max=MAX_LOG_SIZE)) * STRIDE
    cx = (xs.to(maps.dtype) + picked[:, 2]) * STRIDE
    cy = (ys.to(maps.dtype) + picked[:, 3]) * STRIDE
    boxes = torch.stack(
        [cx - size[:, 0] / 2, cy - size[:, 1] / 2, cx + size[:, 0] / 2, cy + size[:, 1] / 2, scores], dim=2
    )
    return boxes


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


ARCHITECTURES: dict[str, type[CenterNet]] = {"lite": CenterNetLite, "resnet": CenterNetRes}


def build_model(arch: str = "lite", **kwargs: Any) -> CenterNet:
    """A fresh detector of an architecture (lite: the shipped one; resnet: the ResNet-style one)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**kwargs)


def count_macs(model: nn.Module, shape: tuple[int, ...] = (1, 3, 512, 512)) -> int:
    """Multiply-accumulates of the convolutions of one forward pass on an input of `shape`."""
    total = 0

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(mod, nn.Conv2d)
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total += out.numel() * (mod.in_channels // mod.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(shape))
    finally:
        for h in handles:
            h.remove()
    return total


class FlipAveraged(nn.Module):
    """Test-time left-right flip: the head maps of the image and of its mirror averaged before decoding."""

    def __init__(self, model: CenterNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded detections [N,K,5] from the flip-averaged maps."""
        maps = self.model.forward_maps(x)
        back = torch.flip(self.model.forward_maps(torch.flip(x, dims=[3])), dims=[3])
        # Pixel j mirrors to W-1-j: a centre at cell i + offset o in the mirror is cell i + (S-1)/S - o here.
        mirrored_dx = (STRIDE - 1) / STRIDE - back[:, 3:4]
        mean = (maps + torch.cat([back[:, 0:3], mirrored_dx, back[:, 4:5]], dim=1)) / 2
        return decode_maps(mean, TOP_K)
