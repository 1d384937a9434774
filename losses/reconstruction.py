"""Multi-scale latent reconstruction: the masked student predicts the EMA teacher's features.

Targets are the teacher's features normalised per voxel (LayerNorm without affine), as MAE
normalises pixel targets: it removes the per-voxel scale the student would otherwise have to
chase and makes scales with different feature magnitudes comparable.

**Where the student lacks a voxel.** The teacher sees the full input, so at every scale it has
active sites the student does not, and those are mostly in masked regions: precisely what is
worth reconstructing. Each scale's decoder is therefore evaluated *at the teacher's
coordinates*: a ``NeighbourConv`` reads the student sites within its kernel (3³ by default) of
each teacher voxel, then an MLP maps to the teacher's channels. A teacher voxel the student also
has uses its own feature plus neighbours; a voxel inside the masked band is predicted from the
visible context around it. Teacher voxels with no student site within the kernel are not
scored (a local decoder can only output a constant there) and are reported as ``coverage``.
Deeper scales dilate the student's active set (strided sparse convs), so coverage grows with
depth; widen ``kernel_size`` to reach further. ``kernel_size=1`` reduces to a per-voxel MLP on
exactly the coordinates both share.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .sparse_ops import CoordIndex, NeighbourConv, as_sparse_pair

DEFAULT_SCALES = ("x_conv2", "x_conv3", "x_conv4")


def normalized_targets(features: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-voxel LayerNorm without affine parameters, detached (the teacher gets no gradient)."""
    features = features.detach().float()
    return F.layer_norm(features, features.shape[-1:], eps=eps)


class ReconstructionDecoder(nn.Module):
    """Predicts teacher features at ``target_coords`` from student sites around each of them."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int | None = None, kernel_size: int = 3):
        super().__init__()
        hidden = hidden or out_channels
        self.gather = NeighbourConv(in_channels, hidden, kernel_size)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(hidden, out_channels))

    def forward(self, features, coords, target_coords) -> tuple[torch.Tensor, torch.Tensor]:
        """-> predictions (Q, out_channels) and ``reachable`` (Q,) bool: a student site was in reach."""
        neighbours = self.gather.neighbours(CoordIndex(coords), target_coords)
        return self.mlp(self.gather(features, neighbours)), (neighbours >= 0).any(0)


class ReconstructionResult(NamedTuple):
    loss: torch.Tensor  # mean over scales of the mean over scored voxels
    per_scale: dict  # scale -> loss (detached)
    coverage: dict  # scale -> fraction of the (targeted) teacher voxels in the student's reach (float)


class MultiScaleReconstructionLoss(nn.Module):
    """One light decoder per scale; MSE or smooth-L1 (``beta``) against normalised teacher features.

    ``student_channels``/``teacher_channels`` map scale name -> channels (teacher defaults to the
    student's: same architecture). The loss of a scale is averaged over its scored voxels (and
    channels); the total over the scales that had any scored voxel."""

    def __init__(
        self,
        student_channels: Mapping[str, int],
        teacher_channels: Mapping[str, int] | None = None,
        scales: Sequence[str] = DEFAULT_SCALES,
        hidden: int | None = None,
        kernel_size: int = 3,
        loss: str = "mse",
        beta: float = 1.0,
    ):
        super().__init__()
        if loss not in ("mse", "smooth_l1"):
            raise ValueError(f"loss must be 'mse' or 'smooth_l1', got {loss!r}")
        teacher_channels = teacher_channels or student_channels
        self.scales, self.loss_kind, self.beta = tuple(scales), loss, beta
        self.decoders = nn.ModuleDict(
            {
                s: ReconstructionDecoder(student_channels[s], teacher_channels[s], hidden, kernel_size)
                for s in self.scales
            }
        )

    def _distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss_kind == "mse":
            return F.mse_loss(pred, target)
        return F.smooth_l1_loss(pred, target, beta=self.beta)

    def forward(
        self, student: Mapping, teacher: Mapping, targets: Mapping[str, torch.Tensor] | None = None
    ) -> ReconstructionResult:
        """student/teacher: scale -> SparseConvTensor or (features (N, C), coords (N, 4)).
        ``targets``: scale -> (N_teacher,) bool, the teacher sites to score (all when None);
        pretraining passes the hidden ones, so only what the student could not see is scored."""
        losses, per_scale, coverage = [], {}, {}
        zero = None
        for s in self.scales:
            s_feat, s_coords = as_sparse_pair(student[s])
            t_feat, t_coords = as_sparse_pair(teacher[s])
            if targets is not None:
                t_feat, t_coords = t_feat[targets[s]], t_coords[targets[s]]
            pred, reachable = self.decoders[s](s_feat, s_coords, t_coords)
            coverage[s] = float(reachable.float().mean()) if reachable.numel() else 0.0
            if not bool(reachable.any()):
                zero = pred.sum() * 0.0 if zero is None else zero + pred.sum() * 0.0  # keep params in graph
                continue
            loss = self._distance(pred[reachable].float(), normalized_targets(t_feat[reachable]))
            per_scale[s] = loss.detach()
            losses.append(loss)
        total = torch.stack(losses).mean() if losses else None
        if zero is not None:
            total = zero if total is None else total + zero
        return ReconstructionResult(total, per_scale, coverage)
