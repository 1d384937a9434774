"""Stacked histogram: hand-computed cases, RVT's boundary behaviour, ds2 subsampling, and
agreement with a per-event loop written from the definition in docs/architecture.md
("Stacked histogram")."""

import numpy as np
import pytest
import torch

from evcmae.events.container import Events
from evcmae.events.histogram import downsample_nearest, events_histogram, stacked_histogram, time_bins


def naive_histogram(x, y, t, p, height, width, bins=10, cutoff=10):
    """One event at a time, with RVT's float32 time normalisation spelled out in NumPy."""
    out = np.zeros((2 * bins, height, width), dtype=np.int64)
    if len(t) == 0:
        return out.astype(np.uint8)
    t0, span = int(t[0]), np.float32(max(int(t[-1]) - int(t[0]), 1))
    for xi, yi, ti, pi in zip(x.tolist(), y.tolist(), t.tolist(), p.tolist()):
        b = int(np.floor(np.float32(np.float32(ti - t0) / span) * np.float32(bins)))
        out[pi * bins + min(b, bins - 1), yi, xi] += 1
    return np.minimum(out, cutoff).astype(np.uint8)


def cols(*rows):
    """Events given as (x, y, t, p) rows -> column arrays."""
    x, y, t, p = (np.array(c) for c in zip(*rows))
    return x.astype(np.uint16), y.astype(np.uint16), t.astype(np.int64), p.astype(np.uint8)


def test_hand_computed_small_case():
    # t0 = 0, t1 = 100: bin = floor(t / 100 * 10), the last event (bin 10) clamped to 9.
    x, y, t, p = cols(
        (0, 0, 0, 0),  # OFF, bin 0 -> channel 0 at (y0, x0)
        (0, 0, 5, 0),  # OFF, bin 0 -> channel 0 at (y0, x0) again
        (3, 2, 10, 1),  # ON, bin 1 -> channel 11 at (y2, x3)
        (1, 1, 50, 1),  # ON, bin 5 -> channel 15 at (y1, x1)
        (2, 0, 99, 0),  # OFF, bin 9 -> channel 9 at (y0, x2)
        (2, 0, 100, 0),  # OFF, bin 10 -> clamped 9 -> channel 9 at (y0, x2)
    )
    hist = stacked_histogram(x, y, t, p, height=3, width=4)
    expected = np.zeros((20, 3, 4), np.uint8)
    expected[0, 0, 0] = 2
    expected[11, 2, 3] = 1
    expected[15, 1, 1] = 1
    expected[9, 0, 2] = 2
    assert hist.dtype == torch.uint8 and hist.shape == (20, 3, 4)
    np.testing.assert_array_equal(hist.numpy(), expected)


def test_counts_clip_at_cutoff():
    x, y, t, p = cols(*[(1, 2, 7, 1)] * 15)  # one pixel, one time: all in ON bin 0 (channel 10)
    assert stacked_histogram(x, y, t, p, 3, 4)[10, 2, 1] == 10
    assert stacked_histogram(x, y, t, p, 3, 4, count_cutoff=3)[10, 2, 1] == 3
    assert int(stacked_histogram(x, y, t, p, 3, 4).sum()) == 10


def test_rvt_uint8_wrap_reproduces_overflow():
    x, y, t, p = cols(*[(0, 0, 0, 0)] * 260)
    assert stacked_histogram(x, y, t, p, 2, 2)[0, 0, 0] == 10  # clipped
    assert stacked_histogram(x, y, t, p, 2, 2, rvt_uint8_wrap=True)[0, 0, 0] == 4  # 260 mod 256


def test_boundary_times():
    t = torch.tensor([500])  # single event: span max(0, 1) = 1 -> bin 0
    assert time_bins(t, 10).tolist() == [0]
    assert time_bins(torch.tensor([7, 7, 7]), 10).tolist() == [0, 0, 0]
    assert time_bins(torch.tensor([3, 4]), 10).tolist() == [0, 9]  # span 1: the last event clamps
    # 50 ms window: bin edges at exact multiples of 5 ms belong to the upper bin.
    edges = np.arange(11) * 5000
    assert time_bins(torch.from_numpy(edges), 10).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]
    just_below = np.concatenate([[0], edges[1:] - 1, [50000]])
    assert time_bins(torch.from_numpy(just_below), 10).tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]
    # Very long window: RVT's float32 division puts 13421773 / 33554433 * 10 = 3.99999997... in bin 4
    # (exact arithmetic says 3). We follow RVT.
    long = torch.tensor([0, 13421773, 33554433])
    assert time_bins(long, 10).tolist() == [0, 4, 9]
    assert (13421773 * 10) // 33554433 == 3


