"""Procedural textures. Real scenes are never flat: asphalt grain, paint and dirt are what make a
moving edge or a revealed patch of road fire a scattered, uneven set of events instead of a clean
outline. Fields are zero-mean and used as log-intensity perturbations (``I * exp(a * field)``)."""

from __future__ import annotations

import numpy as np


def upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear enlargement of a coarse random grid to ``height`` x ``width`` (smooth value noise)."""
    gh, gw = grid.shape
    ys = np.linspace(0, gh - 1, height)
    xs = np.linspace(0, gw - 1, width)
    y0 = np.minimum(ys.astype(int), gh - 2)
    x0 = np.minimum(xs.astype(int), gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-ish noise whose features are about ``cell`` pixels across."""
    gh = max(2, int(np.ceil(height / cell)) + 1)
    gw = max(2, int(np.ceil(width / cell)) + 1)
    return upsample(rng.standard_normal((gh, gw)), height, width)


def fbm(rng: np.random.Generator, height: int, width: int, cell: float, octaves: int = 4) -> np.ndarray:
    """Fractal sum of value noise from ``cell`` pixels down to a few pixels, normalised to unit std."""
    out = np.zeros((height, width))
    amp = 1.0
    for _ in range(octaves):
        out += amp * value_noise(rng, height, width, max(cell, 1.0))
        cell /= 2.0
        amp *= 0.6
    return out / (out.std() + 1e-9)


def grain(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Pixel-level noise (unit std): aggregate in asphalt, fabric, paint speckle."""
    return rng.standard_normal((height, width))


class NoisePatch:
    """A texture glued to a moving object: sampled at object-local coordinates so it travels with
    the object (moving texture is what produces events inside an object, not just at its outline)."""

    def __init__(self, rng: np.random.Generator, width: float, height: float, cell: float = 6.0):
        self.h = int(np.ceil(height)) + 3
        self.w = int(np.ceil(width)) + 3
        self.coarse = value_noise(rng, self.h, self.w, cell)
        self.fine = value_noise(rng, self.h, self.w, 1.5)

    def sample(self, lx: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear lookup of (coarse, fine) at local pixel coordinates (clamped at the border)."""
        x = np.clip(lx, 0, self.w - 1.001)
        y = np.clip(ly, 0, self.h - 1.001)
        x0 = x.astype(np.int64)
        y0 = y.astype(np.int64)
        fx = x - x0
        fy = y - y0
        out = []
        for f in (self.coarse, self.fine):
            a = f[y0, x0] * (1 - fx) + f[y0, x0 + 1] * fx
            b = f[y0 + 1, x0] * (1 - fx) + f[y0 + 1, x0 + 1] * fx
            out.append(a * (1 - fy) + b * fy)
        return out[0], out[1]
