"""The sparse backbone's maps as dense frames: what every dense network after it (RVT's stages, in
fine-tuning and in pretraining alike) takes as input."""

from __future__ import annotations

import torch


def fold_time_into_channels(x) -> torch.Tensor:
    """A sparse map (features (N, C), indices (N, 4) = batch, t, y, x) as a dense (B, C·T, H, W)
    tensor, channel c·T + t. Written straight into that layout: spconv's ``dense()`` builds
    (B, T, H, W, C) and permutes it, which cost 2.5x as much (forward and backward) per window."""
    t, h, w = (int(v) for v in x.spatial_shape)
    index = x.indices.long()
    out = x.features.new_zeros(x.batch_size, x.features.shape[1], t, h, w)
    out[index[:, 0], :, index[:, 1], index[:, 2], index[:, 3]] = x.features
    return out.reshape(x.batch_size, -1, h, w)
