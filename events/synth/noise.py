"""Sensor noise that a rendered scene does not produce: background activity and hot pixels.

Background activity (junction leakage, shot noise) is a Poisson process per pixel whose rate
varies from pixel to pixel (log-normal here); hot pixels are the few defective pixels that fire
at tens to hundreds of hertz whatever the scene does."""

from __future__ import annotations

import numpy as np

from .simulator import SensorConfig


def background_activity(
    rng: np.random.Generator, width: int, height: int, t0_us: int, t1_us: int, config: SensorConfig
):
    """(x, y, t, p) of noise events in [t0_us, t1_us), unsorted."""
    n = width * height
    duration_s = (t1_us - t0_us) * 1e-6
    spread = config.noise_rate_spread
    # Mean-preserving log-normal rates, so ``noise_rate_hz`` stays the average.
    rates = config.noise_rate_hz * np.exp(rng.normal(-0.5 * spread**2, spread, n))
    counts = rng.poisson(rates * duration_s)
    pix = np.repeat(np.arange(n), counts)
    t = rng.integers(t0_us, t1_us, pix.size, dtype=np.int64)
    p = (rng.random(pix.size) < config.noise_on_fraction).astype(np.uint8)
    return (pix % width).astype(np.uint16), (pix // width).astype(np.uint16), t, p


def hot_pixels(rng: np.random.Generator, width: int, height: int, t0_us: int, t1_us: int, config: SensorConfig):
    """(x, y, t, p) of hot-pixel events; at least one hot pixel when the fraction is non-zero."""
    if config.hot_pixel_fraction <= 0:
        return _empty()
    n = width * height
    k = max(1, int(round(config.hot_pixel_fraction * n)))
    pix = rng.choice(n, size=k, replace=False)
    rates = rng.uniform(*config.hot_pixel_rate_hz, size=k)
    counts = rng.poisson(rates * (t1_us - t0_us) * 1e-6)
    pix = np.repeat(pix, counts)
    t = rng.integers(t0_us, t1_us, pix.size, dtype=np.int64)
    bias = np.repeat(rng.random(k), counts)  # each hot pixel leans to one polarity
    p = (rng.random(pix.size) < bias).astype(np.uint8)
    return (pix % width).astype(np.uint16), (pix // width).astype(np.uint16), t, p


def _empty():
    return (np.empty(0, np.uint16), np.empty(0, np.uint16), np.empty(0, np.int64), np.empty(0, np.uint8))
