"""Per-sample masking of sparse voxels for the masked student.

Voxels are grouped into units (single voxels, spatial tubes through all time bins, or
spatio-temporal blocks); in each sample a fraction ``ratio`` of the units it actually occupies is
masked. Counting occupied units rather than grid cells keeps the ratio meaningful on event data,
where most of the grid is empty. Every sample gets its own draw (R-MAE draws one per batch), and
the draw is a permutation (``torch.randperm``), so no unit is picked twice or skipped, unlike
``random.shuffle`` on a tensor, which swaps views and duplicates rows.

Tubes are the default: an event edge moves only a few pixels per time bin, so masking a patch in
some bins but not others lets the student copy it from the neighbouring bins.

**Tube size from the data (``patch_size: auto``, the default).** A tube larger than the objects
hides an object whole or not at all, and the student learns to guess where objects are, not what
they look like. The rule: the tube side is the median short side of the labelled boxes, in voxels,
rounded down to a multiple of the spatial stride of the deepest scale the objectives read (so a
tube covers whole cells there), and at least one such stride. On the demo and study presets
(320×180, all classes, stride 4) that is 8 px (each run prints it: "masking tubes of 8x8 voxels");
16 px tubes were the fixed default before. With no labelled box in the data root it falls back to
``FALLBACK_PATCH`` and says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch

STRATEGIES = ("random", "tube", "block")
FALLBACK_PATCH = (16, 16)


def tube_size_from_boxes(short_sides_vox, stride: int) -> tuple[int, int]:
    """The rule above: median short side (voxels), floored to a multiple of ``stride``, >= stride."""
    import numpy as np

    sides = np.asarray(short_sides_vox, dtype=np.float64)
    if sides.size == 0:
        return FALLBACK_PATCH
    side = max(int(stride), int(np.median(sides) // stride) * int(stride))
    return side, side


@dataclass(frozen=True)
class MaskingConfig:
    """``patch_size`` (py, px) is used by ``tube``; ``block_size`` (pt, py, px) by ``block``.
    16 px is a multiple of the backbone's spatial stride 8, so a masked patch covers whole cells of
    the coarsest scale; 4 bins matches its time stride."""

    strategy: str = "tube"
    ratio: float = 0.7
    patch_size: tuple[int, int] | str = (16, 16)
    block_size: tuple[int, int, int] = (4, 16, 16)

    def resolve(self, datamodule, backbone, scale: str) -> MaskingConfig:
        """This config with ``patch_size: auto`` replaced by the box-size rule (module docstring),
        measured on ``datamodule.box_short_sides()`` (voxels) at ``scale``'s spatial stride."""
        if self.patch_size != "auto":
            return self
        sides = datamodule.box_short_sides() if hasattr(datamodule, "box_short_sides") else []
        stride = int(backbone.out_strides[scale][1])
        patch = tube_size_from_boxes(sides, stride)
        if len(sides) == 0:
            import warnings

            warnings.warn(f"masking.patch_size=auto: no labelled boxes found; using {patch}", stacklevel=2)
        print(f"evcmae: masking tubes of {patch[0]}x{patch[1]} voxels (median box short side over {len(sides)} boxes)")
        return dataclasses.replace(self, patch_size=patch)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown masking strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"mask ratio must be in (0, 1), got {self.ratio}")
        if self.patch_size == "auto":
            return
        if len(self.patch_size) != 2 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be two positive ints (py, px), got {self.patch_size}")
        if len(self.block_size) != 3 or min(self.block_size) < 1:
            raise ValueError(f"block_size must be three positive ints (pt, py, px), got {self.block_size}")

    def __call__(self, coords: torch.Tensor, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.patch_size == "auto":
            raise ValueError("masking.patch_size=auto must be resolved from the data first (MaskingConfig.resolve)")
        return mask_voxels(coords, batch_size, self.strategy, self.ratio, self.patch_size, self.block_size, generator)


def mask_voxels(
    coords: torch.Tensor,
    batch_size: int,
    strategy: str = "tube",
    ratio: float = 0.7,
    patch_size: Sequence[int] = (16, 16),
    block_size: Sequence[int] = (4, 16, 16),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Visibility (N,) bool for voxels ``coords`` (N, 4) = (batch, t, y, x); True = kept.

    Each sample masks ``round(ratio * n)`` of its ``n`` occupied units, but always keeps at least
    one, so the student never sees an empty sample. Same generator state, same mask."""
    # A config must mask something and keep something (ratio in (0, 1)); the function itself
    # accepts the ends, where 0 keeps everything and 1 keeps one unit per sample.
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
    cfg = MaskingConfig(strategy, 0.5, tuple(patch_size), tuple(block_size))  # validates the units
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be (N, 4) = (batch, t, y, x), got shape {tuple(coords.shape)}")
    if coords.shape[0] == 0:
        return torch.ones(0, dtype=torch.bool, device=coords.device)
    sample = coords[:, 0].long()
    if int(sample.min()) < 0 or int(sample.max()) >= batch_size:
        raise ValueError(f"batch indices must lie in [0, {batch_size}), got [{int(sample.min())}, {int(sample.max())}]")
    unit_of_voxel, unit_sample = unit_ids(coords, cfg)
    masked_unit = _draw(unit_sample, batch_size, ratio, generator)
    return ~masked_unit[unit_of_voxel]


def unit_ids(coords: torch.Tensor, cfg: MaskingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit index of each voxel, sample of each unit); units are numbered 0..U-1.
    Useful to a loss that needs the masked regions (patches), not only the masked voxels."""
    c = coords.long()
    sample = c[:, 0]
    if cfg.strategy == "random":  # voxels are unique, so each voxel is its own unit
        return torch.arange(len(c), device=c.device), sample
    if cfg.strategy == "tube":
        cells = torch.stack([c[:, 2] // cfg.patch_size[0], c[:, 3] // cfg.patch_size[1]], 1)
    else:
        pt, py, px = cfg.block_size
        cells = torch.stack([c[:, 1] // pt, c[:, 2] // py, c[:, 3] // px], 1)
    key = sample
    for col in cells.unbind(1):  # mixed radix, sample most significant
        key = key * (int(col.max()) + 1) + col
    _, unit_of_voxel = torch.unique(key, return_inverse=True)
    unit_sample = torch.empty(int(unit_of_voxel.max()) + 1, dtype=torch.long, device=c.device)
    unit_sample.scatter_(0, unit_of_voxel, sample)
    return unit_of_voxel, unit_sample


def _draw(unit_sample: torch.Tensor, batch_size: int, ratio: float, generator: torch.Generator | None) -> torch.Tensor:
    """Masked flag per unit: a random order within each sample, the first ``n_mask`` masked."""
    device = unit_sample.device
    n_units = len(unit_sample)
    # A global permutation, then a stable sort by sample: within each sample the order stays uniform.
    gen_device = generator.device if generator is not None else device
    perm = torch.randperm(n_units, generator=generator, device=gen_device).to(device)
    order = perm[torch.argsort(unit_sample[perm], stable=True)]
    per_sample = torch.bincount(unit_sample, minlength=batch_size)
    start = torch.cumsum(per_sample, 0) - per_sample
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n_units, device=device) - start[unit_sample[order]]
    n_mask = torch.floor(per_sample.double() * ratio + 0.5).long()
    n_mask = torch.minimum(n_mask, (per_sample - 1).clamp(min=0))
    return rank < n_mask[unit_sample]
