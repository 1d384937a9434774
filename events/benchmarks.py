"""Speed benchmarks of the event layer. Each compares against a baseline measured in the same run
and reports medians, so a figure means the same thing on any machine."""

from __future__ import annotations

import time

import numpy as np
import torch

from .container import Events
from .voxelize import Voxelizer


def median_ms(fn, repeats: int, warmup: int = 1, sync=None) -> float:
    """Median wall time of ``fn()`` in ms. ``sync`` (e.g. ``torch.cuda.synchronize``) is called
    around each timed call, so asynchronous device work is counted."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if sync is not None:
            sync()
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def check_device(device: str) -> str:
    """``device`` as given, after checking that torch can use it (one clear line if not)."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False)")
    return device


def device_sync(device: str):
    """The ``sync`` for ``median_ms``: CUDA work is asynchronous, so timings wait for it."""
    return torch.cuda.synchronize if device == "cuda" else None


def device_info(device: str) -> dict:
    """What a figure was measured on, for the JSON: the GPU's name and torch's CUDA version."""
    if device != "cuda":
        return {"device": "cpu"}
    return {
        "device": "cuda",
        "gpu": torch.cuda.get_device_name(0),
        "torch_cuda": torch.version.cuda,
        # float32 convolutions may run as TF32 (cuDNN's default), float32 matmuls do not by default
        "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
    }


def random_events(n: int, width: int, height: int, duration_us: int, seed: int = 0) -> Events:
    rng = np.random.default_rng(seed)
    return Events(
        x=rng.integers(0, width, n),
        y=rng.integers(0, height, n),
        t=np.sort(rng.integers(0, duration_us, n)),
        p=rng.integers(0, 2, n),
        width=width,
        height=height,
    )


def naive_voxelize(events: Events, num_bins: int, window_us: int, width: int, height: int):
    """The textbook NumPy voxelization (np.unique + np.add.at) that the benchmark compares with."""
    t_bin = events.t * num_bins // window_us
    lin = (t_bin * height + events.y.astype(np.int64)) * width + events.x
    cells, inverse = np.unique(lin, return_inverse=True)
    features = np.zeros((len(cells), 3))
    np.add.at(features[:, 0], inverse, 1 - events.p.astype(np.int64))
    np.add.at(features[:, 1], inverse, events.p)
    np.add.at(features[:, 2], inverse, (events.t * num_bins % window_us) / window_us)
    features[:, 2] /= features[:, 0] + features[:, 1]
    return cells, features


def bench_voxelize(
    n_events: int = 2_000_000,
    width: int = 640,
    height: int = 360,
    num_bins: int = 10,
    window_us: int = 50_000,
    repeats: int = 7,
) -> dict:
    """2 M random time-sorted events into a 10x360x640 grid on one thread: ours vs the naive
    NumPy baseline, medians in millions of events per second."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        events = random_events(n_events, width, height, window_us)
        voxelizer = Voxelizer(width, height, window_us=window_us, num_bins=num_bins)
        ours = median_ms(lambda: voxelizer(events, 0), repeats)
        naive = median_ms(lambda: naive_voxelize(events, num_bins, window_us, width, height), max(3, repeats // 2))
    finally:
        torch.set_num_threads(threads)
    return {
        "benchmark": "voxelize",
        "events": n_events,
        "grid": [num_bins, height, width],
        "voxels": len(voxelizer(events, 0)),
        "threads": 1,
        "ms": round(ours, 2),
        "baseline_ms": round(naive, 2),
        "mev_per_s": round(n_events / ours / 1e3, 2),
        "baseline_mev_per_s": round(n_events / naive / 1e3, 2),
        "speedup": round(naive / ours, 2),
    }


def bench_evt3(n_events: int = 2_000_000, width: int = 1280, height: int = 720, repeats: int = 7) -> dict:
    """EVT 3.0 decoding of a stream our encoder writes from random sorted events of a 1280x720
    sensor (events share timestamps and rows in bursts, so vector words occur as in real files)."""
    from .evt3 import decode_evt3, encode_evt3

    rng = np.random.default_rng(1)
    # Bursts: groups of events at one timestamp along a row segment, as a moving edge produces.
    n_bursts = n_events // 8
    t = np.repeat(np.sort(rng.integers(0, 1_000_000, n_bursts)), 8)
    y = np.repeat(rng.integers(0, height, n_bursts), 8)
    x = np.repeat(rng.integers(0, width - 24, n_bursts), 8) + rng.integers(0, 24, 8 * n_bursts)
    p = np.repeat(rng.integers(0, 2, n_bursts), 8)
    events = Events(x=x, y=y, t=t, p=p, width=width, height=height)
    words = encode_evt3(events)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        decoded = decode_evt3(words, width=width, height=height)
        ms = median_ms(lambda: decode_evt3(words, width=width, height=height), repeats)
    finally:
        torch.set_num_threads(threads)
    return {
        "benchmark": "evt3",
        "events": len(decoded),
        "words": int(len(words)),
        "sensor": [width, height],
        "threads": 1,
        "ms": round(ms, 2),
        "mev_per_s": round(len(decoded) / ms / 1e3, 2),
    }
