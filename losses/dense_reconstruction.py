"""Latent reconstruction on dense feature maps (the detector's RVT stages), aimed at masked content.

A dense map has a value at every cell, so "where the student could not see" is graded rather than
a set of sites: each cell of a stage's map is weighted by the share of its input voxels that were
masked (:func:`masked_cell_weights`). A cell the student saw whole weighs 0, one it saw nothing of
weighs 1, and a cell without events weighs 0 (nothing there was hidden). Deep stages have cells of
32 px or more, which tubes of a few pixels rarely hide whole; a set of wholly hidden cells would
leave them almost nothing to learn from.

Targets are the teacher's features standardised per sample and channel over the map (instance
norm without affine), not per cell over channels as for the sparse scales: at initialisation RVT's
stages are almost their ConvLSTM's biases (LayerScale 1e-5), so every cell holds nearly the same
channel pattern. Normalised per cell, that shared pattern is what the student must predict, and it
does so at once (a loss of 0.005 within 90 steps of the first study run, with a gradient at the
backbone 1000 times smaller than the other terms'); standardised per channel, it is removed and
what is left is what the input changes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def masked_cell_weights(
    coords: torch.Tensor, visible: torch.Tensor, batch_size: int, cell: Sequence[int], shape: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per cell of a map with ``cell`` = (y, x) input pixels per cell and ``shape`` = (H, W) cells:
    the masked share of the input voxels ``coords`` ((N, 4) = batch, t, y, x) that fall in it,
    (B, H, W) float, and whether any voxel falls in it, (B, H, W) bool. ``visible`` (N,) bool says
    which voxels the student was given."""
    height, width = (int(v) for v in shape)
    weights = torch.zeros(batch_size * height * width, device=coords.device)
    counts = torch.zeros_like(weights)
    if coords.shape[0]:
        coords = coords.long()
        y, x = coords[:, 2] // int(cell[0]), coords[:, 3] // int(cell[1])
        if int(y.max()) >= height or int(x.max()) >= width:
            raise ValueError(f"voxels reach cell ({int(y.max())}, {int(x.max())}) outside the {height}x{width} map")
        flat = (coords[:, 0] * height + y) * width + x
        counts.index_add_(0, flat, torch.ones_like(flat, dtype=weights.dtype))
        weights.index_add_(0, flat, (~visible).to(weights.dtype))
    shape3 = (batch_size, height, width)
    return (weights / counts.clamp(min=1)).view(shape3), (counts > 0).view(shape3)


def weighted_latent_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·‖pred − IN(target)‖² / (C·Σ w) over cells, IN standardising each sample's channel over
    the map; ``prediction`` and ``target`` (B, C, H, W), ``weights`` (B, H, W). Zero (with a
    gradient path) when no cell weighs anything."""
    if prediction.shape != target.shape or prediction.shape[-2:] != weights.shape[-2:]:
        raise ValueError(
            f"shapes differ: prediction {tuple(prediction.shape)}, target {tuple(target.shape)}, "
            f"weights {tuple(weights.shape)}"
        )
    target = F.instance_norm(target.detach().float(), eps=1e-6)
    error = (prediction.float() - target).pow(2).mean(1)
    total = weights.sum()
    if float(total) == 0.0:
        return prediction.sum() * 0.0
    return (error * weights).sum() / total
