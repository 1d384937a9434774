"""Integer-coordinate helpers shared by the losses: lookup, coarsening, and a gather convolution.

The losses work on plain tensors (features plus (batch, t, y, x) coordinates) so they depend on
neither spconv nor the backbone's internals; ``as_sparse_pair`` accepts a spconv
``SparseConvTensor`` by duck typing (``.features``/``.indices``), so nothing here imports spconv.

Coordinates are matched by linearising them into int64 keys over the bounding box of the
reference set, sorting once and using ``searchsorted``: O((N + Q) log N), vectorised, torch only
(no torch-scatter, no Python dicts).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

_MAX_KEY = 2**62


def as_sparse_pair(x) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, C), coords (N, 4) long) from a SparseConvTensor or a (features, coords) pair."""
    if hasattr(x, "features") and hasattr(x, "indices"):
        return x.features, x.indices.long()
    features, coords = x
    return features, coords.long()


class CoordIndex:
    """A sorted index over a set of integer coordinates, answering "which row holds this coordinate?".

    Keys are computed relative to the reference set's bounding box, so they are a bijection on that
    box: a query outside it cannot alias onto a stored coordinate (e.g. x = -1 wrapping to the
    previous row). The reference coordinates should be unique (spconv guarantees it for active
    sites); with duplicates the lowest row index is returned."""

    def __init__(self, coords: torch.Tensor):
        coords = coords.long()
        self.num = coords.shape[0]
        dims = coords.shape[1]
        if self.num == 0:
            self.lo = coords.new_zeros(dims)
            self.extent = coords.new_ones(dims)
        else:
            self.lo = coords.min(0).values
            self.extent = coords.max(0).values - self.lo + 1
        if math.prod(self.extent.tolist()) >= _MAX_KEY:
            raise OverflowError(f"coordinate box {self.extent.tolist()} too large for int64 keys")
        keys = self._keys(coords - self.lo)
        self.sorted_keys, self.order = torch.sort(keys, stable=True)

    def _keys(self, rel: torch.Tensor) -> torch.Tensor:
        keys = rel[:, 0].clone()
        for d in range(1, rel.shape[1]):
            keys.mul_(self.extent[d]).add_(rel[:, d])
        return keys

    def lookup(self, query: torch.Tensor) -> torch.Tensor:
        """Row index into the reference set for each query coordinate (Q, D), or -1 where absent."""
        query = query.long()
        if self.num == 0 or query.shape[0] == 0:
            return torch.full((query.shape[0],), -1, dtype=torch.long, device=query.device)
        rel = query - self.lo
        inside = ((rel >= 0) & (rel < self.extent)).all(1)
        keys = self._keys(torch.minimum(rel.clamp(min=0), self.extent - 1))
        pos = torch.searchsorted(self.sorted_keys, keys).clamp(max=self.num - 1)
        hit = inside & (self.sorted_keys[pos] == keys)
        return torch.where(hit, self.order[pos], torch.full_like(pos, -1))


def unique_coords(coords: torch.Tensor) -> torch.Tensor:
    """Unique rows of an (N, D) integer tensor, sorted lexicographically, as long.

    Same result as ``torch.unique(coords, dim=0)``, ~100x faster on the CPU: one sort of int64
    keys instead of a lexicographic sort of rows."""
    coords = coords.long()
    if coords.shape[0] == 0:
        return coords
    index = CoordIndex(coords)
    keys = torch.unique_consecutive(index.sorted_keys)
    out = torch.empty(keys.shape[0], coords.shape[1], dtype=torch.long, device=coords.device)
    for d in range(coords.shape[1] - 1, 0, -1):
        out[:, d] = keys % index.extent[d]
        keys = keys // index.extent[d]
    out[:, 0] = keys
    return out + index.lo


