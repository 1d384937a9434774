"""Voxel-level InfoNCE between the masked student's predictions and the EMA teacher's embeddings.

Anchor: a student embedding at a site (in pretraining, predicted at a masked teacher site from
the visible context around it). Positive: the teacher's embedding at the same (batch, t, y, x).
Negatives:
teacher voxels sampled from the whole batch. Voxels of the same object are near each other, so a
sampled negative in the same sample within ``exclusion_radius`` (Euclidean, in coarse cells, over
(y, x), at any time bin) of the anchor is a likely false negative and is masked out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .infonce import info_nce
from .sparse_ops import match_coords


def exclusion_mask(anchor_coords: torch.Tensor, negative_coords: torch.Tensor, radius: float) -> torch.Tensor:
    """(A, M) True where negative m is in anchor a's sample and within ``radius`` of it in (y, x).

    The anchor's own (y, x) is always excluded, even for a negative radius."""
    same = anchor_coords[:, None, 0] == negative_coords[None, :, 0]
    d = (anchor_coords[:, None, 2:] - negative_coords[None, :, 2:]).float()
    d2 = (d * d).sum(-1)
    return same & (d2 <= max(radius, 0.0) ** 2)


class VoxelInfoNCELoss(nn.Module):
    """Takes projected embeddings (normalised again here, harmlessly) with their coordinates.

    ``max_anchors`` and ``max_negatives`` cap the (A, M) logit matrix; both are drawn uniformly
    from the batch (anchors among student voxels that have a teacher counterpart)."""

    def __init__(self, temperature=0.1, max_negatives=4096, max_anchors=4096, exclusion_radius=1.0):
        super().__init__()
        self.temperature, self.max_negatives = temperature, max_negatives
        self.max_anchors, self.exclusion_radius = max_anchors, exclusion_radius

    def forward(
        self,
        student_emb: torch.Tensor,
        student_coords: torch.Tensor,
        teacher_emb: torch.Tensor,
        teacher_coords: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """student_emb (Ns, D), student_coords (Ns, 4); teacher_emb (Nt, D), teacher_coords (Nt, 4)."""
        student_emb = F.normalize(student_emb, dim=-1)
        teacher_emb = F.normalize(teacher_emb.detach(), dim=-1)
        pos = match_coords(student_coords, teacher_coords)
        anchor_rows = torch.nonzero(pos >= 0).squeeze(1)
        if anchor_rows.numel() == 0:
            return student_emb.sum() * 0.0
        anchor_rows = anchor_rows[_subset(anchor_rows.numel(), self.max_anchors, generator).to(pos.device)]
        neg_rows = _subset(teacher_emb.shape[0], self.max_negatives, generator).to(teacher_emb.device)
        pos_rows = pos[anchor_rows]
        t_coords = teacher_coords.long()
        excluded = exclusion_mask(t_coords[pos_rows], t_coords[neg_rows], self.exclusion_radius)
        anchors, positives, negatives = student_emb[anchor_rows], teacher_emb[pos_rows], teacher_emb[neg_rows]
        return info_nce(anchors, positives, negatives, excluded, self.temperature)


def _subset(n: int, cap: int, generator) -> torch.Tensor:
    """All of range(n), or ``cap`` of them drawn without replacement (on the CPU generator)."""
    if n <= cap:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:cap]
