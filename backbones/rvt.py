"""RVT's recurrent backbone (Gehrig & Scaramuzza, CVPR 2023): four stages of
downsample → MaxViT block → ConvLSTM, whose hidden states are the multi-scale features.

The recurrence is what lets a detector see objects that stopped moving (and so stopped producing
events): each stage keeps an (h, c) state per pixel of its feature map. States flow between the
windows of a sequence with gradients (truncated BPTT); the training loop detaches them between
chunks (:func:`detach_states`) and zeroes them where a new recording starts (:func:`reset_states`).

Sizes follow RVT's configs: tiny embed 32 / head dim 32, small 48 / 24, base 64 / 32, widths
embed·(1, 2, 4, 8), one MaxViT block per stage. The partition size never changes a parameter
(no relative position bias), only which tokens attend to each other.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .maxvit import MaxViTBlock, Partition, PartitionAttention

LstmState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (B, C, H, W)

RVT_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"embed_dim": 32, "head_dim": 32},
    "small": {"embed_dim": 48, "head_dim": 24},
    "base": {"embed_dim": 64, "head_dim": 32},
}


def rvt_partition_size(height: int, width: int, split_32: int = 2, patch_size: int = 4) -> Partition:
    """RVT's rule (``partition_split_32``): pad the input to a multiple of 32·split, then split
    the stride-32 map into split×split groups. 360×640 → 384×640 → partition (6, 10); Gen1
    240×304 → 256×320 → (4, 5). Scaled by patch_size/4 when the stem is not stride 4."""
    total = 8 * patch_size * split_32
    return math.ceil(height / total), math.ceil(width / total)


def patch_size_for(spatial_stride: int) -> int:
    """RVT stem stride that puts stage 1 at stride 4 of the frame when RVT's input is already a
    map at ``spatial_stride`` (the sparse encoder's output)."""
    if spatial_stride < 1 or 4 % spatial_stride:
        raise ValueError(f"the encoder's spatial stride must divide 4 (1, 2 or 4), got {spatial_stride}")
    return 4 // spatial_stride


class ConvDownsample(nn.Module):
    """Overlapping strided conv (kernel 2·f − 1, padding f − 1, no bias), then channels-last
    LayerNorm: 7×7/4 for the stem, 3×3/2 later. Input NCHW, output NHWC."""

    def __init__(self, in_channels: int, out_channels: int, factor: int):
        super().__init__()
        kernel = 2 * factor - 1
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=factor, padding=kernel // 2, bias=False)
        self.norm = nn.LayerNorm(out_channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class ConvLSTM(nn.Module):
    """ConvLSTM cell with a 1×1 conv computing all gates from [input, previous hidden]; gate
    channel order (forget, input, output, candidate) as in RVT so its weights transfer."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.conv1x1 = nn.Conv2d(2 * dim, 4 * dim, kernel_size=1)

    def forward(self, x: torch.Tensor, state: LstmState | None = None) -> LstmState:
        if state is None:
            h_prev, c_prev = torch.zeros_like(x), torch.zeros_like(x)
        else:
            h_prev, c_prev = state
        mix = self.conv1x1(torch.cat((x, h_prev), dim=1))
        gates, candidate = mix.split((3 * self.dim, self.dim), dim=1)
        forget, inp, out = torch.sigmoid(gates).chunk(3, dim=1)
        c = forget * c_prev + inp * torch.tanh(candidate)
        return out * torch.tanh(c), c


class RVTStage(nn.Module):
    def __init__(
        self,
        in_channels: int,
        dim: int,
        factor: int,
        partition: Partition,
        head_dim: int,
        num_blocks: int = 1,
        mlp_ratio: float = 4.0,
        ls_init: float = 1e-5,
    ):
        super().__init__()
        self.downsample = ConvDownsample(in_channels, dim, factor)
        # The downsample output is already LayerNormed, so the first block skips its first norm.
        self.blocks = nn.ModuleList(
            MaxViTBlock(dim, partition, head_dim, mlp_ratio, ls_init, skip_first_norm=i == 0) for i in range(num_blocks)
        )
        self.lstm = ConvLSTM(dim)

    def forward(self, x: torch.Tensor, state: LstmState | None = None) -> tuple[torch.Tensor, LstmState]:
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        h, c = self.lstm(x.permute(0, 3, 1, 2), state)
        return h, (h, c)


class RVTBackbone(nn.Module):
    """Four recurrent stages; ``forward(x, prev_states) -> ({1: f1, …, 4: f4}, states)``.

    x is (B, in_channels, H, W); it is zero-padded bottom/right so that every stage's map
    divides by the partition: H to a multiple of ``strides[-1]·ph`` and W of
    ``strides[-1]·pw`` (384×640 for 360×640 with partition (6, 10), as RVT). Features and states
    cover the padded frame; box coordinates are unchanged because padding is bottom/right.
    ``in_channels`` is 20 for stacked histograms and whatever the pretrained encoder folds
    into for the sparse input; ``patch_size`` is the stem stride (4 in RVT, 2 in the user's
    patch-2 experiment)."""

    def __init__(
        self,
        in_channels: int = 20,
        embed_dim: int = 32,
        head_dim: int = 32,
        partition_size: Partition = (6, 10),
        patch_size: int = 4,
        dim_multipliers: Sequence[int] = (1, 2, 4, 8),
        num_blocks: int = 1,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.partition_size = tuple(partition_size)
        self.stage_dims = tuple(embed_dim * m for m in dim_multipliers)
        factors = [patch_size] + [2] * (len(dim_multipliers) - 1)
        self.strides = tuple(int(math.prod(factors[: i + 1])) for i in range(len(factors)))
        stages, prev = [], in_channels
        for dim, factor in zip(self.stage_dims, factors):
            stages.append(RVTStage(prev, dim, factor, self.partition_size, head_dim, num_blocks))
            prev = dim
        self.stages = nn.ModuleList(stages)

    @classmethod
    def from_size(cls, size: str = "tiny", **kwargs) -> RVTBackbone:
        if size not in RVT_SIZES:
            raise ValueError(f"size must be one of {sorted(RVT_SIZES)}, got {size!r}")
        return cls(**{**RVT_SIZES[size], **kwargs})

    def set_partition(self, partition_size: Partition) -> None:
        """Attend in groups of ``partition_size`` from now on: no parameter depends on it, so one
        set of weights serves frames of any size (pretraining's and the detector's)."""
        self.partition_size = tuple(int(v) for v in partition_size)
        for module in self.modules():
            if isinstance(module, PartitionAttention):
                module.partition = self.partition_size

    @property
    def pad_multiple(self) -> tuple[int, int]:
        return self.strides[-1] * self.partition_size[0], self.strides[-1] * self.partition_size[1]

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        mh, mw = self.pad_multiple
        return math.ceil(height / mh) * mh, math.ceil(width / mw) * mw

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = self.padded_size(h, w)
        return x if (ph, pw) == (h, w) else F.pad(x, (0, pw - w, 0, ph - h))

    def get_stage_dims(self, stages: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.stage_dims[s - 1] for s in stages)

    def get_strides(self, stages: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.strides[s - 1] for s in stages)

    def forward(
        self, x: torch.Tensor, prev_states: list[LstmState | None] | None = None
    ) -> tuple[dict[int, torch.Tensor], list[LstmState]]:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        if prev_states is None:
            prev_states = [None] * len(self.stages)
        if len(prev_states) != len(self.stages):
            raise ValueError(f"expected {len(self.stages)} stage states, got {len(prev_states)}")
        x = self.pad(x)
        features: dict[int, torch.Tensor] = {}
        states: list[LstmState] = []
        for number, (stage, state) in enumerate(zip(self.stages, prev_states), start=1):
            x, new_state = stage(x, state)
            features[number] = x
            states.append(new_state)
        return features, states


def detach_states(states: list[LstmState | None] | None) -> list[LstmState | None] | None:
    """Cut the gradient path between training chunks (truncated BPTT) while keeping the memory."""
    if states is None:
        return None
    return [None if s is None else (s[0].detach(), s[1].detach()) for s in states]


def reset_states(states: list[LstmState | None] | None, is_first: torch.Tensor) -> list[LstmState | None] | None:
    """Zero the states of the batch entries whose recording starts now (``is_first``: (B,) bool),
    so no memory leaks from one recording into the next under streaming sampling."""
    if states is None:
        return None
    out = []
    for s in states:
        if s is None:
            out.append(None)
            continue
        first = is_first.to(device=s[0].device, dtype=torch.bool).view(-1, 1, 1, 1)
        out.append(tuple(torch.where(first, torch.zeros_like(t), t) for t in s))
    return out
