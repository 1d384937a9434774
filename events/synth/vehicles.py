"""Side views of the rigid classes: car, bus, truck, tram and motorbike (with rider). Each is
drawn once per object and then only translated, so detail here costs nothing per frame."""

from __future__ import annotations

from .primitives import box, capsule, circle, ellipse, poly
from .shapes import CLOTH, PAINT, glass_tone, leg, pick, wheel


def car(rng):
    paint = pick(rng, PAINT)
    glass = glass_tone(rng)
    hub = float(rng.choice((0.3, 0.5, 0.65)))
    roof_front = rng.uniform(0.6, 0.7)
    roof_rear = rng.uniform(0.12, 0.3)  # small: hatchback/SUV, large: saloon
    cabin_h = rng.uniform(0.0, 0.08)

    def draw(w, h, dist_m):
        wr = 0.2 * h
        top = cabin_h * h
        parts = [
            poly(
                [(0.05 * w, 0.44 * h), (roof_rear * w, top), (roof_front * w, top), (0.83 * w, 0.44 * h)],
                paint,
                coarse=0.05,
                fine=0.015,
            ),
            box(0, 0.4 * h, w, 0.86 * h, paint, r=0.12 * h, coarse=0.05, fine=0.015),
            poly(
                [
                    (0.12 * w, 0.41 * h),
                    ((roof_rear + 0.03) * w, top + 0.07 * h),
                    (0.44 * w, top + 0.07 * h),
                    (0.44 * w, 0.41 * h),
                ],
                glass,
                coarse=0.12,
                fine=0.03,
            ),
            poly(
                [
                    (0.47 * w, 0.41 * h),
                    (0.47 * w, top + 0.07 * h),
                    ((roof_front - 0.02) * w, top + 0.07 * h),
                    (0.79 * w, 0.41 * h),
                ],
                glass,
                coarse=0.12,
                fine=0.03,
            ),
            box(0, 0.7 * h, w, 0.75 * h, paint * 0.6),
            capsule(0.455 * w, 0.43 * h, 0.455 * w, 0.78 * h, max(0.004 * w, 0.35), paint * 0.45),
            box(0.36 * w, 0.5 * h, 0.41 * w, 0.53 * h, min(paint * 1.8, 0.9)),
            ellipse(0.975 * w, 0.5 * h, 0.025 * w, 0.05 * h, 0.92),
            box(0, 0.46 * h, 0.025 * w, 0.56 * h, 0.22),
        ]
        for cx in (0.19 * w, 0.8 * w):
            parts.append(circle(cx, h - wr, 1.2 * wr, 0.03))
            parts += wheel(cx, h - wr, wr, hub)
        return parts

    return draw


def bus(rng):
    paint = pick(rng, PAINT[3:])
    accent = pick(rng, PAINT, avoid=paint)
    glass = glass_tone(rng)

    def draw(w, h, dist_m):
        wr = 0.14 * h
        parts = [
            box(0, 0, w, 0.9 * h, paint, r=0.06 * h, coarse=0.05, fine=0.015),
            box(0, 0.6 * h, w, 0.68 * h, accent, coarse=0.05),
            box(0, 0.86 * h, w, 0.92 * h, 0.06),
        ]
        n = max(3, int(round(0.78 * w / (0.36 * h))))
        pitch = 0.78 * w / n
        for i in range(n):
            x0 = 0.04 * w + i * pitch
            parts.append(box(x0, 0.13 * h, x0 + pitch * 0.88, 0.5 * h, glass, r=0.02 * h, coarse=0.12, fine=0.03))
        parts.append(box(0.9 * w, 0.08 * h, 0.995 * w, 0.62 * h, glass, r=0.03 * h, coarse=0.12))
        for xd in (0.83 * w, 0.45 * w):
            parts.append(box(xd, 0.12 * h, xd + 0.055 * w, 0.86 * h, glass * 0.7, coarse=0.1))
            parts.append(capsule(xd + 0.0275 * w, 0.14 * h, xd + 0.0275 * w, 0.84 * h, max(0.002 * w, 0.35), paint))
        parts.append(ellipse(0.985 * w, 0.75 * h, 0.012 * w, 0.04 * h, 0.92))
        for cx in (0.17 * w, 0.78 * w):
            parts += wheel(cx, h - wr, wr, 0.45)
        return parts

    return draw


