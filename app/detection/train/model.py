"""A small CenterNet-style detector (~0.26M parameters) whose ONNX graph decodes its own boxes."""

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


class CenterNetLite(nn.Module):
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
        bias = self.out.bias
        assert bias is not None
        with torch.no_grad():
            # Heatmap prior 0.1, as in CenterNet, so the focal loss starts stable.
            bias[0] = -2.19
            bias[1:] = 0.0

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head maps [N,5,H/4,W/4]: heatmap logit, log w, log h, offset x, offset y."""
        c4 = self.s4(x)
        c8 = self.s8(c4)
        c16 = self.s16(c8)
        c32 = self.s32(c16)
        p = self.lat32(c32)
        p = F.interpolate(p, size=c16.shape[-2:], mode="nearest") + self.lat16(c16)
        p = F.interpolate(p, size=c8.shape[-2:], mode="nearest") + self.lat8(c8)
        p = F.interpolate(p, size=c4.shape[-2:], mode="nearest") + self.lat4(c4)
        return self.out(self.head(self.smooth(p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded detections [N,K,5]: x1,y1,x2,y2 (input pixels), score; max-pool peak picking + TopK."""
        return decode_maps(self.forward_maps(x), TOP_K)


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


def build_model(**kwargs: Any) -> CenterNetLite:
    """A fresh detector with its default widths."""
    return CenterNetLite(**kwargs)


class FlipAveraged(nn.Module):
    """Test-time left-right flip: the head maps of the image and of its mirror averaged before decoding."""

    def __init__(self, model: CenterNetLite) -> None:
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
