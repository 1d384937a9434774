"""Building blocks shared by the class drawings (``vehicles``, ``people``): grey-level palettes,
wheels, jointed legs, and the marker for periodic animations.

A design is a function ``draw(w, h, dist_m) -> list[Part]`` in object-local pixels (x from the
rear at 0 to the front at ``w``, y down). Colours and proportions are drawn once per object from
its own generator; ``dist_m`` (metres travelled) drives legs, pedals and spokes, so the animation
stays in step with the ground speed at any frame rate."""

from __future__ import annotations

import math

from .primitives import capsule, circle, hole

PAINT = (0.04, 0.07, 0.12, 0.18, 0.28, 0.42, 0.58, 0.75, 0.88)
CLOTH = (0.03, 0.06, 0.1, 0.16, 0.25, 0.38, 0.55, 0.7)
SKIN = (0.18, 0.3, 0.42, 0.55)
TIRE = 0.03


def glass_tone(rng):
    return float(rng.choice((0.05, 0.08, 0.12, 0.2, 0.35)))


def pick(rng, palette, avoid=None):
    v = float(rng.choice(palette))
    if avoid is not None and abs(math.log(v / avoid)) < 0.3:  # keep parts distinguishable
        v = float(rng.choice(palette))
    return v


def wheel(cx, cy, r, hub, angle=None, open_rim=False, spokes=3):
    """Tyre, rim/hub and (for open wheels) spokes that turn with ``angle``."""
    parts = [circle(cx, cy, r, TIRE, fine=0.1)]
    if open_rim:
        parts.append(hole(circle(cx, cy, 0.86 * r)))
        for k in range(spokes):
            a = (angle or 0.0) + k * math.pi / spokes
            dx, dy = 0.85 * r * math.cos(a), 0.85 * r * math.sin(a)
            parts.append(capsule(cx - dx, cy - dy, cx + dx, cy + dy, max(0.04 * r, 0.35), hub))
        parts.append(circle(cx, cy, 0.12 * r, hub))
    else:
        parts.append(circle(cx, cy, 0.58 * r, hub, coarse=0.05, fine=0.02))
        parts.append(circle(cx, cy, 0.18 * r, 0.1))
        if angle is not None:  # bolts on a closed rim, so its rotation is visible
            for k in range(4):
                a = angle + k * math.pi / 2
                parts.append(circle(cx + 0.38 * r * math.cos(a), cy + 0.38 * r * math.sin(a), max(0.07 * r, 0.4), 0.08))
    return parts


def leg(hip, foot, thigh, shin, r, value, forward=1.0):
    """Two capsules meeting at a knee found by two-bone inverse kinematics (knee bends forward)."""
    hx, hy = hip
    fx, fy = foot
    d = max(math.hypot(fx - hx, fy - hy), 1e-6)
    d_eff = min(d, (thigh + shin) * 0.999)
    cos_a = (thigh**2 + d_eff**2 - shin**2) / (2 * thigh * d_eff)
    a = math.acos(max(-1.0, min(1.0, cos_a)))
    base = math.atan2(fy - hy, fx - hx)
    ang = base - forward * a
    kx, ky = hx + thigh * math.cos(ang), hy + thigh * math.sin(ang)
    return [capsule(hx, hy, kx, ky, r, value, fine=0.05), capsule(kx, ky, fx, fy, r * 0.9, value, fine=0.05)]


def cyclic(draw, cycle_m, poses):
    """Mark a drawing as periodic in distance travelled: it repeats every ``cycle_m`` metres and
    ``poses`` samples of one cycle are enough to animate it (see ``compositor.Compositor``)."""
    draw.cycle_m = cycle_m
    draw.poses = poses
    return draw