def test_time_normalised_by_first_and_last_event_of_window():
    # Same relative timing, shifted in time: identical histograms.
    x, y, t, p = cols((0, 0, 1000, 0), (1, 0, 1030, 1), (1, 1, 1100, 0))
    a = stacked_histogram(x, y, t, p, 2, 2)
    b = stacked_histogram(x, y, t + 123456, p, 2, 2)
    assert torch.equal(a, b)
    assert a[0, 0, 0] == 1 and a[13, 0, 1] == 1 and a[9, 1, 1] == 1


def test_downsample_keeps_odd_pixels_and_does_not_sum():
    x, y, t, p = cols((0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (1, 1, 0, 0), (1, 1, 0, 0), (3, 1, 0, 1))
    full = stacked_histogram(x, y, t, p, 4, 4)
    ds = downsample_nearest(full)
    assert ds.shape == (20, 2, 2)
    assert ds[0, 0, 0] == 2  # pixel (1, 1) only; its even neighbours are not added
    assert ds[10, 0, 1] == 1  # pixel (y1, x3)
    assert int(ds.sum()) == 3


@pytest.mark.parametrize("height,width", [(7, 10), (8, 9)])
def test_downsample_matches_torch_nearest_exact(height, width):
    rng = np.random.default_rng(height)
    n = 2000
    x = rng.integers(0, width, n).astype(np.uint16)
    y = rng.integers(0, height, n).astype(np.uint16)
    t = np.sort(rng.integers(0, 50000, n))
    p = rng.integers(0, 2, n).astype(np.uint8)
    full = stacked_histogram(x, y, t, p, height, width)
    reference = torch.nn.functional.interpolate(full[None], scale_factor=0.5, mode="nearest-exact")[0]
    ds = downsample_nearest(full)
    assert ds.shape == (20, height // 2, width // 2)
    assert torch.equal(ds, reference)
    assert torch.equal(stacked_histogram(x, y, t, p, height, width, downsample=2), reference)


def test_empty_window_gives_zeros():
    empty = [np.empty(0, d) for d in (np.uint16, np.uint16, np.int64, np.uint8)]
    hist = stacked_histogram(*empty, height=5, width=6)
    assert hist.dtype == torch.uint8 and hist.shape == (20, 5, 6) and not hist.any()
    assert stacked_histogram(*empty, height=5, width=6, downsample=2).shape == (20, 2, 3)
    assert events_histogram(Events.empty(6, 5)).shape == (20, 5, 6)


@pytest.mark.parametrize("cutoff", [10, 255])
def test_agrees_with_per_event_loop(cutoff):
    rng = np.random.default_rng(cutoff)
    height, width, n = 6, 9, 3000
    x = rng.integers(0, width, n)
    y = rng.integers(0, height, n)
    t = np.sort(rng.integers(1000, 60000, n))
    p = rng.integers(0, 2, n)
    x[:40], y[:40], p[:40] = 4, 2, 1  # a hot ON pixel in the first time bin, so clipping matters
    ev = Events(x, y, t, p, width=width, height=height)
    expected = naive_histogram(ev.x, ev.y, ev.t, ev.p, height, width, cutoff=cutoff)
    got = events_histogram(ev, count_cutoff=cutoff).numpy()
    np.testing.assert_array_equal(got, expected)
    hot = int(got[10, 2, 4])
    assert (hot == 10) if cutoff == 10 else (hot >= 40)
    # Other bin counts follow the same definition.
    got5 = stacked_histogram(ev.x, ev.y, ev.t, ev.p, height, width, bins=5, count_cutoff=cutoff).numpy()
    np.testing.assert_array_equal(got5, naive_histogram(ev.x, ev.y, ev.t, ev.p, height, width, 5, cutoff))


def test_rejects_bad_input():
    x, y, t, p = cols((0, 0, 10, 0), (1, 0, 5, 1))
    with pytest.raises(ValueError, match="sorted"):
        stacked_histogram(x, y, t, p, 2, 2)
    x, y, t, p = cols((2, 0, 10, 0))
    with pytest.raises(ValueError, match="outside"):
        stacked_histogram(x, y, t, p, 2, 2)
