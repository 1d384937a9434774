"""Sparse residual voxel backbone over (t, y, x), after OpenPCDet's ``VoxelResBackBone8x``.

Module names follow OpenPCDet (``conv_input``, ``conv1`` .. ``conv4``; a stage's opening
downsampling conv is ``convN.0``, its residual blocks follow), so weights move between the
pretraining model and the detector by name and shape.

Default strides, per stage, as (t, y, x): (1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), which gives
cumulative strides 1/1/2/4 in time and 1/2/4/8 in space. The time axis has only ~10 bins against
hundreds of pixels: halving it in every stage would leave 10 -> 5 -> 3 -> 2 bins, close to no
temporal order at all at the coarsest scale, where the latent reconstruction targets live. Keeping
full time resolution through the first downsampling leaves 10 -> 10 -> 5 -> 3 bins (early, middle,
late in the window), while space reaches the stride 8 the design asks for. The detector compresses
time afterwards anyway.

A downsampling conv uses kernel ``2s - 1`` and padding ``s - 1`` per axis (3 and 1 for stride 2,
as OpenPCDet), so every output side is ``ceil(side / s)``. On a stride-1 axis that is a kernel of
1: a 3-wide kernel there would dilate the active set along that axis (more voxels, no gain in
resolution), and the residual blocks mix along it anyway.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

from .movement import relative_movement
from .spconv_compat import spconv, to_sparse_tensor

Triple = tuple[int, int, int]
DEFAULT_CHANNELS = (16, 32, 64, 128)
DEFAULT_BLOCKS = (2, 2, 2, 2)
DEFAULT_STRIDES: tuple[Triple, ...] = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2))


def _norm(channels: int) -> nn.BatchNorm1d:
    # OpenPCDet's values; the larger eps also keeps fp16 training away from division blow-ups.
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


class SparseBasicBlock(spconv.SparseModule):
    """Two 3x3x3 submanifold convs with a residual connection; keeps channels and coordinates,
    so the identity needs no projection. Both convs share one ``indice_key`` (same sites, kernel
    and dilation), so the neighbour pairs are computed once per stage."""

    def __init__(self, channels: int, indice_key: str):
        super().__init__()
        self.conv1 = spconv.SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key)
        self.bn1 = _norm(channels)
        self.conv2 = spconv.SubMConv3d(channels, channels, 3, padding=1, bias=False, indice_key=indice_key)
        self.bn2 = _norm(channels)
        self.relu = nn.ReLU()

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        out = out.replace_feature(self.relu(self.bn2(out.features) + x.features))
        return out


def _down_block(c_in: int, c_out: int, stride: Triple, indice_key: str) -> spconv.SparseSequential:
    kernel = tuple(2 * s - 1 for s in stride)
    padding = tuple(s - 1 for s in stride)
    conv = spconv.SparseConv3d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False, indice_key=indice_key)
    return spconv.SparseSequential(conv, _norm(c_out), nn.ReLU())


def _channel_block(c_in: int, c_out: int, indice_key: str) -> spconv.SparseSequential:
    """Opening of a stage that does not downsample: a submanifold conv changes the width.
    (A kernel-1 sparse conv would hit spconv's 1x1 path, which reads its weight transposed.)"""
    conv = spconv.SubMConv3d(c_in, c_out, 3, padding=1, bias=False, indice_key=indice_key)
    return spconv.SparseSequential(conv, _norm(c_out), nn.ReLU())


class SparseVoxelBackbone(nn.Module):
    """Sparse voxels (N, in_channels) on a (T, H, W) grid -> features at four scales.

    ``forward`` returns ``{"x_conv1": ..., "x_conv4": ...}``; ``out_strides`` and ``out_channels``
    give each output's cumulative (t, y, x) stride and width, ``output_shapes`` its grid. Stage i
    (1-based) opens with a strided ``SparseConv3d`` under ``indice_key=f"spconv{i}"``, which a
    decoder inverts with ``SparseInverseConv3d(indice_key=f"spconv{i}")``; its residual blocks use
    ``f"subm{i}"``. Stage 1 has no opening conv when its stride is 1 (``conv_input`` already sets
    its width)."""

    def __init__(
        self,
        in_channels: int = 3,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        blocks: Sequence[int] = DEFAULT_BLOCKS,
        strides: Sequence[Sequence[int]] = DEFAULT_STRIDES,
    ):
        super().__init__()
        strides = tuple(tuple(int(v) for v in s) for s in strides)
        if not len(channels) == len(blocks) == len(strides):
            raise ValueError(
                f"channels, blocks and strides need one entry per stage: {len(channels)}, {len(blocks)}, {len(strides)}"
            )
        if any(len(s) != 3 or min(s) < 1 for s in strides):
            raise ValueError(f"each stride must be three positive ints (t, y, x), got {strides}")
        self.in_channels = in_channels
        self.channels = tuple(channels)
        self.blocks = tuple(blocks)
        self.strides = strides

        self.conv_input = spconv.SparseSequential(
            spconv.SubMConv3d(in_channels, channels[0], 3, padding=1, bias=False, indice_key="subm1"),
            _norm(channels[0]),
            nn.ReLU(),
        )
        c_prev = channels[0]
        for i, (c, n, s) in enumerate(zip(channels, blocks, strides), start=1):
            layers = []
            if s != (1, 1, 1):
                layers.append(_down_block(c_prev, c, s, f"spconv{i}"))
            elif i > 1:
                layers.append(_channel_block(c_prev, c, f"subm{i}"))
            layers += [SparseBasicBlock(c, f"subm{i}") for _ in range(n)]
            setattr(self, f"conv{i}", spconv.SparseSequential(*layers))
            c_prev = c

        names = [f"x_conv{i}" for i in range(1, len(channels) + 1)]
        cumulative = [(1, 1, 1)]
        for s in strides:
            cumulative.append(tuple(a * b for a, b in zip(cumulative[-1], s)))
        self.out_strides: dict[str, Triple] = dict(zip(names, cumulative[1:]))
        self.out_channels: dict[str, int] = dict(zip(names, self.channels))

    @property
    def num_stages(self) -> int:
        return len(self.channels)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Output names, shallow to deep: ``x_conv1`` .. ``x_conv{num_stages}``."""
        return tuple(self.out_strides)

    def stage_index(self, output: str) -> int:
        """1-based stage number of an output name (``x_conv3`` -> 3); a clear error otherwise."""
        if output not in self.out_strides:
            raise ValueError(f"unknown backbone output {output!r}; this backbone has {list(self.out_strides)}")
        return self.stage_names.index(output) + 1

    def stage_modules(self, until: str | None = None) -> dict[str, nn.Module]:
        """``{"conv_input": ..., "conv1": ..., ...}`` up to the stage producing ``until`` (all when
        None): the parameter-name prefixes a weight report can name stage by stage."""
        depth = self.num_stages if until is None else self.stage_index(until)
        modules = {"conv_input": self.conv_input}
        modules.update({f"conv{i}": getattr(self, f"conv{i}") for i in range(1, depth + 1)})
        return modules

    def deepest_stage_in(self, state: Mapping) -> str | None:
        """The deepest output whose stage has weights in ``state`` (a state dict of this kind of
        backbone), None when it has none: where to truncate before loading a detector's encoder,
        which was cut after its last stage."""
        prefixes = {key.split(".")[0] for key in state}
        modules = list(self.stage_modules())[1:]  # conv1 .. convN, after conv_input
        present = [name for name, module in zip(self.stage_names, modules) if module in prefixes]
        return present[-1] if present else None

    def truncate(self, until: str) -> SparseVoxelBackbone:
        """Delete the stages after the one producing ``until`` (in place; returns self). What is
        never run should not exist: DDP reports unused parameters, and checkpoints would carry
        dead weights. Earlier stages, their names and their outputs are unchanged."""
        depth = self.stage_index(until)
        for i in range(depth + 1, self.num_stages + 1):
            delattr(self, f"conv{i}")
        keep = self.stage_names[:depth]
        self.channels, self.blocks, self.strides = self.channels[:depth], self.blocks[:depth], self.strides[:depth]
        self.out_strides = {k: self.out_strides[k] for k in keep}
        self.out_channels = {k: self.out_channels[k] for k in keep}
        return self

    def output_shapes(self, spatial_shape: Sequence[int]) -> dict[str, Triple]:
        """Grid (T, H, W) of each output for an input grid: each stage takes ``ceil(side / s)``."""
        shapes, shape = {}, tuple(int(v) for v in spatial_shape)
        for name, s in zip(self.out_strides, self.strides):
            shape = tuple(math.ceil(d / k) for d, k in zip(shape, s))
            shapes[name] = shape
        return shapes

    def downsample_kernel(self, stage: int) -> Triple | None:
        """Kernel of stage ``stage``'s (1-based) strided opening conv, or None if it has none: the
        kernel a ``SparseInverseConv3d(indice_key=f"spconv{stage}")`` must be given."""
        s = self.strides[stage - 1]
        return None if s == (1, 1, 1) else tuple(2 * k - 1 for k in s)

    def forward(self, x, until: str | None = None) -> dict[str, spconv.SparseConvTensor]:
        """``x``: a ``SparseConvTensor`` (or a ``VoxelBatch``, converted). Runs the stages up to the
        one producing ``until`` (all when None) and returns their outputs by name. Every output
        carries the shared ``indice_dict``, so a decoder can invert any stage from the deepest one."""
        if not isinstance(x, spconv.SparseConvTensor):
            x = to_sparse_tensor(x)
        depth = self.num_stages if until is None else self.stage_index(until)
        x = self.conv_input(x)
        out = {}
        for i in range(1, depth + 1):
            x = getattr(self, f"conv{i}")(x)
            out[f"x_conv{i}"] = x
        return out


def config_from_state(state: dict) -> dict:
    """Constructor arguments from tensor shapes, for a ``.ckpt`` without its run's backbone.json.

    spconv weights are (out, kt, ky, kx, in); a stage's strided opening conv has kernel 2s - 1.
    A stride-1 stage opening with a 3x3x3 SubM width change looks like stride 2: ambiguous, so
    the export's backbone.json is preferred whenever it exists."""
    in_channels = int(state["conv_input.0.weight"].shape[-1])
    channels, blocks, strides = [], [], []
    i = 1
    while any(k.startswith(f"conv{i}.") for k in state):
        opening = state.get(f"conv{i}.0.0.weight")
        block_ids = {int(k.split(".")[1]) for k in state if k.startswith(f"conv{i}.") and ".conv1." in k}
        blocks.append(len(block_ids))
        if opening is not None:
            channels.append(int(opening.shape[0]))
            strides.append([(int(k) + 1) // 2 for k in opening.shape[1:4]])
        else:
            channels.append(int(state[f"conv{i}.0.conv1.weight"].shape[0]))
            strides.append([1, 1, 1])
        i += 1
    return {"in_channels": in_channels, "channels": channels, "blocks": blocks, "strides": strides}


def stage_movement(initial: Mapping[str, torch.Tensor], backbone: SparseVoxelBackbone) -> dict[str, float]:
    """Per stage (``conv_input``, ``conv1``, ...): ‖W − W₀‖ / ‖W₀‖ over its weights (BatchNorm
    statistics excluded), how far training moved it from ``initial`` (a state dict of the same
    backbone): pretraining from its initialisation, fine-tuning from the weights it started with."""
    return relative_movement(initial, backbone, backbone.stage_modules())
