"""Tiny synthetic datasets in the layouts and file formats of the public ones, for end-to-end tests.

* Gen1: ``<split>/NAME_td.dat`` (Prophesee DAT, 304x240, a header without the sensor size, as old
  files have) + ``NAME_bbox.npy`` with Gen1's field names (``ts``, ``confidence``), classes
  car / pedestrian, labels at 4 Hz;
* Gen4 (1 Mpx): ``<split>/NAME_td.h5`` (1280x720) + ``NAME_bbox.npy`` with the 7 original classes
  (RVT keeps 0-2; every recording has one box of a dropped class), labels at 30 Hz;
* eTraM: ``<split>/NAME_td.h5`` (1280x720) + ``NAME_bbox.npy``, 8 classes, labels at 30 Hz.

Content: boxes gliding across the sensor, each emitting events along its edges, plus sparse noise.
Enough for preprocessing, a few training steps and evaluation to run on real code paths; not a
benchmark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evcmae.events.container import Events
from evcmae.events.h5 import write_h5
from evcmae.events.labels import BBOX_DTYPE

GEN1_BBOX_DTYPE = np.dtype(
    [
        ("ts", "<u8"),
        ("x", "<f4"),
        ("y", "<f4"),
        ("w", "<f4"),
        ("h", "<f4"),
        ("class_id", "u1"),
        ("confidence", "<f4"),
        ("track_id", "<u4"),
    ]
)
DAT_HEADER = b"% Data file containing Event2D events.\n% Date 2017-04-04 11:00:13\n% Version 2\n"

# name -> (width, height, number of classes in the label files, label period µs, box size range px)
SPECS = {
    "gen1": (304, 240, 2, 250_000, (36, 80)),
    "gen4": (1280, 720, 7, 33_333, (90, 220)),
    "etram": (1280, 720, 8, 33_333, (90, 220)),
}


def write_dat(path, events: Events, header: bytes = DAT_HEADER) -> None:
    """A Prophesee DAT file: ``%`` header, event type 0x00 (Event2D) and size 8, then records of
    uint32 time and uint32 address (x bits 0-13, y 14-27, polarity 28-31)."""
    records = np.empty((len(events), 2), "<u4")
    records[:, 0] = events.t
    records[:, 1] = events.x.astype(np.uint32) | (events.y.astype(np.uint32) << 14) | (events.p.astype(np.uint32) << 28)
    Path(path).write_bytes(header + bytes([0x00, 8]) + records.tobytes())


def object_classes(num_classes: int, seed: int) -> list[int]:
    """Four objects' classes: for Gen4's 7 classes three kept ones and one RVT drops (3-6); else a
    window of the class list that moves with the seed, so recordings together cover the classes."""
    if num_classes == 7:
        return [0, 1, 2, 3 + seed % 4]
    return [(4 * seed + k) % num_classes for k in range(4)]


def synth_recording(width, height, num_classes, label_period_us, size_range, duration_us=1_200_000, seed=0):
    """(events, labels): four moving boxes (``object_classes``); labels every ``label_period_us``."""
    rng = np.random.default_rng(seed)
    objects = []
    for k, cls in enumerate(object_classes(num_classes, seed)):
        w, h = rng.uniform(*size_range, 2)
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        vx, vy = rng.uniform(-1, 1, 2) * np.array([width, height]) * 0.2 / 1e6  # px per µs
        objects.append((w, h, x0, y0, vx, vy, cls, k))

    def box_at(obj, t):
        w, h, x0, y0, vx, vy, _, _ = obj
        return np.clip(x0 + vx * t, 0, width - w), np.clip(y0 + vy * t, 0, height - h), w, h

    xs, ys, ts, ps = [], [], [], []
    step = 1_000
    for t in range(0, duration_us, step):
        for obj in objects:
            x, y, w, h = box_at(obj, t)
            n = 12
            side = rng.integers(0, 4, n)
            u = rng.uniform(0, 1, n)
            ex = np.where(side < 2, x + u * w, np.where(side == 2, x, x + w - 1))
            ey = np.where(side >= 2, y + u * h, np.where(side == 0, y, y + h - 1))
            xs.append(ex), ys.append(ey), ts.append(t + rng.integers(0, step, n)), ps.append(side % 2)
        noise = 3
        xs.append(rng.uniform(0, width, noise)), ys.append(rng.uniform(0, height, noise))
        ts.append(t + rng.integers(0, step, noise)), ps.append(rng.integers(0, 2, noise))
    t = np.concatenate(ts)
    order = np.argsort(t, kind="stable")
    events = Events(
        np.clip(np.concatenate(xs), 0, width - 1)[order].astype(np.uint16),
        np.clip(np.concatenate(ys), 0, height - 1)[order].astype(np.uint16),
        t[order],
        np.concatenate(ps)[order],
        width=width,
        height=height,
    )
    rows = []
    for t in range(label_period_us, duration_us, label_period_us):
        for obj in objects:
            x, y, w, h = box_at(obj, t)
            rows.append((t, x, y, w, h, obj[6], obj[7], 1.0))
    return events, np.array(rows, dtype=BBOX_DTYPE)


def write_dataset(root, name: str, splits=("train", "val", "test"), seed: int = 0) -> Path:
    """A tiny ``name`` dataset (``gen1``, ``gen4`` or ``etram``) under ``root``: one recording per split."""
    width, height, classes, period, sizes = SPECS[name]
    root = Path(root)
    for i, split in enumerate(splits):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{name}_{split}_{i:03d}"
        events, labels = synth_recording(width, height, classes, period, sizes, seed=seed + i)
        if name == "gen1":
            write_dat(folder / f"{stem}_td.dat", events)
            old = np.zeros(len(labels), GEN1_BBOX_DTYPE)
            for field in ("x", "y", "w", "h", "class_id", "track_id"):
                old[field] = labels[field]
            old["ts"], old["confidence"] = labels["t"], labels["class_confidence"]
            np.save(folder / f"{stem}_bbox.npy", old)
        else:
            write_h5(folder / f"{stem}_td.h5", events)
            np.save(folder / f"{stem}_bbox.npy", labels)
    return root
