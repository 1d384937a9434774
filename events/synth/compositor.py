"""Frames of the street: objects composited over the background in depth order, and the labels
of what is visible in them.

Compositing is in linear intensity (partial coverage mixes light, as a pixel does), and the log
is taken only where objects are, since the rest of the frame is the static background."""

from __future__ import annotations

import math

import numpy as np

from .presets import Preset
from .primitives import rasterize
from .traffic import Actor, perspective


class Compositor:
    """Draws the street at any time: actors over the background, far to near, poles on top;
    also decides which of the drawn objects get a label."""

    def __init__(self, preset: Preset, scene, actors: list[Actor]):
        self.p = preset
        self.scene = scene
        self.actors = actors
        self.ppm = preset.scale_px_per_m
        self.background = scene.background.astype(np.float32)
        self.fg_alpha = scene.fg_alpha.astype(np.float32)
        self.fg_color = scene.fg_color.astype(np.float32)
        baked = self.background * (1 - self.fg_alpha) + self.fg_color
        self.baked = baked
        self.log_baked = np.log(baked + preset.sensor.log_eps)
        # Objects that change depth are drawn at their largest size during the recording (paths
        # are piecewise linear, so the extremes lie at the recording's ends or at waypoints).
        self.ref_scale = {}
        for a in actors:
            if not a.fixed_size:
                times = np.clip(np.concatenate([[0.0, preset.duration_s], a.path_t]), 0.0, preset.duration_s)
                self.ref_scale[a.track_id] = float(np.max(perspective(np.interp(times, a.path_t, a.path_y))))

    def _layer(self, actor: Actor, t: float, box):
        """(sprite, left, top) of one actor at time ``t``; the sprite stacks premultiplied
        intensity and coverage, shape (2, h, w).

        Drawing is the expensive part, so each object is drawn once (vehicles) or once per
        animation pose (walkers, cyclists; neighbouring poses are cross-faded), then moved by
        sub-pixel resampling every frame. An object changing depth (a pedestrian on the crossing)
        is drawn at its largest size in the recording and resampled down to its current size."""
        x, y, w, h = box
        if actor.fixed_size:
            m = _margin(actor, w)
            iy = math.floor(y - m)
            sprite = self._posed(actor, t, w, h, m, y - m - iy)
            ix = math.floor(x - m)
            return _shift_x(sprite, x - m - ix), ix, iy
        scale = self.ref_scale[actor.track_id]
        w_ref = actor.length_m * self.ppm * scale
        m = _margin(actor, w_ref)
        sprite = self._posed(actor, t, w_ref, w_ref * actor.aspect, m, 0.0, scale)
        return _resample(sprite, m, w / w_ref, x, y)

    def _posed(self, actor, t, w, h, m, fy, scale=None):
        if not actor.animated:
            return self._pose(actor, 0, w, h, m, fy, scale)
        poses = actor.design.poses
        phase = actor.distance_m(t) / actor.design.cycle_m * poses
        k = math.floor(phase)
        f = np.float32(phase - k)
        s0 = self._pose(actor, k % poses, w, h, m, fy, scale)
        s1 = self._pose(actor, (k + 1) % poses, w, h, m, fy, scale)
        return s0 + f * (s1 - s0)

    def _pose(self, actor, k, w, h, m, fy, scale):
        """Drawing of pose ``k``, cached on the actor (already moved down by ``fy``: an object
        at fixed depth keeps its vertical sub-pixel offset for good)."""
        if k not in actor.sprites:
            dist = k / actor.design.poses * actor.design.cycle_m if actor.animated else 0.0
            scale = float(perspective(actor.path_y[0])) if scale is None else scale
            ca = rasterize(
                actor.design(w, h, dist),
                w,
                int(math.ceil(w)) + 2 * m,
                int(math.ceil(h)) + 2 * m,
                m,
                m,
                actor.facing < 0,
                actor.patch,
                1.0 / scale,
            )
            actor.sprites[k] = _shift_y(np.stack(ca).astype(np.float32), fy)
        return actor.sprites[k]

    def compose(self, t: float, want_layers: bool = False):
        """(log frame, layers); layers are (actor, box, alpha, image slice, alpha slice)."""
        H, W = self.baked.shape
        img = self.background.copy()
        regions, layers = [], []
        visible = []
        for actor in self.actors:
            box = actor.box(t, self.ppm, H)
            x, y, w, h = box
            if x + w < -2 or x > W + 2 or y + h < -2 or y > H + 2:
                continue
            visible.append((box[1] + box[3], actor.track_id, actor, box))
        for _, _, actor, box in sorted(visible, key=lambda v: (v[0], v[1])):  # far (high) first
            sprite, ix, iy = self._layer(actor, t, box)
            c, a = sprite
            y0, x0 = max(iy, 0), max(ix, 0)
            y1, x1 = min(iy + a.shape[0], H), min(ix + a.shape[1], W)
            if y1 <= y0 or x1 <= x0:
                continue
            sub = (slice(y0, y1), slice(x0, x1))
            loc = (slice(y0 - iy, y1 - iy), slice(x0 - ix, x1 - ix))
            view = img[sub]
            view *= 1 - a[loc]
            view += c[loc]
            regions.append(sub)
            if want_layers:
                layers.append((actor, box, a, sub, loc))
        fa, fc = self.fg_alpha, self.fg_color
        for sl in self.scene.fg_slices:
            img[sl] = img[sl] * (1 - fa[sl]) + fc[sl]
        log = self.log_baked.copy()
        for sub in regions:
            log[sub] = np.log(img[sub] + self.p.sensor.log_eps)
        return log, layers

    def labels(self, t_us: int, layers) -> list[tuple]:
        """Boxes clipped to the sensor, for objects that are big enough and neither mostly hidden
        by nearer ones nor mostly outside the view (unless what is inside is itself large, like
        the front third of a tram)."""
        H, W = self.baked.shape
        owner = np.full((H, W), -1, np.int64)
        for i, (_, _, a, sub, loc) in enumerate(layers):
            owner[sub][a[loc] > 0.5] = i
        seen = np.bincount(owner[owner >= 0], minlength=len(layers))
        rows = []
        for i, (actor, (x, y, w, h), a, _sub, loc) in enumerate(layers):
            full = int(np.count_nonzero(a > 0.5))
            in_view = int(np.count_nonzero(a[loc] > 0.5))
            x0, y0 = max(x, 0.0), max(y, 0.0)
            x1, y1 = min(x + w, float(W)), min(y + h, float(H))
            side = min(x1 - x0, y1 - y0)
            if in_view == 0 or side < self.p.min_box_side:
                continue
            if seen[i] / in_view < self.p.min_visible:  # hidden behind nearer objects
                continue
            if in_view / full < self.p.min_visible and side < 0.1 * H:  # mostly outside the view
                continue
            rows.append((t_us, x0, y0, x1 - x0, y1 - y0, actor.class_id, actor.track_id, 1.0))
        return rows


