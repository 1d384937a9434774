"""Pretraining the detector's RVT stages: masked latent reconstruction above the sparse backbone.

The detector is the sparse encoder (cut at ``x_conv3``), then RVT's four recurrent stages, the
PAFPN and the YOLOX head. The other objectives train the sparse encoder only: 0.35 M of the tiny
detector's 4.7 M parameters, while RVT's stages hold 3.2 M and start from random in every
fine-tuning run. This objective gives pretraining a copy of those stages, built exactly as the
detector builds them (same class, size and input width, so the names and shapes load one to
one), and trains them the way the sparse scales are trained: the student's stages run on the
student's map of the visible voxels and predict, through a small head per stage, what the EMA
teacher's stages compute on the whole window. Each cell is weighted by the share of its voxels that
were masked (:mod:`evcmae.losses.dense_reconstruction`), so the term is aimed at hidden content.

Each window is a sequence of one: the ConvLSTMs start from zero state, so their input gates and
candidate weights are trained, their recurrent weights hardly.

The stages export beside the backbone (``teacher_rvt.pt``, ``student_rvt.pt``, described under
``rvt`` in ``backbone.json``), and fine-tuning loads them into the detector's RVT
(``model.pretrained_rvt``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from evcmae.backbones.densify import fold_time_into_channels
from evcmae.backbones.movement import relative_movement
from evcmae.backbones.rvt import RVTBackbone, patch_size_for, rvt_partition_size
from evcmae.losses.dense_reconstruction import masked_cell_weights, weighted_latent_mse
from evcmae.pretrain.ema import make_teacher
from evcmae.pretrain.objectives.base import Objective, ObjectiveOutput, StepContext


def stage_predictor(dim: int, hidden: int | None = None) -> nn.Sequential:
    """3x3 conv, GELU, 1x1 conv: a prediction from the cell and its neighbours."""
    hidden = hidden or dim
    return nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, dim, 1))


class RVTStagesObjective(Objective):
    """``backbone``: the pretraining backbone (read for its strides, not kept); ``time_bins``: the
    voxel grid's depth (``voxel.num_bins``), which with the backbone gives RVT's input width
    (channels x time bins at ``scale``, as the detector folds them). ``size``: RVT's size, the
    detector's ``model.detector.size``; ``stages``: the stage outputs scored (1-based);
    ``partition_split``: RVT's ``partition_split_32`` (attention groups only, no parameter).
    ``balanced`` (off): the term mostly trains its own 3 M stage parameters and sends the backbone
    a small gradient, so gradient-norm balancing would multiply its λ, and the stages' gradients
    with it, by hundreds (816 at step 89 of the first study run); its λ is used as it is."""

    needs_teacher = True

    def __init__(
        self,
        channels: Mapping[str, int],
        backbone: nn.Module,
        time_bins: int,
        weight: float = 1.0,
        scale: str = "x_conv3",
        size: str = "tiny",
        stages: Sequence[int] = (1, 2, 3, 4),
        hidden: int | None = None,
        partition_split: int = 2,
        balanced: bool = False,
    ):
        super().__init__(weight)
        self.balanced = bool(balanced)
        self.scale, self.scales = scale, (scale,)
        _, stride_y, stride_x = backbone.out_strides[scale]
        if stride_y != stride_x:
            raise ValueError(f"{scale} has unequal spatial strides y{stride_y}/x{stride_x}")
        depth = backbone.output_shapes((int(time_bins), 1, 1))[scale][0]
        self.size, self.input_stride, self.partition_split = size, int(stride_y), int(partition_split)
        self.in_channels = int(channels[scale]) * depth
        self.patch_size = patch_size_for(self.input_stride)
        self.rvt = RVTBackbone.from_size(size, in_channels=self.in_channels, patch_size=self.patch_size)
        self.teacher_rvt = make_teacher(self.rvt)
        self.stages = tuple(int(s) for s in stages)
        if not self.stages or min(self.stages) < 1 or max(self.stages) > len(self.rvt.stages):
            raise ValueError(f"stages must be within 1..{len(self.rvt.stages)}, got {list(stages)}")
        dims = self.rvt.get_stage_dims(self.stages)
        self.predictors = nn.ModuleDict({str(s): stage_predictor(d, hidden) for s, d in zip(self.stages, dims)})
        self.initial_state = {k: v.detach().cpu().clone() for k, v in self.rvt.state_dict().items()}

    def teacher_pairs(self):
        return [(self.teacher_rvt, self.rvt)]

    def _fit_partition(self, height: int, width: int) -> None:
        partition = rvt_partition_size(height, width, split_32=self.partition_split, patch_size=self.patch_size)
        if partition != self.rvt.partition_size:
            self.rvt.set_partition(partition)
            self.teacher_rvt.set_partition(partition)

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        student_map = fold_time_into_channels(ctx.student[self.scale])
        self._fit_partition(*student_map.shape[-2:])
        student, _ = self.rvt(student_map)
        with torch.no_grad():
            teacher, _ = self.teacher_rvt(fold_time_into_channels(ctx.teacher()[self.scale]))
        losses, logs = [], {}
        for s in self.stages:
            prediction = self.predictors[str(s)](student[s])
            cell = self.input_stride * self.rvt.strides[s - 1]
            weights, occupied = masked_cell_weights(
                ctx.full.coords, ctx.visible, ctx.full.batch_size, (cell, cell), prediction.shape[-2:]
            )
            loss = weighted_latent_mse(prediction, teacher[s], weights)
            losses.append(loss)
            logs[f"loss/stage{s}"] = loss.detach()
            logs[f"masked_share/stage{s}"] = float(weights.sum() / occupied.sum().clamp(min=1))
        return ObjectiveOutput(torch.stack(losses).mean(), logs)

    def export_parts(self) -> dict:
        """What the export writes beside the backbone: name -> (student, teacher, record)."""
        stages = [f"stages.{i}" for i in range(len(self.rvt.stages))]
        record = {
            "class": f"{RVTBackbone.__module__}.{RVTBackbone.__name__}",
            "size": self.size,
            "in_channels": self.in_channels,
            "patch_size": self.patch_size,
            "source": self.scale,
            "movement_from_init": {
                "teacher": relative_movement(self.initial_state, self.teacher_rvt, stages),
                "student": relative_movement(self.initial_state, self.rvt, stages),
            },
        }
        return {"rvt": (self.rvt, self.teacher_rvt, record)}
