"""Occupancy prediction on masked regions: which coarse cells hidden from the student hold events?

Occupancy-MAE/R-MAE score every cell of the grid with plain BCE; with ~0.02 % of cells occupied
the loss is dominated by trivially empty space. Here the student is scored only where the answer
is informative: the coarse cells of masked regions (positives, occupied in the full input) and
empty cells sampled around them (negatives: the boundary the decoder must get right), with
positive weighting or focal loss on top.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .sparse_ops import (
    CoordIndex,
    NeighbourConv,
    as_sparse_pair,
    coarsen,
    kernel_offsets,
    match_coords,
    unique_coords,
)


class OccupancyQueries(NamedTuple):
    coords: torch.Tensor  # (Q, 4) long: batch, t, y, x at the coarse stride; positives first
    targets: torch.Tensor  # (Q,) float 0/1
    num_positive: int


def occupancy_queries(
    full_coords: torch.Tensor,
    visible_coords: torch.Tensor,
    masked_coords: torch.Tensor,
    stride: Sequence[int],
    num_empty_per_positive: float = 1.0,
    neighbourhood: int | Sequence[int] = 1,
    grid_shape: Sequence[int] | None = None,
    exclude_partially_visible: bool = False,
    generator: torch.Generator | None = None,
) -> OccupancyQueries:
    """Coarse cells to score and their occupancy targets.

    full_coords, visible_coords, masked_coords: (N, 4) voxel coordinates (batch, t, y, x) at the
    input resolution, visible ∪ masked = full. ``stride`` (st, sy, sx) is the backbone's cumulative
    stride at the scale the decoder reads (``backbone.out_strides["x_conv4"]``, (4, 8, 8) by
    default); coarse cell = fine // stride, which is the backbone's own output frame.

    Positives: coarse cells containing a masked voxel (so occupied in the full voxelization). With
    ``exclude_partially_visible`` a cell that also holds a visible voxel is dropped, since the
    student sees that it is occupied; useful with voxel-level masking, pointless with masking
    aligned to the coarse grid.
    Negatives: cells within ``neighbourhood`` (Chebyshev radius in coarse cells per (t, y, x), an
    int or a triple) of a positive that are empty in the full voxelization and inside
    ``[0, grid_shape)`` (coarse grid; upper bound unchecked when None). For each sample
    ``round(num_empty_per_positive * its positives)`` are drawn uniformly without replacement
    (fewer if fewer exist)."""
    device = full_coords.device
    positives = coarsen(masked_coords, stride)
    if exclude_partially_visible and positives.shape[0]:
        positives = positives[match_coords(positives, coarsen(visible_coords, stride)) < 0]
    full_coarse = CoordIndex(coarsen(full_coords, stride))

    radius = (neighbourhood,) * 3 if isinstance(neighbourhood, int) else tuple(neighbourhood)
    offsets = kernel_offsets(tuple(2 * r + 1 for r in radius), device=device)[1:]  # drop the centre
    cand = (positives.unsqueeze(0) + offsets.unsqueeze(1)).reshape(-1, 4)
    keep = (cand[:, 1:] >= 0).all(1)
    if grid_shape is not None:
        keep &= (cand[:, 1:] < torch.tensor(list(grid_shape), device=device)).all(1)
    cand = cand[keep]
    cand = cand[full_coarse.lookup(cand) < 0]
    cand = unique_coords(cand)
    negatives = _sample_per_sample(cand, positives[:, 0], num_empty_per_positive, generator)

    coords = torch.cat([positives, negatives])
    targets = torch.zeros(coords.shape[0], device=device)
    targets[: positives.shape[0]] = 1
    return OccupancyQueries(coords, targets, positives.shape[0])


def _sample_per_sample(cand: torch.Tensor, pos_batch: torch.Tensor, ratio: float, generator) -> torch.Tensor:
    """Random rows of ``cand``, round(ratio * positives of sample b) per sample b."""
    if cand.shape[0] == 0:
        return cand
    nb = int(max(cand[:, 0].max().item(), pos_batch.max().item())) + 1
    quota = torch.round(torch.bincount(pos_batch, minlength=nb) * ratio).long()
    rand = torch.rand(cand.shape[0], generator=generator, device="cpu").to(cand.device)
    order = torch.argsort(rand)
    order = order[torch.argsort(cand[order, 0], stable=True)]  # by sample, random within a sample
    batch = cand[order, 0]
    first = torch.searchsorted(batch, batch, right=False)
    rank = torch.arange(cand.shape[0], device=cand.device) - first
    return cand[order[rank < quota[batch]]]


class OccupancyDecoder(nn.Module):
    """Logits of occupancy at query cells from the student's coarse sparse features.

    A submanifold-style ``NeighbourConv`` mixes context among the student's own sites, then a second
    one reads, for every query cell, the student sites in its kernel neighbourhood; cells with no
    student site within reach get only the bias (a constant prior). Queries never see each other
    (see ``NeighbourConv``)."""

    def __init__(self, in_channels: int, hidden: int = 64, kernel_size: int = 3):
        super().__init__()
        self.context = NeighbourConv(in_channels, hidden, kernel_size)
        self.norm = nn.LayerNorm(hidden)
        self.query = NeighbourConv(hidden, hidden, kernel_size)
        self.head = nn.Linear(hidden, 1)

    def forward(self, student, query_coords: torch.Tensor) -> torch.Tensor:
        """student: SparseConvTensor or (features (N, C), coords (N, 4)); query_coords (Q, 4) -> (Q,)."""
        features, coords = as_sparse_pair(student)
        index = CoordIndex(coords)
        h = F.relu(self.norm(self.context(features, self.context.neighbours(index, coords))))
        q = F.relu(self.query(h, self.query.neighbours(index, query_coords)))
        return self.head(q).squeeze(1)


class OccupancyLoss(nn.Module):
    """Binary occupancy loss, mean over queries.

    kind="bce": BCE with ``pos_weight`` multiplying the positive term (torch's convention).
    kind="focal": focal loss (Lin et al.) with ``gamma`` and ``alpha`` (weight of positives;
    None for no class weighting)."""

    def __init__(self, kind="bce", pos_weight: float = 1.0, gamma: float = 2.0, alpha: float | None = 0.25):
        super().__init__()
        if kind not in ("bce", "focal"):
            raise ValueError(f"kind must be 'bce' or 'focal', got {kind!r}")
        self.kind, self.pos_weight, self.gamma, self.alpha = kind, pos_weight, gamma, alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.to(logits.dtype)
        if logits.numel() == 0:
            return logits.sum() * 0.0  # keeps the decoder in the graph (DDP needs every used param)
        if self.kind == "bce":
            pw = logits.new_tensor(self.pos_weight)
            return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pw)
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * (1 - p_t) ** self.gamma
        if self.alpha is not None:
            loss = loss * (self.alpha * targets + (1 - self.alpha) * (1 - targets))
        return loss.mean()
