"""Where objects are: lanes seen from across the street, perspective, arrivals and paths.

The camera looks across a street from a pole, like eTraM's static traffic cameras: lanes run
horizontally, farther lanes sit higher in the image and look smaller and slower. Objects arrive
at the image border as a Poisson process per lane (starting well before t = 0, so a recording
opens with traffic already in view), drive through and leave; pedestrians may also cross the road
at the zebra crossing. Nearer lanes are drawn later, so they occlude farther ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from . import classes as C
from .designs import make_design
from .texture import NoisePatch

# Baselines (where objects touch the ground) as fractions of the image height.
FAR_WALK, NEAR_WALK = 0.355, 0.95
ROAD_TOP, ROAD_BOTTOM = 0.375, 0.86
ROAD_DEPTH_M = 14.0  # kerb to kerb, for crossing pedestrians


def perspective(y_frac):
    """Apparent size of a 1 m object at baseline ``y_frac`` relative to the nearest sidewalk."""
    return 0.45 + 0.55 * (np.asarray(y_frac) - FAR_WALK) / (NEAR_WALK - FAR_WALK)


@dataclass(frozen=True)
class Lane:
    name: str
    y: float
    direction: int  # +1 rightwards, -1 leftwards, 0 either way
    classes: dict
    rate_hz: float
    queue: bool = True  # vehicles may not overtake inside a lane; walkers may


LANES = (
    Lane("far_sidewalk", FAR_WALK, 0, {C.PEDESTRIAN: 0.8, C.WHEELCHAIR: 0.12, C.BICYCLE: 0.08}, 0.12, False),
    Lane("westbound", 0.47, -1, {C.CAR: 0.55, C.TRUCK: 0.15, C.BUS: 0.12, C.MOTORBIKE: 0.18}, 0.4),
    Lane("tram_west", 0.555, -1, {C.TRAM: 1.0}, 0.015),
    Lane("tram_east", 0.6, 1, {C.TRAM: 1.0}, 0.015),
    Lane("eastbound", 0.7, 1, {C.CAR: 0.55, C.TRUCK: 0.15, C.BUS: 0.12, C.MOTORBIKE: 0.18}, 0.4),
    Lane("bike_lane", 0.8, 1, {C.BICYCLE: 0.7, C.MOTORBIKE: 0.3}, 0.15),
    Lane("near_sidewalk", NEAR_WALK, 0, {C.PEDESTRIAN: 0.75, C.WHEELCHAIR: 0.15, C.BICYCLE: 0.1}, 0.2, False),
)
CROSSING_RATE_HZ = 0.06


@dataclass
class Actor:
    """One object: class, size in metres, and a piecewise-linear path of (time s, centre x px,
    baseline as a fraction of the height). Its box is derived from the path at any time."""

    track_id: int
    class_id: int
    length_m: float
    aspect: float
    speed_ms: float
    path_t: np.ndarray
    path_x: np.ndarray
    path_y: np.ndarray
    facing: int
    design: object = field(repr=False)
    patch: NoisePatch | None = field(default=None, repr=False)
    sprites: dict = field(default_factory=dict, repr=False)

    @property
    def animated(self) -> bool:
        return C.SPECS[self.class_id].animated

    @cached_property
    def fixed_size(self) -> bool:
        """True when the object stays at one depth, so its drawing can be cached and translated."""
        return bool(np.all(self.path_y == self.path_y[0]))

    def baseline(self, t: float) -> float:
        return float(np.interp(t, self.path_t, self.path_y))

    def box(self, t: float, px_per_m: float, height: int) -> tuple[float, float, float, float]:
        """(left, top, width, height) in pixels at time ``t``."""
        yb = self.baseline(t)
        w = self.length_m * px_per_m * float(perspective(yb))
        h = w * self.aspect
        cx = float(np.interp(t, self.path_t, self.path_x))
        return cx - w / 2, yb * height - h, w, h

    def distance_m(self, t: float) -> float:
        return self.speed_ms * (t - self.path_t[0])


def _lane_actor(rng, lane, t0, width, px_per_m, track_id, prev):
    cid = int(rng.choice(list(lane.classes), p=np.array(list(lane.classes.values())) / sum(lane.classes.values())))
    spec = C.SPECS[cid]
    length = rng.uniform(*spec.length_m)
    speed = rng.uniform(*spec.speed_ms)
    direction = lane.direction or int(rng.choice((-1, 1)))
    y = lane.y + (rng.uniform(-0.012, 0.012) if not lane.queue else 0.0)
    scale = float(perspective(y)) * px_per_m
    w = length * scale
    if lane.queue and prev is not None:
        pw, pspeed, pt0, pexit = prev
        gap = 1.5 * scale
        t0 = max(t0, pt0 + (pw + gap) / (pspeed * scale))  # enter once the one ahead is a gap away
        if t0 < pexit:
            # Catch up at most as it leaves the view: its rear reaches the far border at pexit,
            # so our front may cover (width - gap) pixels by then.
            speed = min(speed, (width - gap) / (pexit - t0) / scale)
    v = speed * scale
    travel = (width + w) / v  # centre from half a length before the border to half a length past
    x_start = -w / 2 if direction > 0 else width + w / 2
    actor = Actor(
        track_id,
        cid,
        length,
        rng.uniform(*spec.aspect),
        speed,
        np.array([t0, t0 + travel]),
        np.array([x_start, x_start + direction * (width + w)]),
        np.array([y, y]),
        direction,
        make_design(cid, rng),
    )
    return actor, (w, speed, t0, t0 + travel)


def _crossing_actor(rng, t0, width, height, px_per_m, crosswalk, track_id):
    """A pedestrian who walks along the far sidewalk to the crossing and crosses towards the camera,
    or comes from below the image and crosses away from it, then walks off along the far sidewalk."""
    spec = C.SPECS[C.PEDESTRIAN]
    length, speed = rng.uniform(*spec.length_m), rng.uniform(*spec.speed_ms)
    cx = rng.uniform(*crosswalk)
    side = int(rng.choice((-1, 1)))
    far_v = speed * px_per_m * float(perspective(FAR_WALK))
    x_far = -0.05 * width if side < 0 else 1.05 * width
    t_walk = abs(cx - x_far) / far_v
    y_exit = 1.0 + 0.4  # baseline below the image: the whole body is out of view
    t_cross = (y_exit - FAR_WALK) / (ROAD_BOTTOM - ROAD_TOP) * ROAD_DEPTH_M / speed
    if rng.random() < 0.5:  # towards the camera
        ts = [t0, t0 + t_walk, t0 + t_walk + t_cross]
        xs, ys = [x_far, cx, cx], [FAR_WALK, FAR_WALK, y_exit]
        facing = 1 if cx > x_far else -1
    else:
        ts = [t0, t0 + t_cross, t0 + t_cross + t_walk]
        xs, ys = [cx, cx, x_far], [y_exit, FAR_WALK, FAR_WALK]
        facing = 1 if x_far > cx else -1
    return Actor(
        track_id,
        C.PEDESTRIAN,
        length,
        rng.uniform(*spec.aspect),
        speed,
        np.array(ts),
        np.array(xs),
        np.array(ys),
        facing,
        make_design(C.PEDESTRIAN, rng),
    )


def spawn_traffic(
    rng,
    width: int,
    height: int,
    duration_s: float,
    px_per_m: float,
    crosswalk: tuple[float, float],
    density: float = 1.0,
    warmup_s: float = 90.0,
):
    """All actors that are in view at some time in [0, duration_s], sorted by track id.

    Arrivals start ``warmup_s`` before 0 so the opening frame is already a steady-state street."""
    actors: list[Actor] = []
    next_id = 1
    for lane in LANES:
        rate = lane.rate_hz * density
        prev = None
        t = -warmup_s
        while True:
            t += rng.exponential(1.0 / rate)
            if t > duration_s:
                break
            queued = lane.queue and lane.direction != 0
            actor, state = _lane_actor(rng, lane, t, width, px_per_m, next_id, prev if queued else None)
            prev = state
            next_id += 1
            if actor.path_t[-1] > 0 and actor.path_t[0] < duration_s:
                actors.append(actor)
    t = -warmup_s
    while True:
        t += rng.exponential(1.0 / (CROSSING_RATE_HZ * density))
        if t > duration_s:
            break
        actor = _crossing_actor(rng, t, width, height, px_per_m, crosswalk, next_id)
        next_id += 1
        if actor.path_t[-1] > 0 and actor.path_t[0] < duration_s:
            actors.append(actor)
    for actor in actors:  # textures only for the objects that are kept
        w = actor.length_m * px_per_m
        actor.patch = NoisePatch(rng, w, w * actor.aspect, cell=max(2.0, 0.12 * w * min(actor.aspect, 1.0)))
    return actors


def max_speed_px(actors, px_per_m: float, height: int) -> float:
    """Fastest apparent motion of any actor (pixels per second), to choose the frame rate."""
    best = 1.0
    for a in actors:
        dt = np.diff(a.path_t)
        dx = np.abs(np.diff(a.path_x))
        dy = np.abs(np.diff(a.path_y)) * height
        ok = dt > 0
        if ok.any():
            best = max(best, float(np.max(np.hypot(dx[ok], dy[ok]) / dt[ok])))
    return best
