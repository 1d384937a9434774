"""The RVT detector for dense inputs (stacked histograms): recurrent backbone → PAFPN → YOLOX.

Sizes as RVT: tiny (embed 32, CSP depth 0.33), small (48, head dim 24, 0.33), base (64, 0.67).
``fpn_stages=(2, 3, 4)`` is RVT's 3-scale neck; ``(1, 2, 3, 4)`` adds the stride-4 level (the
user's 4-scale experiment). ``size_aware`` switches on the small-object loss weight.

Training follows RVT's split: run :meth:`Detector.forward_backbone` on every window of a
sequence (carrying the LSTM states) and :meth:`Detector.forward_detect` only at labelled
windows; :meth:`Detector.forward` does both for one window.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from evcmae.backbones.batchnorm import set_batchnorm_eps
from evcmae.backbones.pafpn import PAFPN
from evcmae.backbones.rvt import RVT_SIZES, LstmState, RVTBackbone
from evcmae.backbones.yolox_head import HeadOutput, SizeAwareWeight, YOLOXHead

FPN_DEPTH = {"tiny": 0.33, "small": 0.33, "base": 0.67}
Targets = torch.Tensor | Sequence[torch.Tensor]


def split_targets(targets: Targets) -> list[torch.Tensor]:
    """One (n_i, 5) [class, cx, cy, w, h] tensor per image, from either such a list or RVT's
    padded (B, M, 5) batch tensor, where rows with w ≤ 0 or h ≤ 0 are padding."""
    if isinstance(targets, torch.Tensor):
        if targets.dim() != 3 or targets.shape[-1] != 5:
            raise ValueError(f"targets tensor must be (B, M, 5), got {tuple(targets.shape)}")
        return [t[(t[:, 3] > 0) & (t[:, 4] > 0)] for t in targets]
    return [t.reshape(-1, 5) for t in targets]


def boxes_to_targets(xywh: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Label rows (top-left x, y, w, h as stored in ``*_bbox.npy``) → [class, cx, cy, w, h]."""
    xywh = xywh.float()
    centre = xywh[:, :2] + xywh[:, 2:] / 2
    return torch.cat((classes.float()[:, None], centre, xywh[:, 2:]), dim=1)


def _size_aware(option) -> SizeAwareWeight | None:
    if option is None or option is False:
        return None
    if option is True:
        return SizeAwareWeight()
    if isinstance(option, SizeAwareWeight):
        return option
    return SizeAwareWeight(**dict(option))


class Detector(nn.Module):
    def __init__(
        self,
        size: str = "tiny",
        num_classes: int = 3,
        in_channels: int = 20,
        fpn_stages: Sequence[int] = (2, 3, 4),
        size_aware=None,
        partition_size: tuple[int, int] = (6, 10),
        patch_size: int = 4,
        fpn_depth: float | None = None,
        bn_eps: float | None = None,
    ):
        super().__init__()
        if size not in RVT_SIZES:
            raise ValueError(f"size must be one of {sorted(RVT_SIZES)}, got {size!r}")
        self.size = size
        self.fpn_stages = tuple(fpn_stages)
        self.size_aware = _size_aware(size_aware)
        self.backbone = RVTBackbone.from_size(
            size, in_channels=in_channels, partition_size=partition_size, patch_size=patch_size
        )
        channels = self.backbone.get_stage_dims(self.fpn_stages)
        self.fpn = PAFPN(channels, self.fpn_stages, FPN_DEPTH[size] if fpn_depth is None else fpn_depth)
        self.head = YOLOXHead(num_classes, channels, self.backbone.get_strides(self.fpn_stages))
        if bn_eps is not None:
            set_batchnorm_eps(self, bn_eps)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward_backbone(
        self, x: torch.Tensor, prev_states: list[LstmState] | None = None
    ) -> tuple[dict[int, torch.Tensor], list[LstmState]]:
        return self.backbone(x, prev_states)

    def forward_detect(
        self, features: dict[int, torch.Tensor], targets: Targets | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Loss dict (``loss``, ``loss_iou``, ``loss_obj``, ``loss_cls``, ``num_fg``, ``num_gt``)
        when targets are given, else decoded outputs (B, A, 5 + C) for
        :func:`finetune.postprocess.postprocess`."""
        out: HeadOutput = self.head(self.fpn(features))
        if targets is None:
            return self.head.decode(out)
        return self.head.loss(out, split_targets(targets), self.size_aware)

    def forward(self, x: torch.Tensor, prev_states: list[LstmState] | None = None, targets: Targets | None = None):
        """x: (B, in_channels, H, W), padded inside; boxes in the same pixel frame.
        Returns (losses or decoded outputs, new LSTM states)."""
        features, states = self.forward_backbone(x, prev_states)
        return self.forward_detect(features, targets), states
