"""The detector's two inputs: a pretrained sparse voxel encoder, or RVT's stacked histograms.

The sparse encoder is the pretraining backbone cut after one output (``x_conv3`` by default: stride
t2/y4/x4). Its grid is densified and time is folded into channels, (B, C·T', H', W'), which
RVT's first stage then takes with ``patch_size = 4 // spatial stride``, so RVT's stage 1 keeps
sitting at stride 4 of the input frame and every later stride (8/16/32), the neck and the head
are unchanged. Stages after the chosen output are deleted rather than skipped: unused parameters
would break DDP's reduction and would be dead weight in the checkpoint.

Parameter names stay the backbone's, under ``encoder.backbone.``, so pretrained weights load by
name (:mod:`finetune.transfer`).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

from evcmae.backbones.densify import fold_time_into_channels
from evcmae.backbones.rvt import LstmState, patch_size_for, rvt_partition_size
from evcmae.finetune.detector import Detector

__all__ = ["EventDetector", "SparseEventEncoder", "fold_time_into_channels", "patch_size_for"]
INPUTS = ("sparse", "histogram")


class SparseEventEncoder(nn.Module):
    """Voxels of one window -> dense (B, C·T', H', W') features at the chosen output's stride."""

    def __init__(self, backbone: nn.Module, grid: Sequence[int], output: str = "x_conv3"):
        super().__init__()
        self.output = output
        self.backbone = backbone.truncate(output)  # later stages never run: not built at all
        self.grid = tuple(int(v) for v in grid)
        stride_t, stride_y, stride_x = backbone.out_strides[output]
        if stride_y != stride_x:
            raise ValueError(f"{output} has unequal spatial strides y{stride_y}/x{stride_x}")
        self.stride = (stride_t, stride_y, stride_x)
        self.out_grid = backbone.output_shapes(self.grid)[output]
        self.out_channels = backbone.out_channels[output] * self.out_grid[0]
        self.patch_size = patch_size_for(stride_y)
        self.frozen = False

    def freeze(self) -> None:
        """No gradients and BatchNorm statistics held fixed (running stats would drift otherwise)."""
        self.frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, voxels) -> torch.Tensor:
        from evcmae.backbones.spconv_compat import spconv, to_sparse_tensor

        x = voxels if isinstance(voxels, spconv.SparseConvTensor) else to_sparse_tensor(voxels)
        if tuple(x.spatial_shape) != self.grid:
            raise ValueError(f"voxel grid {tuple(x.spatial_shape)} differs from the encoder's {self.grid}")
        if x.features.shape[0] == 0:  # no event in any window (spconv asserts on empty input)
            _, h, w = self.out_grid
            return x.features.new_zeros(x.batch_size, self.out_channels, h, w)
        return fold_time_into_channels(self.backbone(x, until=self.output)[self.output])


class EventDetector(nn.Module):
    """RVT + YOLOX on either input. ``input="sparse"``: the encoder above feeds RVT (the method);
    ``input="histogram"``: plain RVT on 20-channel stacked histograms (the baseline)."""

    def __init__(
        self,
        input: str = "sparse",
        size: str = "tiny",
        num_classes: int = 3,
        height: int = 180,
        width: int = 320,
        backbone: nn.Module | Mapping | None = None,
        grid: Sequence[int] | None = None,
        output: str = "x_conv3",
        in_channels: int = 20,
        fpn_stages: Sequence[int] = (2, 3, 4),
        size_aware=None,
        partition_split: int = 2,
        bn_eps: float | None = None,
    ):
        super().__init__()
        if input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
        self.input, self.height, self.width = input, int(height), int(width)
        if input == "sparse":
            from evcmae.backbones.sparse_resnet import SparseVoxelBackbone

            if grid is None:
                raise ValueError("the sparse input needs the voxel grid (num_bins, H, W)")
            if not isinstance(backbone, nn.Module):  # Hydra may hand over the built backbone
                backbone = SparseVoxelBackbone(**dict(backbone or {}))
            self.encoder = SparseEventEncoder(backbone, grid, output)
            in_channels, patch = self.encoder.out_channels, self.encoder.patch_size
            frame_hw = (math.ceil(self.height / self.encoder.stride[1]), math.ceil(self.width / self.encoder.stride[2]))
        else:
            self.encoder = None
            patch, frame_hw = 4, (self.height, self.width)
        partition = rvt_partition_size(*frame_hw, split_32=partition_split, patch_size=patch)
        self.detector = Detector(
            size, num_classes, in_channels, fpn_stages, size_aware, partition, patch, bn_eps=bn_eps
        )
        # RVT's strides count its own input's pixels; the head must place anchors in label pixels.
        head = self.detector.head
        head.strides = tuple(s * self.input_stride for s in head.strides)

    @property
    def num_classes(self) -> int:
        return self.detector.num_classes

    @property
    def input_stride(self) -> int:
        """Pixels of the label frame per pixel of the RVT input (boxes are in label pixels)."""
        return 1 if self.encoder is None else self.encoder.stride[1]

    def encode(self, x) -> torch.Tensor:
        """One window's input as RVT's dense input frame: the sparse encoder's folded map, or the
        histogram as float."""
        return self.encoder(x) if self.encoder is not None else x.float()

    def forward_backbone(
        self, x, states: list[LstmState] | None = None
    ) -> tuple[dict[int, torch.Tensor], list[LstmState]]:
        return self.detector.forward_backbone(self.encode(x), states)

    def forward_detect(self, features, targets=None):
        """Boxes (targets and outputs) are in label-frame pixels for both inputs."""
        return self.detector.forward_detect(features, targets)

    def forward(self, x, states=None, targets=None):
        features, states = self.forward_backbone(x, states)
        return self.forward_detect(features, targets), states
