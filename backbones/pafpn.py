"""YOLOX's PAFPN neck over any number (≥ 2) of backbone stages.

A top-down pass brings coarse semantics to fine maps (1×1 lateral conv, nearest upsample,
concat, CSP), then a bottom-up pass brings fine localisation back up (3×3 stride-2 conv,
concat with the lateral, CSP). With ``in_stages=(2, 3, 4)`` this is exactly RVT's neck (same
layers, channels and parameter count); ``(1, 2, 3, 4)`` adds the stride-4 level the user tried
for small objects. Output i has the channels of input i, so the head sees the stage widths.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBnAct(nn.Module):
    """Conv (same padding, no bias) → BatchNorm (PyTorch defaults, as RVT) → SiLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, channels: int, shortcut: bool):
        super().__init__()
        self.conv1 = ConvBnAct(channels, channels, 1)
        self.conv2 = ConvBnAct(channels, channels, 3)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class CSPLayer(nn.Module):
    """CSP (YOLOv5 "C3"): half the channels go through ``n`` bottlenecks, half bypass them;
    the split keeps gradients short and halves the bottlenecks' cost. PAFPN uses no shortcut."""

    def __init__(self, in_channels: int, out_channels: int, n: int = 1, shortcut: bool = False):
        super().__init__()
        hidden = out_channels // 2
        self.conv1 = ConvBnAct(in_channels, hidden, 1)
        self.conv2 = ConvBnAct(in_channels, hidden, 1)
        self.conv3 = ConvBnAct(2 * hidden, out_channels, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, shortcut) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest-exact")


class PAFPN(nn.Module):
    """``forward(features: {stage: map}) -> tuple of maps, finest first``.

    ``depth`` scales the bottlenecks per CSP: round(3·depth), so 0.33 → 1 (tiny, small),
    0.67 → 2 (base)."""

    def __init__(self, in_channels: Sequence[int], in_stages: Sequence[int] = (2, 3, 4), depth: float = 0.33):
        super().__init__()
        if len(in_channels) != len(in_stages) or len(in_stages) < 2:
            raise ValueError("need one channel count per input stage, and at least two stages")
        self.in_stages = tuple(in_stages)
        self.in_channels = tuple(in_channels)
        c, n = self.in_channels, round(3 * depth)
        levels = len(c)
        # Top-down, from the coarsest level: lateral[i] reduces level i+1's map to c[i].
        self.lateral = nn.ModuleList(ConvBnAct(c[i + 1], c[i], 1) for i in range(levels - 1))
        self.td_csp = nn.ModuleList(CSPLayer(2 * c[i], c[i], n) for i in range(levels - 1))
        # Bottom-up: down[i] takes level i to level i+1.
        self.down = nn.ModuleList(ConvBnAct(c[i], c[i], 3, 2) for i in range(levels - 1))
        self.bu_csp = nn.ModuleList(CSPLayer(2 * c[i], c[i + 1], n) for i in range(levels - 1))

    def forward(self, features: dict[int, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        xs = [features[s] for s in self.in_stages]
        levels = len(xs)
        laterals = [None] * levels  # laterals[i + 1]: level i+1 map reduced to c[i]
        top = xs[-1]
        for i in range(levels - 2, -1, -1):
            laterals[i + 1] = self.lateral[i](top)
            top = self.td_csp[i](torch.cat((_upsample(laterals[i + 1]), xs[i]), dim=1))
        outs = [top]
        for i in range(levels - 1):
            outs.append(self.bu_csp[i](torch.cat((self.down[i](outs[-1]), laterals[i + 1]), dim=1)))
        return tuple(outs)