def truck(rng):
    cab = pick(rng, PAINT)
    cargo = pick(rng, PAINT[2:], avoid=cab)
    glass = glass_tone(rng)
    ribs = bool(rng.random() < 0.6)

    def draw(w, h, dist_m):
        wr = 0.13 * h
        parts = [box(0, 0, 0.72 * w, 0.8 * h, cargo, r=0.02 * h, coarse=0.06, fine=0.02)]
        if ribs:
            n = max(4, int(0.72 * w / (0.2 * h)))
            for i in range(1, n):
                x = i * 0.72 * w / n
                parts.append(capsule(x, 0.03 * h, x, 0.77 * h, max(0.08 * h / 4, 0.35), cargo * 0.7))
        parts += [
            box(0.74 * w, 0.2 * h, w, 0.85 * h, cab, r=0.06 * h, coarse=0.05, fine=0.015),
            poly(
                [(0.79 * w, 0.26 * h), (0.95 * w, 0.26 * h), (0.99 * w, 0.5 * h), (0.79 * w, 0.5 * h)],
                glass,
                coarse=0.12,
            ),
            box(0, 0.78 * h, w, 0.87 * h, 0.05),
            box(0.76 * w, 0.6 * h, 0.99 * w, 0.64 * h, cab * 0.6),
            ellipse(0.99 * w, 0.72 * h, 0.01 * w, 0.04 * h, 0.92),
        ]
        for cx in (0.12 * w, 0.25 * w, 0.86 * w):
            parts += wheel(cx, h - wr, wr, 0.4)
        return parts

    return draw


def tram(rng):
    paint = pick(rng, PAINT[4:])
    accent = pick(rng, PAINT, avoid=paint)
    glass = glass_tone(rng)

    def draw(w, h, dist_m):
        parts = [
            box(0.04 * w, 0, 0.96 * w, 0.12 * h, 0.3, coarse=0.05),
            box(0, 0.08 * h, w, 0.88 * h, paint, r=0.12 * h, coarse=0.05, fine=0.015),
            box(0, 0.62 * h, w, 0.72 * h, accent),
        ]
        n = max(6, int(round(0.92 * w / (0.55 * h))))
        pitch = 0.92 * w / n
        doors = set(range(1, n - 1, 3))
        for i in range(n):
            x0 = 0.04 * w + i * pitch
            if i in doors:
                parts.append(box(x0 + 0.1 * pitch, 0.2 * h, x0 + 0.9 * pitch, 0.86 * h, glass * 0.8, coarse=0.1))
                parts.append(capsule(x0 + 0.5 * pitch, 0.22 * h, x0 + 0.5 * pitch, 0.84 * h, 0.35, paint))
            else:
                parts.append(
                    box(
                        x0 + 0.06 * pitch,
                        0.22 * h,
                        x0 + 0.94 * pitch,
                        0.56 * h,
                        glass,
                        r=0.03 * h,
                        coarse=0.12,
                        fine=0.03,
                    )
                )
        for cx in (0.14 * w, 0.5 * w, 0.86 * w):
            parts.append(box(cx - 0.05 * w, 0.84 * h, cx + 0.05 * w, h, 0.06))
            for dx in (-0.025 * w, 0.025 * w):
                parts.append(circle(cx + dx, 0.93 * h, 0.06 * h, 0.25))
        parts.append(ellipse(0.99 * w, 0.74 * h, 0.006 * w, 0.04 * h, 0.92))
        return parts

    return draw


def motorbike(rng):
    body = pick(rng, PAINT)
    suit = pick(rng, CLOTH)
    helmet = pick(rng, PAINT, avoid=suit)

    def draw(w, h, dist_m):
        wr = 0.17 * w
        wy = h - wr
        ang = dist_m / 0.31
        parts = []
        for cx in (0.17 * w, 0.83 * w):
            parts += wheel(cx, wy, wr, 0.35, angle=ang)
        parts += [
            poly(
                [
                    (0.25 * w, wy),
                    (0.33 * w, wy - 1.5 * wr),
                    (0.72 * w, wy - 1.6 * wr),
                    (0.78 * w, wy - 0.8 * wr),
                    (0.5 * w, wy + 0.3 * wr),
                ],
                body,
                coarse=0.05,
                fine=0.02,
            ),
            capsule(0.83 * w, wy, 0.72 * w, 0.38 * h, max(0.02 * w, 0.4), 0.4),
            box(0.3 * w, wy - 1.75 * wr, 0.58 * w, wy - 1.5 * wr, 0.05),
            capsule(0.45 * w, 0.55 * h, 0.6 * w, 0.22 * h, 0.085 * w, suit, fine=0.05),
            capsule(0.6 * w, 0.24 * h, 0.73 * w, 0.38 * h, 0.035 * w, suit * 0.8),
            circle(0.64 * w, 0.11 * h, 0.1 * w, helmet, coarse=0.05),
            box(0.67 * w, 0.07 * h, 0.745 * w, 0.14 * h, 0.08),
        ]
        parts += leg((0.46 * w, 0.55 * h), (0.56 * w, wy + 0.2 * wr), 0.2 * h, 0.22 * h, 0.05 * w, suit * 0.9)
        return parts

    return draw
