"""Speed of the sparse backbone against a dense ``Conv3d`` network of the same shape.

The dense twin has the same stages, channels, kernels, strides, padding and residual blocks
(submanifold convs become ordinary 3x3x3 convs), so the comparison isolates what sparsity buys
at a given occupancy. Voxels are drawn uniformly at random: the worst case for sparse convs,
since scattered sites dilate most under strided convs; real events cluster along edges.
Timings are medians of forward + backward (training mode): on the CPU one thread by default, on
CUDA synchronised around every run. Under float16 autocast spconv runs its fp16 kernels and the
dense twin cuDNN's.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import nn

from evcmae.events.benchmarks import check_device, device_info, device_sync, median_ms

from .sparse_resnet import SparseVoxelBackbone
from .spconv_compat import spconv


class _DenseBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv3d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c, eps=1e-3, momentum=0.01)
        self.conv2 = nn.Conv3d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(c, eps=1e-3, momentum=0.01)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


def dense_twin(sparse: SparseVoxelBackbone) -> nn.Module:
    """A dense network with the sparse backbone's layout, built from its configuration."""

    def cbr(c_in, c_out, kernel, stride, padding):
        return [
            nn.Conv3d(c_in, c_out, kernel, stride, padding, bias=False),
            nn.BatchNorm3d(c_out, eps=1e-3, momentum=0.01),
            nn.ReLU(),
        ]

    stages = [nn.Sequential(*cbr(sparse.in_channels, sparse.channels[0], 3, 1, 1))]
    c_prev = sparse.channels[0]
    for i, (c, n, s) in enumerate(zip(sparse.channels, sparse.blocks, sparse.strides)):
        layers = []
        if s != (1, 1, 1):
            layers += cbr(c_prev, c, tuple(2 * k - 1 for k in s), s, tuple(k - 1 for k in s))
        elif i > 0:
            layers += cbr(c_prev, c, 3, 1, 1)
        layers += [_DenseBlock(c) for _ in range(n)]
        stages.append(nn.Sequential(*layers))
        c_prev = c
    return _DenseStack(stages)


class _DenseStack(nn.Module):
    def __init__(self, stages):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        x = self.stages[0](x)
        outs = []
        for stage in self.stages[1:]:
            x = stage(x)
            outs.append(x)
        return outs


