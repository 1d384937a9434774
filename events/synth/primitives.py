"""Shapes as signed distance functions, rasterised with one pixel of anti-aliasing.

Coverage from the signed distance (alpha = clip(0.5 - d, 0, 1)) makes a pixel's intensity vary
continuously as an edge slides across it by a fraction of a pixel. Without that, sub-pixel motion
would move edges in whole-pixel jumps and every pixel would fire all its events at one instant."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .texture import NoisePatch


@dataclass(frozen=True)
class Part:
    """One painted (or, with ``erase``, cut-out) piece of an object, in object-local pixels.

    ``value`` is linear intensity in (0, 1]; ``coarse``/``fine`` are the log-amplitudes of the
    object's own texture applied to this piece (paint blotches, fabric grain)."""

    kind: str
    geom: tuple
    value: float = 0.5
    coarse: float = 0.0
    fine: float = 0.0
    erase: bool = False


def box(x0, y0, x1, y1, value=0.5, r=0.0, **tex) -> Part:
    return Part("box", (x0, y0, x1, y1, r), value, **tex)


def ellipse(cx, cy, rx, ry, value=0.5, **tex) -> Part:
    return Part("ellipse", (cx, cy, rx, ry), value, **tex)


def circle(cx, cy, r, value=0.5, **tex) -> Part:
    return Part("ellipse", (cx, cy, r, r), value, **tex)


def capsule(ax, ay, bx, by, r, value=0.5, **tex) -> Part:
    return Part("capsule", (ax, ay, bx, by, r), value, **tex)


def poly(points, value=0.5, **tex) -> Part:
    return Part("poly", (tuple(map(tuple, points)),), value, **tex)


def hole(part: Part) -> Part:
    """The same shape, cutting through what was painted before (the open middle of a wheel)."""
    return Part(part.kind, part.geom, part.value, erase=True)


# -- signed distances (negative inside) --------------------------------------------------------
def _sd_box(x, y, g):
    x0, y0, x1, y1, r = g
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    r = min(r, (x1 - x0) / 2, (y1 - y0) / 2)
    qx = np.abs(x - cx) - ((x1 - x0) / 2 - r)
    qy = np.abs(y - cy) - ((y1 - y0) / 2 - r)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def _sd_ellipse(x, y, g):
    cx, cy, rx, ry = g
    rx, ry = max(rx, 1e-3), max(ry, 1e-3)
    dx, dy = x - cx, y - cy
    k0 = np.hypot(dx / rx, dy / ry)
    k1 = np.hypot(dx / (rx * rx), dy / (ry * ry))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def _sd_capsule(x, y, g):
    ax, ay, bx, by, r = g
    px, py = x - ax, y - ay
    vx, vy = bx - ax, by - ay
    h = np.clip((px * vx + py * vy) / max(vx * vx + vy * vy, 1e-12), 0.0, 1.0)
    return np.hypot(px - vx * h, py - vy * h) - r


def _sd_poly(x, y, g):
    pts = g[0]
    n = len(pts)
    d2 = np.full(np.broadcast(x, y).shape, np.inf)
    inside = np.zeros(d2.shape, dtype=bool)
    for i in range(n):
        (ax, ay), (bx, by) = pts[i], pts[(i + 1) % n]
        px, py = x - ax, y - ay
        ex, ey = bx - ax, by - ay
        h = np.clip((px * ex + py * ey) / max(ex * ex + ey * ey, 1e-12), 0.0, 1.0)
        d2 = np.minimum(d2, (px - ex * h) ** 2 + (py - ey * h) ** 2)
        crosses = (ay > y) != (by > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = ax + (y - ay) * ex / (ey if ey != 0 else 1e-12)
        inside ^= crosses & (x < xi)
    return np.where(inside, -1.0, 1.0) * np.sqrt(d2)


_SDF = {"box": _sd_box, "ellipse": _sd_ellipse, "capsule": _sd_capsule, "poly": _sd_poly}


def signed_distance(part: Part, x, y):
    return _SDF[part.kind](x, y, part.geom)


def rasterize(
    parts,
    width: float,
    region_w: int,
    region_h: int,
    ox: float,
    oy: float,
    flip: bool = False,
    patch: NoisePatch | None = None,
    tex_scale: float = 1.0,
):
    """Paint ``parts`` into a ``region_h`` x ``region_w`` pixel block whose pixel (0, 0) has its
    corner at object-local position (-ox, -oy). Returns premultiplied intensity and coverage.

    ``flip`` mirrors the object about its vertical axis (``width`` wide), so every design faces
    its direction of travel without a second drawing; ``tex_scale`` maps local pixels to the
    texture's pixels, so an object that grows as it approaches keeps the same pattern."""
    lx = np.arange(region_w) + 0.5 - ox
    if flip:
        lx = width - lx
    ly = np.arange(region_h) + 0.5 - oy
    x = lx[None, :]
    y = ly[:, None]
    if patch is not None:
        coarse, fine = patch.sample(
            np.broadcast_to(x * tex_scale, (region_h, region_w)), np.broadcast_to(y * tex_scale, (region_h, region_w))
        )
    color = np.zeros((region_h, region_w))
    alpha = np.zeros((region_h, region_w))
    for part in parts:
        a = np.clip(0.5 - signed_distance(part, x, y), 0.0, 1.0)
        if part.erase:
            keep = 1.0 - a
            color *= keep
            alpha *= keep
            continue
        value = part.value
        if patch is not None and (part.coarse or part.fine):
            value = value * np.exp(part.coarse * coarse + part.fine * fine)
        color = color * (1.0 - a) + a * value
        alpha = alpha * (1.0 - a) + a
    return color, alpha
