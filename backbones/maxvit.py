"""MaxViT attention as RVT uses it: local window attention followed by dilated grid attention.

Both attentions run on non-overlapping groups of ``partition = (ph, pw)`` tokens, so the cost is
linear in the image size; the window pass mixes neighbours, the grid pass mixes tokens spaced
``H/ph`` apart, and the pair gives every token a global receptive field in one block. Tensors
are channels-last ``(B, H, W, C)`` inside the block (LayerNorm and Linear act on the last axis).

RVT's attention has no relative position bias, so the partition size changes no parameter and
attention is permutation-equivariant inside a group: only the group membership matters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

Partition = tuple[int, int]


def _check_divisible(x: torch.Tensor, partition: Partition) -> None:
    h, w = x.shape[1:3]
    if h % partition[0] or w % partition[1]:
        raise ValueError(
            f"feature map {h}x{w} is not divisible by the partition {partition}; pad the input (RVTBackbone.pad does)"
        )


def window_partition(x: torch.Tensor, partition: Partition) -> torch.Tensor:
    """(B, H, W, C) -> (B·nh·nw, ph·pw, C): contiguous ph×pw windows."""
    _check_divisible(x, partition)
    return rearrange(x, "b (nh ph) (nw pw) c -> (b nh nw) (ph pw) c", ph=partition[0], pw=partition[1])


def window_reverse(tokens: torch.Tensor, partition: Partition, hw: tuple[int, int]) -> torch.Tensor:
    nh, nw = hw[0] // partition[0], hw[1] // partition[1]
    return rearrange(
        tokens, "(b nh nw) (ph pw) c -> b (nh ph) (nw pw) c", nh=nh, nw=nw, ph=partition[0], pw=partition[1]
    )


def grid_partition(x: torch.Tensor, partition: Partition) -> torch.Tensor:
    """(B, H, W, C) -> (B·nh·nw, ph·pw, C): groups of ph×pw tokens spaced (H/ph, W/pw) apart."""
    _check_divisible(x, partition)
    return rearrange(x, "b (ph nh) (pw nw) c -> (b nh nw) (ph pw) c", ph=partition[0], pw=partition[1])


def grid_reverse(tokens: torch.Tensor, partition: Partition, hw: tuple[int, int]) -> torch.Tensor:
    nh, nw = hw[0] // partition[0], hw[1] // partition[1]
    return rearrange(
        tokens, "(b nh nw) (ph pw) c -> b (ph nh) (pw nw) c", nh=nh, nw=nw, ph=partition[0], pw=partition[1]
    )


class SelfAttention(nn.Module):
    """Multi-head self-attention over (N, T, C) token groups.

    The fused ``qkv`` projection is laid out per head as [q | k | v] (feature index
    ``head·3·d + {0,1,2}·d + i``), the layout of RVT's ``SelfAttentionCl``, so RVT checkpoints
    map onto it by renaming keys only."""

    def __init__(self, dim: int, head_dim: int = 32, bias: bool = True):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"dim {dim} is not a multiple of head_dim {head_dim}")
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "n t (h three d) -> three n h t d", h=self.num_heads, three=3, d=self.head_dim)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim)
        return self.proj(rearrange(out, "n h t d -> n t (h d)"))


class LayerScale(nn.Module):
    """Per-channel residual gain starting near zero (1e-5), so each freshly initialised block
    starts as an identity and deep stacks train stably."""

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def mlp(dim: int, ratio: float = 4.0) -> nn.Sequential:
    hidden = int(dim * ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class PartitionAttention(nn.Module):
    """Pre-norm transformer layer (attention + MLP, each LayerScaled and residual) applied to
    window or grid groups. ``skip_first_norm`` drops the first LayerNorm when the input was just
    normalised by the downsampling layer (RVT does this for the first block of each stage)."""

    def __init__(
        self,
        dim: int,
        partition: Partition,
        kind: str = "window",
        head_dim: int = 32,
        mlp_ratio: float = 4.0,
        ls_init: float = 1e-5,
        skip_first_norm: bool = False,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        if kind not in ("window", "grid"):
            raise ValueError(f"kind must be 'window' or 'grid', got {kind!r}")
        self.kind = kind
        self.partition = tuple(partition)
        self.norm1 = nn.Identity() if skip_first_norm else nn.LayerNorm(dim, eps=norm_eps)
        self.self_attn = SelfAttention(dim, head_dim)
        self.ls1 = LayerScale(dim, ls_init)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = mlp(dim, mlp_ratio)
        self.ls2 = LayerScale(dim, ls_init)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        hw = x.shape[1:3]
        if self.kind == "window":
            return window_reverse(self.self_attn(window_partition(x, self.partition)), self.partition, hw)
        return grid_reverse(self.self_attn(grid_partition(x, self.partition)), self.partition, hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self._attend(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class MaxViTBlock(nn.Module):
    """Window attention then grid attention, channels-last (B, H, W, C)."""

    def __init__(
        self,
        dim: int,
        partition: Partition,
        head_dim: int = 32,
        mlp_ratio: float = 4.0,
        ls_init: float = 1e-5,
        skip_first_norm: bool = False,
    ):
        super().__init__()
        self.att_window = PartitionAttention(
            dim, partition, "window", head_dim, mlp_ratio, ls_init, skip_first_norm=skip_first_norm
        )
        self.att_grid = PartitionAttention(dim, partition, "grid", head_dim, mlp_ratio, ls_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.att_grid(self.att_window(x))
