"""The static street: buildings, sidewalks, kerbs, textured asphalt, lane and tram markings, a zebra
crossing, and a few poles in front of everything.

Being static, the background itself never fires; its texture matters where a passing object
uncovers it (trailing edges) and because it sets the contrast of each object's outline. The poles
form a foreground layer drawn over the objects, as street furniture occludes traffic in real
recordings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .primitives import box, capsule, circle, rasterize
from .texture import fbm, grain, value_noise
from .traffic import ROAD_BOTTOM, ROAD_TOP


@dataclass
class Scene:
    """``background``: linear intensity (H, W); ``fg_color``/``fg_alpha``: premultiplied
    foreground layer (poles), zero where empty; ``fg_slices``: the blocks where that layer is not
    empty, to composite only there; ``crosswalk``: x-range of the zebra crossing."""

    background: np.ndarray
    fg_color: np.ndarray
    fg_alpha: np.ndarray
    fg_slices: list
    crosswalk: tuple[float, float]


def _rows(h, a, b):
    return slice(int(round(a * h)), int(round(b * h)))


def _buildings(rng, img, h, w):
    top = int(round(0.33 * h))
    img[:top] = np.linspace(0.95, 0.75, top)[:, None]  # sky
    x = 0
    while x < w:
        bw = int(rng.uniform(0.12, 0.3) * w)
        roof = int(rng.uniform(0.0, 0.18) * h)
        facade = rng.uniform(0.22, 0.6)
        block = np.full((top - roof, bw), facade)
        block *= np.exp(0.12 * fbm(rng, top - roof, bw, 12) + 0.05 * grain(rng, top - roof, bw))
        win_w, win_h = max(2, int(0.025 * w)), max(2, int(0.04 * h))
        pitch_x, pitch_y = int(win_w * rng.uniform(1.6, 2.4)), int(win_h * rng.uniform(1.6, 2.2))
        for yy in range(int(0.02 * h), top - roof - win_h, pitch_y):
            for xx in range(int(0.01 * w), bw - win_w, pitch_x):
                block[yy : yy + win_h, xx : xx + win_w] = rng.choice((0.06, 0.1, 0.15, 0.5)) * rng.uniform(0.8, 1.2)
        block[: max(1, h // 180)] *= 0.6  # roof edge
        img[roof:top, x : x + bw] = block[:, : min(bw, w - x)]
        x += bw + int(rng.integers(0, max(2, w // 60)))


def _paving(rng, h, w, value, tile):
    tex = value * np.exp(0.1 * fbm(rng, h, w, 20) + 0.08 * grain(rng, h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    joints = (xx % tile == 0) | (yy % max(2, tile // 2) == 0)
    return np.where(joints, tex * 0.7, tex)


def render_scene(rng: np.random.Generator, width: int, height: int) -> Scene:
    h, w = height, width
    # Drawn first: where people cross must not depend on how many random numbers the
    # resolution-dependent texture code below consumes.
    cw0 = rng.uniform(0.55, 0.75) * w
    cw = (cw0, cw0 + rng.uniform(0.06, 0.09) * w)
    img = np.zeros((h, w))
    _buildings(rng, img, h, w)
    far = _rows(h, 0.33, ROAD_TOP)
    img[far] = _paving(rng, far.stop - far.start, w, rng.uniform(0.4, 0.55), max(4, w // 40))
    road = _rows(h, ROAD_TOP, ROAD_BOTTOM)
    rh = road.stop - road.start
    asphalt = rng.uniform(0.14, 0.22) * np.exp(
        0.12 * fbm(rng, rh, w, max(8, w // 10)) + 0.12 * grain(rng, rh, w) + 0.06 * value_noise(rng, rh, w, 2.0)
    )
    for _ in range(int(rng.integers(2, 6))):  # repaired patches
        py, px = int(rng.integers(0, rh - 4)), int(rng.integers(0, w - 8))
        ph, pw = int(rng.integers(3, max(4, rh // 6))), int(rng.integers(8, max(9, w // 6)))
        asphalt[py : py + ph, px : px + pw] *= rng.uniform(0.7, 1.3)
    img[road] = asphalt
    near = _rows(h, ROAD_BOTTOM, 1.0)
    img[near] = _paving(rng, near.stop - near.start, w, rng.uniform(0.4, 0.55), max(6, w // 24))

    def line(y_frac, thickness, value, dash=None):
        y0 = int(round(y_frac * h))
        t = max(1, int(round(thickness * h)))
        mask = np.ones(w, bool)
        if dash:
            mask = (np.arange(w) % dash[0]) < dash[1]
        img[y0 : y0 + t, mask] = value * np.exp(0.1 * grain(rng, t, int(mask.sum())))

    line(ROAD_TOP - 0.004, 0.008, 0.65)  # kerbs
    line(ROAD_BOTTOM - 0.004, 0.01, 0.65)
    line(0.52, 0.006, 0.8, dash=(w // 8, w // 16))
    line(0.637, 0.006, 0.8, dash=(w // 8, w // 16))
    line(0.745, 0.005, 0.8)
    for y in (0.548, 0.558, 0.593, 0.603):  # two tram tracks: bright steel rails with a dark groove
        line(y, 0.004, 0.55)
        line(y + 0.004, 0.002, 0.05)
    ys = np.arange(road.start, road.stop)
    stripes = ((ys - road.start) // max(2, rh // 14)) % 2 == 0
    spread = (ys - road.start) / rh * 0.03 * w  # the crossing widens towards the camera
    for y, s, on in zip(ys, spread, stripes):
        if on:
            a, b = int(cw[0] - s), int(cw[1] + s)
            img[y, a:b] = 0.75 * np.exp(0.08 * grain(rng, 1, b - a))[0]
    img *= 1.0 - 0.25 * (np.hypot(*np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]) / 1.42) ** 2  # lens vignetting
    np.clip(img, 0.01, 1.0, out=img)
    fg_c, fg_a, slices = _poles(rng, w, h)
    return Scene(img, fg_c, fg_a, slices, cw)


def _poles(rng, w, h):
    """Lamp posts and a sign on the near sidewalk: foreground occluders."""
    color = np.zeros((h, w))
    alpha = np.zeros((h, w))
    slices = []
    for _ in range(int(rng.integers(1, 3))):
        x = rng.uniform(0.05, 0.95) * w
        r = max(0.7, 0.006 * w)
        parts = [capsule(x, 0.98 * h, x, 0.2 * h, r, 0.1, fine=0.1)]
        if rng.random() < 0.5:
            parts.append(capsule(x, 0.2 * h, x + 0.05 * w, 0.18 * h, r * 0.8, 0.1))
        else:
            parts.append(circle(x, 0.62 * h, 0.03 * w, 0.7))
            parts.append(box(x - 0.02 * w, 0.66 * h, x + 0.02 * w, 0.7 * h, 0.15))
        x0, x1 = int(max(0, x - 0.04 * w)), int(min(w, x + 0.07 * w))
        c, a = rasterize(parts, 0, x1 - x0, h, -x0, 0.0)
        color[:, x0:x1] = color[:, x0:x1] * (1 - a) + c
        alpha[:, x0:x1] = alpha[:, x0:x1] * (1 - a) + a
        slices.append((slice(0, h), slice(x0, x1)))
    return color, alpha, slices
