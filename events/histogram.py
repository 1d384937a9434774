"""RVT's stacked histogram (docs/architecture.md, "Stacked histogram"), computed so that it
matches RVT's preprocessing bit for bit.

Layout: uint8 ``(2 * bins, H, W)``; channel ``p * bins + bin`` (0..bins-1 OFF, bins..2*bins-1 ON).
Time is normalised by the first and last event of the window, as RVT does: the int64 difference
divided by an int gives float32 in torch, then ``* bins`` and ``floor``. For windows shorter than
about 16 s this equals exact integer arithmetic; beyond, float32 rounding moves a few events to the
next bin, and we follow RVT there too so files agree with ones made by its own tool.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["stacked_histogram", "events_histogram", "downsample_nearest", "time_bins"]


def _as_long(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.long()
    return torch.from_numpy(np.asarray(a).astype(np.int64, copy=False))


def time_bins(t: torch.Tensor, bins: int) -> torch.Tensor:
    """Time-bin index of each event of one window (``t`` sorted, int64), RVT's float32 recipe."""
    t0, t1 = t[0], t[-1]
    span = max(int(t1 - t0), 1)
    return ((t - t0) / span * bins).floor().clamp(max=bins - 1).long()


def stacked_histogram(
    x,
    y,
    t,
    p,
    height: int,
    width: int,
    bins: int = 10,
    count_cutoff: int = 10,
    downsample: int = 1,
    rvt_uint8_wrap: bool = False,
) -> torch.Tensor:
    """Stacked histogram of one window's events; ``t`` must be sorted, ``p`` 0/1.

    ``downsample=2`` returns ``downsample_nearest`` of the full-resolution histogram, computed
    directly from the events at odd pixels (the only ones nearest-exact keeps) so the
    full-resolution array is never built; time bins still come from all events of the window.
    ``rvt_uint8_wrap`` reproduces RVT's default "fastmode", which accumulates in uint8 so a
    pixel-bin with 256 or more events wraps modulo 256 before clipping (only hot pixels do that).
    """
    if downsample not in (1, 2):
        raise ValueError(f"downsample must be 1 or 2, not {downsample}")
    if not 1 <= count_cutoff <= 255:
        raise ValueError(f"count_cutoff must be in 1..255 (uint8 output), not {count_cutoff}")
    x, y, t, p = (_as_long(a) for a in (x, y, t, p))
    if not (x.numel() == y.numel() == t.numel() == p.numel()):
        raise ValueError(f"event columns differ in length: x {x.numel()}, y {y.numel()}, t {t.numel()}, p {p.numel()}")
    out_h, out_w = height // downsample, width // downsample
    channels = 2 * bins
    if t.numel() == 0:
        return torch.zeros((channels, out_h, out_w), dtype=torch.uint8)
    # An index outside the grid would land silently in a neighbouring row or channel.
    if x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height:
        raise ValueError(
            f"event coordinates outside the {width}x{height} sensor "
            f"(x in [{int(x.min())}, {int(x.max())}], y in [{int(y.min())}, {int(y.max())}])"
        )
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"polarity must be 0/1, found range [{int(p.min())}, {int(p.max())}]")
    if t.numel() > 1 and bool((t[1:] < t[:-1]).any()):
        raise ValueError("event timestamps of a window must be sorted")

    channel = p * bins + time_bins(t, bins)
    if downsample == 2:
        keep = (x % 2 == 1) & (y % 2 == 1) & (x < 2 * out_w) & (y < 2 * out_h)
        x, y, channel = x[keep] // 2, y[keep] // 2, channel[keep]
    index = (channel * out_h + y) * out_w + x
    # int32 counts: index_add_ beats bincount's int64 buffer on CPU and cannot overflow here.
    counts = torch.zeros(channels * out_h * out_w, dtype=torch.int32)
    counts.index_add_(0, index, torch.ones_like(index, dtype=torch.int32))
    if rvt_uint8_wrap:
        counts.remainder_(256)
    return counts.clamp_(max=count_cutoff).to(torch.uint8).view(channels, out_h, out_w)


def events_histogram(events, height: int | None = None, width: int | None = None, **kw) -> torch.Tensor:
    """``stacked_histogram`` of an ``Events`` window; the sensor size defaults to the events' own."""
    height = events.height if height is None else height
    width = events.width if width is None else width
    if height is None or width is None:
        raise ValueError("sensor size unknown: pass height and width")
    return stacked_histogram(events.x, events.y, events.t, events.p, height, width, **kw)


def downsample_nearest(hist, factor: int = 2):
    """Nearest-exact subsampling by ``factor`` (what RVT's ``interpolate(scale_factor=1/factor,
    mode='nearest-exact')`` does): keeps pixel ``factor*i + factor//2``, never sums."""
    if factor == 1:
        return hist
    if factor != 2:
        raise ValueError(f"only factors 1 and 2 are supported, not {factor}")
    h, w = hist.shape[-2] // 2, hist.shape[-1] // 2
    return hist[..., 1 : 2 * h : 2, 1 : 2 * w : 2]