def random_voxels(
    batch_size: int, grid: Sequence[int], occupancy: float, channels: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique sorted (batch, t, y, x) int32 coordinates filling ``occupancy`` of each sample's grid."""
    T, H, W = grid
    cells = T * H * W
    n = max(1, round(occupancy * cells))
    coords = []
    for b in range(batch_size):
        lin = torch.randperm(cells, generator=generator)[:n].sort().values
        coords.append(torch.stack([torch.full_like(lin, b), lin // (H * W), lin // W % H, lin % W], 1))
    coords = torch.cat(coords).to(torch.int32).contiguous()
    return coords, torch.rand(len(coords), channels, generator=generator)


def _step(model, make_input, autocast_dtype=None):
    model.zero_grad(set_to_none=True)
    x = make_input()
    device = x.features.device.type if hasattr(x, "features") else x.device.type
    precision = torch.autocast(device, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with precision:
        out = model(x)
        feats = [o.features for o in out.values()] if isinstance(out, dict) else out
        loss = sum(f.float().mean() for f in feats)
    loss.backward()


# Per device: the grid, batch and precisions a run measures by default. On a GPU a 10x90x160 grid
# is launch-bound and says nothing; 10x360x640 is the voxel grid of a 640x360 window.
# ``new_sizes``: also time the sparse step on a fresh voxel set of a slightly different size at every
# call, as in training, where no two batches hold the same number of voxels. On the first GPU run the
# pretraining step's backward took 12x its forward while this benchmark's fixed voxel set ran fast;
# the two columns side by side tell whether spconv pays per new problem size (kernel tuning).
DEFAULTS = {
    "cpu": {"grid": (10, 90, 160), "batch_size": 2, "precisions": ("float32",), "threads": 1, "new_sizes": False},
    "cuda": {
        "grid": (10, 360, 640),
        "batch_size": 2,
        "precisions": ("float32", "float16"),
        "threads": None,
        "new_sizes": True,
    },
}
NEW_SIZE_STEP = 0.01  # each fresh set holds 1 %, 2 %, ... more voxels than the fixed one
QUICK = {"grid": (6, 24, 32), "batch_size": 1, "repeats": 2}
AUTOCAST = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _fresh_inputs(batch_size, grid, occupancy, channels, gen, count, device):
    """A callable returning, call after call, ``count`` voxel sets of growing size (drawn now)."""
    sets = []
    for k in range(1, count + 1):
        coords, feats = random_voxels(batch_size, grid, occupancy * (1 + NEW_SIZE_STEP * k), channels, gen)
        sets.append(spconv.SparseConvTensor(feats.to(device), coords.to(device), list(grid), batch_size))
    remaining = iter(sets)
    return lambda: next(remaining)


def bench_backbone(
    grid: Sequence[int] | None = None,
    batch_size: int | None = None,
    occupancies: Sequence[float] = (0.02, 0.05, 0.20),
    repeats: int = 5,
    threads: int | None = -1,
    seed: int = 0,
    device: str = "cpu",
    precisions: Sequence[str] | None = None,
    quick: bool = False,
    new_sizes: bool | None = None,
) -> dict:
    """Forward + backward time of ``SparseVoxelBackbone()`` and its dense twin on a
    ``batch_size`` x ``grid`` (T, H, W) input, per occupancy and precision ("float32", or
    "float16"/"bfloat16" under autocast). The dense cost does not depend on occupancy, so it is
    measured once per precision and shared by its rows. ``quick``: a tiny grid, to check the
    wiring. ``threads`` -1: the device's default (1 on CPU, torch's own on CUDA). ``new_sizes``
    (default: on CUDA only) adds ``sparse_new_sizes_ms``: the same step on a new voxel set of a new
    size at every call, sets drawn before timing."""
    device = check_device(device)
    defaults = {**DEFAULTS[device], **(QUICK if quick else {})}
    grid = tuple(grid or defaults["grid"])
    batch_size = batch_size or defaults["batch_size"]
    repeats = defaults.get("repeats", repeats) if quick else repeats
    precisions = tuple(precisions or defaults["precisions"])
    threads = defaults["threads"] if threads == -1 else threads
    new_sizes = defaults["new_sizes"] if new_sizes is None else new_sizes
    unknown = set(precisions) - set(AUTOCAST)
    if unknown:
        raise ValueError(f"precisions must be among {sorted(AUTOCAST)}, not {sorted(unknown)}")
    sync = device_sync(device)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        sparse = SparseVoxelBackbone().train().to(device)
        dense = dense_twin(sparse).train().to(device)
        T, H, W = grid
        dense_x = torch.rand(batch_size, sparse.in_channels, T, H, W, generator=gen).to(device)
        inputs = [(occ, *random_voxels(batch_size, grid, occ, sparse.in_channels, gen)) for occ in occupancies]
        rows = []
        for precision in precisions:
            dtype = AUTOCAST[precision]
            dense_ms = median_ms(lambda dtype=dtype: _step(dense, lambda: dense_x, dtype), repeats, sync=sync)
            for occ, coords, feats in inputs:
                coords, feats = coords.to(device), feats.to(device)

                def make(feats=feats, coords=coords):
                    return spconv.SparseConvTensor(feats, coords, list(grid), batch_size)

                sparse_ms = median_ms(lambda make=make, dtype=dtype: _step(sparse, make, dtype), repeats, sync=sync)
                row = {
                    "precision": precision,
                    "occupancy": occ,
                    "voxels": len(coords),
                    "sparse_ms": round(sparse_ms, 2),
                    "dense_ms": round(dense_ms, 2),
                    "speedup": round(dense_ms / sparse_ms, 2),
                }
                if new_sizes:
                    fresh = _fresh_inputs(batch_size, grid, occ, sparse.in_channels, gen, repeats + 1, device)
                    new_ms = median_ms(lambda f=fresh, dtype=dtype: _step(sparse, f, dtype), repeats, sync=sync)
                    row["sparse_new_sizes_ms"] = round(new_ms, 2)
                    row["new_sizes_slowdown"] = round(new_ms / sparse_ms, 2)
                rows.append(row)
    finally:
        torch.set_num_threads(old_threads)
    return {
        "benchmark": "backbone",
        **device_info(device),
        "grid": list(grid),
        "batch_size": batch_size,
        "threads": threads or old_threads,
        "repeats": repeats,
        "rows": rows,
    }
