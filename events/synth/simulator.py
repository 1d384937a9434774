"""ESIM-style event generation from a sequence of log-intensity frames.

Between two rendered frames each pixel's log intensity is taken to change linearly (ESIM,
Rebecq et al. 2018). A pixel fires one event each time that line crosses its reference level
plus or minus its own contrast threshold, at the interpolated crossing time, and its reference
moves by one threshold per crossing; a large change therefore gives several events, spread over
the interval. Thresholds differ from pixel to pixel (fabrication mismatch). An event closer than
the refractory period to the pixel's previous one is suppressed, but the reference still moves,
as in ESIM's implementation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SensorConfig:
    """Contrast thresholds are in natural-log units (0.2 ~ a 22 % change in intensity)."""

    contrast: float = 0.2
    log_eps: float = 0.02  # dark current: log(I + eps) compresses contrast in the shadows
    contrast_sigma: float = 0.03
    contrast_min: float = 0.05
    refractory_us: float = 1000.0
    noise_rate_hz: float = 0.1  # background activity per pixel, on average
    noise_rate_spread: float = 0.5  # log-normal spread of that rate across pixels
    noise_on_fraction: float = 0.55
    hot_pixel_fraction: float = 2e-5
    hot_pixel_rate_hz: tuple[float, float] = (20.0, 200.0)


_TOL = 1e-9  # a change of exactly k thresholds gives k events despite rounding


class EventSimulator:
    """Feed frames in time order with ``step``; each call returns the events since the last frame
    as (x, y, t, p) arrays (t int64 µs, not sorted across pixels).

    Only pixels whose log intensity changed since the previous frame are examined: a pixel that
    did not change cannot cross a threshold, since after every step it sits within one threshold
    of its reference."""

    def __init__(self, width: int, height: int, config: SensorConfig, rng: np.random.Generator):
        self.width, self.height = width, height
        self.config = config
        n = width * height
        c = config.contrast
        self.c_on = np.maximum(rng.normal(c, config.contrast_sigma, n), config.contrast_min)
        self.c_off = np.maximum(rng.normal(c, config.contrast_sigma, n), config.contrast_min)
        self.ref = None
        self.last_t = np.full(n, -np.inf)
        self.prev = None
        self.t_prev = None

    def reset(self, log_frame: np.ndarray, t_us: int) -> None:
        """Start from a frame: every pixel's reference is its current level, no events yet."""
        self.prev = np.array(log_frame, dtype=np.float32).ravel()
        self.ref = self.prev.astype(np.float64)
        self.t_prev = int(t_us)

    def step(self, log_frame: np.ndarray, t_us: int):
        cur = np.array(log_frame, dtype=np.float32).ravel()
        t0, t1 = self.t_prev, int(t_us)
        if t1 <= t0:
            raise ValueError(f"frames must advance in time ({t0} -> {t1} µs)")
        idx = np.flatnonzero(cur != self.prev)
        out = self._events(idx, self.prev[idx].astype(np.float64), cur[idx].astype(np.float64), t0, t1)
        self.prev = cur
        self.t_prev = t1
        return out

    def _events(self, idx, lp, lc, t0, t1):
        ref = self.ref[idx]
        d = lc - ref
        up = d > 0
        c = np.where(up, self.c_on[idx], self.c_off[idx])
        n = np.floor(np.abs(d) / c + _TOL).astype(np.int64)
        fire = np.flatnonzero(n)
        if fire.size == 0:
            return _empty()
        idx, lp, lc, ref, c, n, up = idx[fire], lp[fire], lc[fire], ref[fire], c[fire], n[fire], up[fire]
        sign = np.where(up, 1.0, -1.0)
        self.ref[idx] = ref + sign * n * c
        dt = float(t1 - t0)
        slope = np.abs(lc - lp)  # > 0: these pixels changed
        # k-th crossing (k = 0..n-1) at level ref + sign*(k+1)*c, reached at t_first + k*spacing.
        t_first = t0 + (ref + sign * c - lp) * sign / slope * dt
        spacing = c / slope * dt
        r = self.config.refractory_us
        if r > 0:
            k0 = np.maximum(0.0, np.ceil((self.last_t[idx] + r - t_first) / spacing - _TOL))
            every = np.maximum(1.0, np.ceil(r / spacing - _TOL))
        else:
            k0 = np.zeros(idx.size)
            every = np.ones(idx.size)
        kept = np.where(k0 <= n - 1, np.floor((n - 1 - k0) / every) + 1, 0).astype(np.int64)
        has = kept > 0
        last_k = k0 + (kept - 1) * every
        self.last_t[idx[has]] = (t_first + last_k * spacing)[has]
        rows = np.repeat(np.arange(idx.size), kept)
        j = np.arange(rows.size) - np.repeat(np.cumsum(kept) - kept, kept)
        times = t_first[rows] + (k0[rows] + j * every[rows]) * spacing[rows]
        t = np.minimum(np.floor(times), t1).astype(np.int64)
        pix = idx[rows]
        x = (pix % self.width).astype(np.uint16)
        y = (pix // self.width).astype(np.uint16)
        return x, y, t, up[rows].astype(np.uint8)


def _empty():
    return (np.empty(0, np.uint16), np.empty(0, np.uint16), np.empty(0, np.int64), np.empty(0, np.uint8))
