"""COCO AP time: faster-coco-eval against pycocotools on the same label frames (evcmae-bench coco).

The frames imitate an evaluation of eTraM-like data: ``frames`` label times, 1-8 ground-truth
boxes each of 3 classes, and the detections a trained detector leaves at the reported-metrics
threshold (a matched box per object most of the time, plus 20-60 low-score false positives).
One run is what ``evaluate`` does: class-averaged AP and class-agnostic AP. Medians of
``repeats`` runs after one warm-up; the AP values of both backends are compared too.
"""

from __future__ import annotations

import numpy as np

from evcmae.events.benchmarks import median_ms
from evcmae.events.labels import BBOX_DTYPE
from evcmae.finetune.coco import coco_ap, faster_coco_eval_available
from evcmae.finetune.evaluation import Frame

NAMES = ("pedestrian", "vehicle", "micro-mobility")


def synthetic_frames(frames: int = 1500, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(frames):
        n = int(rng.integers(1, 9))
        gt = np.zeros(n, BBOX_DTYPE)
        gt["t"] = i
        gt["x"], gt["y"] = rng.uniform(0, 560, n), rng.uniform(0, 280, n)
        gt["w"], gt["h"] = rng.uniform(10, 120, n), rng.uniform(10, 120, n)
        gt["class_id"] = rng.integers(0, 3, n)
        found = gt[rng.uniform(size=n) < 0.8].copy()
        found["x"] += rng.normal(0, 4, len(found))
        found["class_confidence"] = rng.uniform(0.3, 1, len(found))
        m = int(rng.integers(20, 60))
        noise = np.zeros(m, BBOX_DTYPE)
        noise["t"] = i
        noise["x"], noise["y"] = rng.uniform(0, 600, m), rng.uniform(0, 320, m)
        noise["w"], noise["h"] = rng.uniform(10, 80, m), rng.uniform(10, 80, m)
        noise["class_id"] = rng.integers(0, 3, m)
        noise["class_confidence"] = rng.uniform(0.001, 0.3, m)
        out.append(Frame(0, i, gt, np.concatenate([found, noise]), 360, 640))
    return out


def bench_coco(frames: int = 1500, repeats: int = 3) -> dict:
    """{"pycocotools_ms", "faster_coco_eval_ms", "speedup", "max_ap_difference", ...}."""
    data = synthetic_frames(frames)
    result = {
        "frames": frames,
        "gt": int(sum(len(f.gt) for f in data)),
        "detections": int(sum(len(f.pred) for f in data)),
        "repeats": repeats,
    }
    aps = {}
    backends = ["pycocotools"] + (["faster_coco_eval"] if faster_coco_eval_available() else [])
    for backend in backends:

        def run(backend=backend):
            aps[backend] = (coco_ap(data, NAMES, backend=backend), coco_ap(data, NAMES, True, backend=backend))

        result[f"{backend}_ms"] = round(median_ms(run, repeats, warmup=1), 1)
    if "faster_coco_eval" in aps:
        result["speedup"] = round(result["pycocotools_ms"] / result["faster_coco_eval_ms"], 2)
        diffs = [
            abs(a - b)
            for slow, fast in zip(aps["pycocotools"], aps["faster_coco_eval"])
            for a, b in zip(slow["stats"].values(), fast["stats"].values())
            if a is not None and b is not None
        ]
        result["max_ap_difference"] = float(max(diffs))
    else:
        result["faster_coco_eval"] = "not installed"
    return result
