"""Side views of the animated classes: pedestrian, bicycle (with rider) and wheelchair (with
occupant). Limbs, pedals and spokes move with the distance travelled; each drawing repeats over
one gait or pedal cycle, so a few dozen cached poses animate it."""

from __future__ import annotations

import math

from .primitives import box, capsule, circle, ellipse
from .shapes import CLOTH, PAINT, SKIN, TIRE, cyclic, leg, pick, wheel


def pedestrian(rng):
    top = pick(rng, CLOTH)
    legs = pick(rng, CLOTH, avoid=top)
    skin = float(rng.choice(SKIN))
    hair = float(rng.choice((0.03, 0.08, 0.2, 0.45)))
    bag = rng.random() < 0.3
    stride = rng.uniform(1.2, 1.6)
    swing = rng.uniform(0.35, 0.5)

    def draw(w, h, dist_m):
        phase = 2 * math.pi * dist_m / stride
        cx = 0.5 * w
        hip = (cx, 0.52 * h)
        leg_len = 0.47 * h
        parts = []
        for side, dim in ((math.pi, 0.7), (0.0, 1.0)):  # far limbs first, a little darker
            s = math.sin(phase + side)
            lift = max(0.0, math.cos(phase + side)) * 0.06 * h
            foot = (cx + leg_len * math.sin(swing * s), hip[1] + leg_len * math.cos(swing * s) - lift)
            parts += leg(hip, foot, 0.245 * h, 0.245 * h, 0.045 * h, legs * dim)
            a = -0.7 * swing * s
            parts.append(
                capsule(
                    cx,
                    0.22 * h,
                    cx + 0.3 * h * math.sin(a),
                    0.22 * h + 0.3 * h * math.cos(a),
                    0.03 * h,
                    top * dim,
                    fine=0.04,
                )
            )
            if side == math.pi:
                parts.append(
                    box(cx - 0.08 * h, 0.18 * h, cx + 0.08 * h, 0.55 * h, top, r=0.04 * h, coarse=0.08, fine=0.05)
                )
                if bag:
                    parts.append(box(cx - 0.14 * h, 0.2 * h, cx - 0.06 * h, 0.4 * h, 0.08, r=0.02 * h))
        parts += [
            capsule(cx, 0.13 * h, cx, 0.2 * h, 0.025 * h, skin),
            ellipse(cx + 0.01 * h, 0.085 * h, 0.055 * h, 0.075 * h, skin, fine=0.04),
            ellipse(cx - 0.008 * h, 0.06 * h, 0.055 * h, 0.05 * h, hair),
        ]
        return parts

    return cyclic(draw, stride, 24)


def bicycle(rng):
    frame = pick(rng, PAINT)
    top = pick(rng, CLOTH)
    legs = pick(rng, CLOTH, avoid=top)
    skin = float(rng.choice(SKIN))
    hair = float(rng.choice((0.05, 0.3, 0.6)))

    def draw(w, h, dist_m):
        wr = 0.2 * w
        wy = h - wr
        rear, front = (0.2 * w, wy), (0.8 * w, wy)
        crank = (0.47 * w, wy)
        seat = (0.4 * w, 0.5 * h)
        head = (0.72 * w, 0.47 * h)
        ang = dist_m / 0.34
        pedal_ang = ang / 2.5  # pedals turn slower than the wheels (gear ratio)
        parts = []
        for c in (rear, front):
            parts += wheel(c[0], c[1], wr, 0.45, angle=ang, open_rim=True)
        r = max(0.015 * w, 0.35)
        for a, b in ((rear, crank), (rear, seat), (seat, crank), (crank, head), (seat, head), (head, front)):
            parts.append(capsule(a[0], a[1], b[0], b[1], r, frame))
        hip = (seat[0], seat[1] - 0.03 * h)
        shoulder = (0.6 * w, 0.2 * h)
        pl = 0.09 * w
        for side, dim in ((math.pi, 0.7), (0.0, 1.0)):
            pedal = (crank[0] + pl * math.cos(pedal_ang + side), crank[1] + pl * math.sin(pedal_ang + side))
            parts += leg(hip, pedal, 0.24 * h, 0.24 * h, 0.04 * h, legs * dim)
            if side == math.pi:
                parts.append(capsule(hip[0], hip[1], shoulder[0], shoulder[1], 0.07 * h, top, coarse=0.08, fine=0.04))
        parts += [
            capsule(shoulder[0], shoulder[1], head[0] + 0.02 * w, head[1] - 0.02 * h, 0.028 * h, top * 0.9),
            circle(0.65 * w, 0.09 * h, 0.075 * h, skin, fine=0.04),
            ellipse(0.64 * w, 0.06 * h, 0.08 * h, 0.05 * h, hair),
        ]
        return parts

    # One pedal turn = 2.5 wheel turns = 15 periods of the 3-spoke pattern: the drawing repeats.
    return cyclic(draw, 2 * math.pi * 0.34 * 2.5, 48)


def wheelchair(rng):
    chair = pick(rng, (0.05, 0.1, 0.3, 0.5))
    top = pick(rng, CLOTH)
    legs = pick(rng, CLOTH, avoid=top)
    skin = float(rng.choice(SKIN))
    hair = float(rng.choice((0.04, 0.25, 0.6)))

    def draw(w, h, dist_m):
        wr = 0.34 * w
        wy = h - wr
        ang = dist_m / 0.3
        push = math.sin(2 * ang)  # two pushes per wheel turn
        parts = [
            box(0.22 * w, 0.5 * h, 0.72 * w, 0.57 * h, chair),
            capsule(0.22 * w, 0.55 * h, 0.18 * w, 0.22 * h, max(0.03 * w, 0.4), chair),
            capsule(0.7 * w, 0.56 * h, 0.85 * w, 0.9 * h, max(0.02 * w, 0.35), chair),
            circle(0.86 * w, h - 0.07 * w, 0.07 * w, TIRE),
        ]
        parts += wheel(0.38 * w, wy, wr, 0.5, angle=ang, open_rim=True, spokes=4)
        parts += [
            capsule(0.3 * w, 0.5 * h, 0.36 * w, 0.18 * h, 0.09 * h, top, coarse=0.08, fine=0.05),
            capsule(0.32 * w, 0.5 * h, 0.72 * w, 0.5 * h, 0.055 * h, legs),
            capsule(0.72 * w, 0.5 * h, 0.8 * w, 0.86 * h, 0.045 * h, legs),
            capsule(0.38 * w, 0.22 * h, 0.38 * w + 0.2 * w * push, 0.45 * h, 0.03 * h, top * 0.85),
            circle(0.42 * w, 0.09 * h, 0.085 * h, skin, fine=0.04),
            ellipse(0.4 * w, 0.06 * h, 0.085 * h, 0.055 * h, hair),
        ]
        return parts

    return cyclic(draw, 2 * math.pi * 0.3, 32)