def match_coords(query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Row of ``reference`` holding each row of ``query`` (-1 where absent); both (N, D) integer."""
    return CoordIndex(reference).lookup(query)


def coarsen(coords: torch.Tensor, stride: Sequence[int]) -> torch.Tensor:
    """Unique coarse cells (batch, t // st, y // sy, x // sx), sorted, as long.

    Floor division matches spconv's indexing after strided convs with kernel 3, padding 1: the
    output site o is centred on input 2o, so a fine voxel i belongs to the coarse cell i // 2."""
    coords = coords.long()
    if len(stride) != coords.shape[1] - 1:
        raise ValueError(f"stride {tuple(stride)} must have one entry per non-batch axis")
    s = torch.tensor([1, *stride], dtype=torch.long, device=coords.device)
    return unique_coords(torch.div(coords, s, rounding_mode="floor"))


def hidden_sites(
    site_coords: torch.Tensor, visible_coords: torch.Tensor, masked_coords: torch.Tensor, stride: Sequence[int]
) -> torch.Tensor:
    """(N,) bool: which coarse sites lie inside masked regions, out of the student's direct view.

    ``site_coords`` (N, 4) are sites of a feature map with cumulative ``stride``; ``visible_coords``
    and ``masked_coords`` the fine input voxels the student was given and was denied. A site is
    hidden when its cell holds a masked voxel and no visible one: the student can only reach it
    from context. (Sites that hold no input voxel at all, grown by strided convs, are not hidden:
    nothing was taken away there.)"""
    site_coords = site_coords.long()
    if site_coords.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=site_coords.device)
    masked = match_coords(site_coords, coarsen(masked_coords, stride)) >= 0
    seen = match_coords(site_coords, coarsen(visible_coords, stride)) >= 0
    return masked & ~seen


def kernel_offsets(kernel_size: int | Sequence[int], device=None) -> torch.Tensor:
    """(K, 4) offsets (0, dt, dy, dx) of a centred kernel, the centre offset first."""
    ks = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
    if any(k < 1 or k % 2 == 0 for k in ks):
        raise ValueError(f"kernel sizes must be odd and positive, got {ks}")
    axes = [torch.arange(-(k // 2), k // 2 + 1, device=device) for k in ks]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    grid = grid[torch.argsort(grid.abs().sum(1), stable=True)]  # centre first
    return torch.cat([grid.new_zeros(grid.shape[0], 1), grid], 1)


def neighbour_rows(index: CoordIndex, out_coords: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(K, Q) row of the indexed set at ``out_coords + offsets[k]``, -1 where no site exists."""
    K, Q = offsets.shape[0], out_coords.shape[0]
    shifted = (out_coords.long().unsqueeze(0) + offsets.unsqueeze(1)).reshape(K * Q, -1)
    return index.lookup(shifted).reshape(K, Q)


class NeighbourConv(nn.Module):
    """A sparse convolution evaluated at arbitrary output coordinates: out[q] = b + Σ_k W_k f[q + o_k].

    With the input's own coordinates as outputs it is a submanifold conv; with other coordinates
    (query cells, the teacher's voxels) it reads only the input's features, so the output set
    itself never leaks into the result. That is why the decoders use it rather than a SubM conv on
    the union of input and query sites: there, query cells would see each other, and the layout
    of queries (positives and the empties sampled around them) would reveal the answer."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3, bias=True):
        super().__init__()
        self.register_buffer("offsets", kernel_offsets(kernel_size), persistent=False)
        K = self.offsets.shape[0]
        bound = 1.0 / math.sqrt(K * in_channels)
        self.weight = nn.Parameter(torch.empty(K, in_channels, out_channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None

    def neighbours(self, index: CoordIndex, out_coords: torch.Tensor) -> torch.Tensor:
        return neighbour_rows(index, out_coords, self.offsets)

    def forward(self, features: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """features (N, C_in); neighbours (K, Q) from ``neighbours()`` -> (Q, C_out).

        Missing neighbours read an appended zero row rather than being filtered out: no host sync
        for a nonzero(), and every weight stays in the graph even when nothing is in reach (DDP
        requires every parameter to receive a gradient)."""
        padded = torch.cat([features, features.new_zeros(1, features.shape[1])])
        rows = torch.where(neighbours >= 0, neighbours, features.shape[0])
        out = padded[rows[0]] @ self.weight[0]
        for k in range(1, rows.shape[0]):  # K small matmuls keep memory at O(Q·C), not O(K·Q·C)
            out = out + padded[rows[k]] @ self.weight[k]
        return out if self.bias is None else out + self.bias
