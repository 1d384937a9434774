"""The projection head of the contrastive terms: Linear-LayerNorm-ReLU-Linear, L2-normalised.

One class for both the voxel and the frame term; the teacher uses an EMA copy of the student's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    def __init__(self, in_channels: int, hidden: int = 256, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
        )

    @property
    def out_dim(self) -> int:
        return self.net[-1].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)