def _margin(actor: Actor, w: float) -> int:
    """Room around the box for limbs and pedals that swing outside it, and for anti-aliasing."""
    return int(math.ceil(0.15 * w)) + 2 if actor.animated else 1


def _shift_x(arr: np.ndarray, f: float) -> np.ndarray:
    """Move (..., h, w) images right by a fraction of a pixel (linear), one column wider."""
    f = np.float32(f)
    out = np.zeros((*arr.shape[:-1], arr.shape[-1] + 1), np.float32)
    out[..., :-1] = arr
    out[..., 1:] += f * (arr - out[..., 1:])  # (1 - f) * arr[j] + f * arr[j - 1]
    out[..., 0] *= 1 - f
    return out


def _shift_y(arr: np.ndarray, f: float) -> np.ndarray:
    return np.swapaxes(_shift_x(np.swapaxes(arr, -1, -2), f), -1, -2)


def _interp_matrix(n_in: int, n_out: int, offset: float, ratio: float) -> np.ndarray:
    """Linear-interpolation weights (n_out, n_in) sampling an axis scaled by ``ratio`` whose
    origin lies ``offset`` pixels into the output."""
    u = (np.arange(n_out) + 0.5 - offset) / ratio - 0.5
    i0 = np.floor(u).astype(np.int64)
    f = (u - i0).astype(np.float32)
    m = np.zeros((n_out, n_in + 2), np.float32)  # one pad column each side
    ok = (i0 >= -1) & (i0 <= n_in - 1)
    rows = np.flatnonzero(ok)
    m[rows, i0[ok] + 1] = 1 - f[ok]
    m[rows, i0[ok] + 2] = f[ok]
    return m[:, 1:-1]


def _resample(sprite: np.ndarray, m: int, ratio: float, x: float, y: float):
    """Scale a sprite (object corner at (m, m)) by ``ratio`` and place the object's corner at
    (x, y): returns (sprite, left, top)."""
    _, hs, ws = sprite.shape
    ox, oy = x - m * ratio, y - m * ratio
    ix, iy = math.floor(ox), math.floor(oy)
    rx = _interp_matrix(ws, int(math.ceil(ws * ratio)) + 2, ox - ix, ratio)
    ry = _interp_matrix(hs, int(math.ceil(hs * ratio)) + 2, oy - iy, ratio)
    return ry @ sprite @ rx.T, ix, iy
