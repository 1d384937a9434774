"""One synthetic recording: render the street frame by frame, turn frames into events, add noise,
and label the visible objects at the label rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..container import Events
from ..labels import BBOX_DTYPE
from .compositor import Compositor
from .noise import background_activity, hot_pixels
from .presets import SPLITS, Preset, get_preset
from .scene import render_scene
from .simulator import EventSimulator
from .traffic import max_speed_px, spawn_traffic


@dataclass
class Recording:
    """``is_noise`` marks background-activity and hot-pixel events (for tests and analysis; it is
    not written to disk); ``frame_dt_us`` is the mean interval between rendered frames."""

    events: Events
    labels: np.ndarray
    is_noise: np.ndarray
    duration_us: int
    frame_dt_us: float
    n_objects: int


def recording_rngs(seed: int, split: str, index: int):
    """Independent generators for scene, traffic, sensor and noise of one recording, so each
    recording depends only on (seed, split, index) and can be regenerated on its own."""
    ss = np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)])
    return [np.random.default_rng(s) for s in ss.spawn(4)]


def synthesize(
    preset: str | Preset, seed: int, split: str = "train", index: int = 0, labelled: bool | None = None
) -> Recording:
    """Generate one recording in memory. ``labelled`` defaults to every split but ``pretrain``."""
    p = get_preset(preset)
    labelled = split != "pretrain" if labelled is None else labelled
    rng_scene, rng_traffic, rng_sensor, rng_noise = recording_rngs(seed, split, index)
    W, H = p.width, p.height
    scene = render_scene(rng_scene, W, H)
    actors = spawn_traffic(rng_traffic, W, H, p.duration_s, p.scale_px_per_m, scene.crosswalk, p.density)
    label_dt = int(round(1e6 / p.label_hz))
    n_labels = int(round(p.duration_s * 1e6)) // label_dt
    duration_us = n_labels * label_dt
    n_sub = max(1, math.ceil(label_dt * 1e-6 * max_speed_px(actors, p.scale_px_per_m, H) / p.max_px_per_frame))
    frame_t = np.round(np.arange(n_labels * n_sub + 1) * (label_dt / n_sub)).astype(np.int64)

    renderer = Compositor(p, scene, actors)
    sim = EventSimulator(W, H, p.sensor, rng_sensor)
    sim.reset(renderer.compose(0.0)[0], 0)
    parts, label_rows = [], []
    for k in range(1, len(frame_t)):
        is_label = labelled and k % n_sub == 0
        log, layers = renderer.compose(frame_t[k] * 1e-6, want_layers=is_label)
        parts.append(sim.step(log, frame_t[k]))
        if is_label:
            label_rows += renderer.labels(int(frame_t[k]), layers)

    noise = [
        background_activity(rng_noise, W, H, 0, duration_us, p.sensor),
        hot_pixels(rng_noise, W, H, 0, duration_us, p.sensor),
    ]
    cols = [np.concatenate([part[i] for part in parts + noise]) for i in range(4)]
    n_signal = sum(len(part[2]) for part in parts)
    is_noise = np.arange(len(cols[2])) >= n_signal
    order = np.argsort(cols[2], kind="stable")
    events = Events(*(c[order] for c in cols), width=W, height=H)
    labels = np.array(label_rows, dtype=BBOX_DTYPE) if label_rows else np.zeros(0, BBOX_DTYPE)
    return Recording(events, labels, is_noise[order], duration_us, label_dt / n_sub, len(actors))
