"""Augmentation of fine-tuning sequences: horizontal flip and zoom in/out, fixed within a sequence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from evcmae.events.container import Events


# -- augmentation -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Augment:
    """Zoom by ``scale`` about the origin then shift by (ox, oy), then flip horizontally."""

    flip: bool = False
    scale: float = 1.0
    ox: float = 0.0
    oy: float = 0.0

    @property
    def identity(self) -> bool:
        return not self.flip and self.scale == 1.0 and self.ox == 0.0 and self.oy == 0.0

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        width: int,
        height: int,
        flip_prob: float = 0.5,
        zoom_prob: float = 0.5,
        zoom_range: Sequence[float] = (0.8, 1.5),
    ) -> Augment:
        flip = bool(rng.random() < flip_prob)
        if rng.random() >= zoom_prob:
            return cls(flip)
        s = float(rng.uniform(*zoom_range))
        # Zoom in: the shift keeps the frame covered; zoom out: the shrunk scene stays inside.
        ox = float(rng.uniform(*sorted((0.0, width - s * width))))
        oy = float(rng.uniform(*sorted((0.0, height - s * height))))
        return cls(flip, s, ox, oy)

    def boxes(self, boxes: np.ndarray, width: int, height: int, min_side: float = 1.0) -> np.ndarray:
        if self.identity or not len(boxes):
            return boxes
        out = boxes.copy()
        x0 = boxes["x"] * self.scale + self.ox
        y0 = boxes["y"] * self.scale + self.oy
        x1 = np.clip(x0 + boxes["w"] * self.scale, 0, width)
        y1 = np.clip(y0 + boxes["h"] * self.scale, 0, height)
        x0, y0 = np.clip(x0, 0, width), np.clip(y0, 0, height)
        if self.flip:
            x0, x1 = width - x1, width - x0
        out["x"], out["y"], out["w"], out["h"] = x0, y0, x1 - x0, y1 - y0
        return out[(out["w"] >= min_side) & (out["h"] >= min_side)]

    def events(self, ev: Events, rng: np.random.Generator, width: int, height: int) -> Events:
        """Events in sensor pixels. Zooming in spreads each event over the ``scale``-wide cell it
        maps to (uniform sub-pixel jitter), so a magnified scene has no regular holes."""
        if self.identity or not len(ev):
            return ev
        x, y = ev.x.astype(np.float64), ev.y.astype(np.float64)
        if self.scale != 1.0:
            jitter = self.scale > 1.0
            x = (x + (rng.random(len(x)) if jitter else 0.5)) * self.scale + self.ox
            y = (y + (rng.random(len(y)) if jitter else 0.5)) * self.scale + self.oy
            x, y = np.floor(x), np.floor(y)
        if self.flip:
            x = width - 1 - x
        keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        return Events(x=x[keep], y=y[keep], t=ev.t[keep], p=ev.p[keep], width=width, height=height)

    def dense(self, frame: torch.Tensor) -> torch.Tensor:
        """A (C, H, W) frame with the same transform (nearest neighbour, zeros outside)."""
        if self.identity:
            return frame
        c, h, w = frame.shape
        if self.scale != 1.0 or self.ox or self.oy:
            u = torch.arange(w, dtype=torch.float32) + 0.5
            v = torch.arange(h, dtype=torch.float32) + 0.5
            src_x = (u - self.ox) / self.scale
            src_y = (v - self.oy) / self.scale
            gx = (2 * src_x / w - 1).view(1, w).expand(h, w)
            gy = (2 * src_y / h - 1).view(h, 1).expand(h, w)
            grid = torch.stack((gx, gy), -1)[None]
            frame = F.grid_sample(frame[None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[
                0
            ].to(frame.dtype)
        if self.flip:
            frame = frame.flip(-1)
        return frame
