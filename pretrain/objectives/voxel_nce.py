"""Voxel InfoNCE: the student's prediction at a hidden site must pick out the teacher's embedding there."""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from evcmae.losses.sparse_ops import CoordIndex, NeighbourConv, as_sparse_pair
from evcmae.pretrain.ema import make_teacher
from evcmae.pretrain.objectives.base import Objective, ObjectiveOutput, StepContext


class VoxelNCEObjective(Objective):
    """Queries are predicted at the teacher's sites from the student's sites within ``kernel_size``
    (a ``NeighbourConv``), then projected by ``head``; keys are the EMA twin of ``head`` applied to
    the teacher's features. Negatives are other teacher sites (``criterion``: VoxelInfoNCELoss,
    with its spatial exclusion radius against near-duplicates).

    ``masked_only`` (default on) places queries at hidden sites only. Scored at sites the student
    sees, the positive is its own input passed through two similar networks, which an untrained
    pair already ranks first often; at hidden sites it must be inferred from context."""

    needs_teacher = True

    def __init__(
        self,
        channels: Mapping[str, int],
        head: Callable,
        criterion,
        weight: float = 1.0,
        scale: str = "x_conv3",
        kernel_size: int = 3,
        masked_only: bool = True,
    ):
        super().__init__(weight)
        self.scale, self.scales, self.masked_only = scale, (scale,), masked_only
        c = channels[scale]
        self.predictor = NeighbourConv(c, c, kernel_size)
        self.head = head(c)
        self.teacher_head = make_teacher(self.head)
        self.criterion = criterion

    def teacher_pairs(self):
        return [(self.teacher_head, self.head)]

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        t = ctx.teacher()[self.scale]
        s_feat, s_coords = as_sparse_pair(ctx.student[self.scale])
        sites = ctx.hidden(self.scale) if self.masked_only else torch.ones_like(t.indices[:, 0], dtype=torch.bool)
        target_coords = t.indices[sites].long()
        neighbours = self.predictor.neighbours(CoordIndex(s_coords), target_coords)
        reachable = (neighbours >= 0).any(0)
        query = self.head(F.gelu(self.predictor(s_feat, neighbours[:, reachable])))
        with torch.no_grad():
            keys = self.teacher_head(t.features)
        logs = {"masked_share": float(sites.float().mean()) if sites.numel() else 0.0, "queries": float(len(query))}
        if query.shape[0] == 0:  # keeps every parameter in the graph (DDP), contributes nothing
            zero = sum(p.sum() for p in (*self.predictor.parameters(), *self.head.parameters())) * 0.0
            return ObjectiveOutput(zero, logs)
        loss = self.criterion(query, target_coords[reachable], keys, t.indices, ctx.generator)
        return ObjectiveOutput(loss, logs)
