"""Detection evaluation under the Prophesee protocol (docs/architecture.md, "Evaluation
protocol"), as RVT's evaluator runs it.

The protocol, as implemented by Prophesee's toolbox and by RVT (``utils/evaluation/prophesee``):

* boxes (ground truth *and* predictions) at or before ``skip_ts_us`` (0.5 s) after the start of
  their recording are dropped: the detector has too little history there to be judged;
* boxes (ground truth *and* predictions) below a size filter are dropped: diagonal
  ``>= min_box_diag`` and both sides ``>= min_box_side`` are kept. Values per camera are in
  ``SIZE_FILTERS``; Gen4 at full resolution uses 60/20, so at half resolution (eTraM and Gen4 at
  640x360, the default here) 30/10, which are also Gen1's values at its native 304x240;
* every time at which at least one ground-truth box survives the filters is one COCO "image";
  the predictions within ``time_tol_us`` of it (both ends included) belong to it, so with label
  times closer than twice the tolerance one prediction counts in several images, as in RVT;
* COCO AP (``finetune.coco``: faster-coco-eval when installed, else pycocotools): IoU thresholds
  0.50:0.05:0.95 (a match needs IoU >= the threshold), 101 recall points, at most 100 detections
  per image and class, size ranges small < 32², medium 32²–96², large > 96² px² (in the
  evaluated resolution's pixels).

Two scoring protocols (``EvalConfig.protocol``; every metrics.json names the one it used):

* ``rvt`` (the default): RVT's evaluator. A detection's COCO score is its class confidence alone
  (RVT's ``to_prophesee`` takes column 5 of YOLOX's output) and predictions within ±50 ms of a
  label time count (``time_tol=50000`` in its ``coco_eval.py``);
* ``yolox``: YOLOX's COCO evaluator. Score = objectness × class confidence; exact label times.

Both keep the same detections (post-processing thresholds and NMS rank by objectness × class, in
RVT as in YOLOX); only the COCO score and the time matching differ.

"AP" is the COCO figure: the mean over classes that have ground truth (what RVT reports).
"AP_class_agnostic" merges all classes into one before matching (eTraM's "All" figure).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np

from evcmae.events.labels import BBOX_DTYPE, as_bbox_array
from evcmae.finetune.classes import class_names
from evcmae.finetune.coco import AP_KEYS, coco_ap, resolve_backend
from evcmae.finetune.confusion import confusion_matrix
from evcmae.finetune.postprocess import PROTOCOLS, evaluation_scores

__all__ = [
    "AP_KEYS",
    "PROTOCOLS",
    "SIZE_FILTERS",
    "EvalConfig",
    "Frame",
    "Recording",
    "coco_ap",
    "detections_to_boxes",
    "evaluate",
    "evaluate_detection",
    "filter_boxes",
    "frame_metrics",
    "label_frames",
]

# (min_box_diag, min_box_side) in pixels of the evaluated resolution.
SIZE_FILTERS: dict[str, tuple[float, float]] = {
    "gen1": (30.0, 10.0),  # 304x240
    "gen4": (60.0, 20.0),  # 1280x720
    "gen4_ds2": (30.0, 10.0),  # 640x360: Gen4 / eTraM downsampled by 2 (the default)
}
# Predictions matched to a label time within this many µs, per protocol.
TIME_TOLERANCE_US = {"rvt": 50_000, "yolox": 0}


UNMATCHABLE_BOX = (-1e6, -1e6, -1e6 + 100.0, -1e6 + 100.0)  # x1, y1, x2, y2: overlaps no frame


def detections_to_boxes(detections, t_us: int, protocol: str = "rvt") -> np.ndarray:
    """``finetune.postprocess`` rows (x1, y1, x2, y2, obj, cls_conf, class) at one label time as
    ``BBOX_DTYPE``, scored as ``protocol`` scores (:func:`finetune.postprocess.evaluation_scores`):
    class confidence for ``rvt``, obj · cls_conf for ``yolox``; accepts a tensor or an array."""
    if hasattr(detections, "detach"):
        detections = detections.detach().cpu().numpy()
    d = np.asarray(detections, dtype=np.float64).reshape(-1, 7)
    unbounded = ~np.isfinite(d[:, :4]).all(1)
    if unbounded.any():
        # A diverged detector decodes boxes with infinite corners (exp overflow). RVT's evaluator
        # keeps them and their NaN IoU matches nothing: a false positive at its score. A box far
        # outside the frame is that same false positive in finite numbers, which the box checks accept.
        d = d.copy()
        d[unbounded, :4] = UNMATCHABLE_BOX
    out = np.zeros(len(d), dtype=BBOX_DTYPE)
    out["t"] = int(t_us)
    out["x"], out["y"] = d[:, 0], d[:, 1]
    out["w"], out["h"] = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
    out["class_id"] = d[:, 6].astype(np.int64)
    out["class_confidence"] = evaluation_scores(d, protocol)
    return out


@dataclass(frozen=True)
class EvalConfig:
    """Protocol settings; defaults are RVT's evaluator on eTraM / Gen4 at half resolution (640x360).

    ``time_tol_us=None`` takes the protocol's tolerance (rvt 50 ms, yolox 0); ``backend`` picks the
    COCO implementation (``finetune.coco``)."""

    skip_ts_us: int = 500_000
    min_box_diag: float = 30.0
    min_box_side: float = 10.0
    protocol: str = "rvt"
    time_tol_us: int | None = None
    backend: str = "auto"
    confusion_score: float = 0.3
    confusion_iou: float = 0.5

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"eval.protocol must be one of {sorted(PROTOCOLS)}, got {self.protocol!r}")
        resolve_backend(self.backend)  # fails now, not after a whole validation pass
        if self.time_tol_us is None:
            object.__setattr__(self, "time_tol_us", TIME_TOLERANCE_US[self.protocol])

    @classmethod
    def for_camera(cls, camera: str, **overrides) -> EvalConfig:
        diag, side = SIZE_FILTERS[camera]
        return cls(min_box_diag=diag, min_box_side=side, **overrides)


@dataclass
class Recording:
    """One recording's boxes (``BBOX_DTYPE``; predictions score with ``class_confidence``).

    ``t0_us`` is the recording's start time, from which the 0.5 s skip is measured; Prophesee and
    RVT assume recordings start at 0."""

    gt: np.ndarray
    pred: np.ndarray
    height: int
    width: int
    t0_us: int = 0
    name: str = ""


@dataclass
class Frame:
    """One labelled time of one recording: a COCO image."""

    recording: int
    t: int
    gt: np.ndarray
    pred: np.ndarray
    height: int
    width: int


@dataclass
class _Counts:
    recordings: int = 0
    images: int = 0
    gt: int = 0
    pred: int = 0
    gt_dropped_skip: int = 0
    gt_dropped_size: int = 0
    pred_dropped_skip: int = 0
    pred_dropped_size: int = 0
    pred_outside_label_times: int = 0
    gt_per_class: dict = field(default_factory=dict)


def filter_boxes(boxes: np.ndarray, config: EvalConfig = EvalConfig(), t0_us: int = 0) -> np.ndarray:
    """Boxes kept by the protocol: after the skip window and not below the size filter."""
    return boxes[_keep_time(boxes, config, t0_us) & _keep_size(boxes, config)]


def _keep_time(boxes, config, t0_us):
    return (boxes["t"].astype(np.int64) - int(t0_us)) > int(config.skip_ts_us)


def _keep_size(boxes, config):
    w = boxes["w"].astype(np.float64)
    h = boxes["h"].astype(np.float64)
    # Squared diagonal against squared threshold, as Prophesee does (no square-root rounding).
    return (w * w + h * h >= float(config.min_box_diag) ** 2) & (w >= config.min_box_side) & (h >= config.min_box_side)


def label_frames(recordings: Iterable[Recording], config: EvalConfig = EvalConfig()):
    """Filter every recording and cut it into frames at its labelled times -> (frames, counts)."""
    frames: list[Frame] = []
    counts = _Counts()
    for index, rec in enumerate(recordings):
        counts.recordings += 1
        gt = _sorted(as_bbox_array(np.atleast_1d(np.asarray(rec.gt))))
        pred = _sorted(as_bbox_array(np.atleast_1d(np.asarray(rec.pred))))
        gt, gt_skip, gt_size = _split_drops(gt, config, rec.t0_us)
        pred, pred_skip, pred_size = _split_drops(pred, config, rec.t0_us)
        counts.gt_dropped_skip += gt_skip
        counts.gt_dropped_size += gt_size
        counts.pred_dropped_skip += pred_skip
        counts.pred_dropped_size += pred_size
        used = np.zeros(len(pred), dtype=bool)
        tol = int(config.time_tol_us)
        for t in np.unique(gt["t"]):
            g0 = np.searchsorted(gt["t"], t, side="left")
            g1 = np.searchsorted(gt["t"], t, side="right")
            p0 = np.searchsorted(pred["t"], t - tol, side="left")
            p1 = np.searchsorted(pred["t"], t + tol, side="right")
            used[p0:p1] = True
            frames.append(Frame(index, int(t), gt[g0:g1], pred[p0:p1], int(rec.height), int(rec.width)))
        counts.pred_outside_label_times += int((~used).sum())
    counts.images = len(frames)
    counts.gt = sum(len(f.gt) for f in frames)
    counts.pred = sum(len(f.pred) for f in frames)
    return frames, counts


def _sorted(boxes):
    return boxes[np.argsort(boxes["t"], kind="stable")]


def _split_drops(boxes, config, t0_us):
    """Kept boxes, and how many went to the skip window and (of the rest) to the size filter."""
    in_time = _keep_time(boxes, config, t0_us)
    keep = in_time & _keep_size(boxes, config)
    return boxes[keep], int((~in_time).sum()), int((in_time & ~keep).sum())


def evaluate_detection(
    recordings: Iterable[Recording], classes: str | Sequence[str] = "etram8", config: EvalConfig = EvalConfig()
) -> dict:
    """Prophesee-protocol metrics for a set of recordings; AP values are fractions in [0, 1]."""
    frames, counts = label_frames(recordings, config)
    return frame_metrics(frames, counts, classes, config)


def frame_metrics(
    frames: Sequence[Frame], counts: _Counts, classes: str | Sequence[str] = "etram8", config: EvalConfig = EvalConfig()
) -> dict:
    """Metrics from already filtered frames (see :func:`label_frames`).

    A class with no ground truth after filtering has AP ``None``: 0 would wrongly say the detector
    failed on it; the class-averaged "AP" leaves it out, as COCO does."""
    names = class_names(classes)
    for f in frames:
        for boxes, what in ((f.gt, "ground-truth"), (f.pred, "predicted")):
            if len(boxes) and int(boxes["class_id"].max()) >= len(names):
                raise ValueError(
                    f"{what} class_id {int(boxes['class_id'].max())} is outside the {len(names)} classes {list(names)}"
                )
    backend = resolve_backend(config.backend)
    per_class = coco_ap(frames, names, backend=backend)
    agnostic = coco_ap(frames, names, agnostic=True, backend=backend)
    gt_ids = np.concatenate([f.gt["class_id"] for f in frames]) if frames else np.zeros(0, np.int64)
    counts.gt_per_class = {n: int((gt_ids == k).sum()) for k, n in enumerate(names)}
    metrics = dict(per_class["stats"])
    metrics["AP_class_agnostic"] = agnostic["stats"]["AP"]
    metrics["AP_per_class"] = dict(zip(names, per_class["per_category"]))
    metrics["class_agnostic"] = agnostic["stats"]
    metrics["classes"] = list(names)
    metrics["counts"] = asdict(counts)
    metrics["protocol"] = {
        "name": config.protocol,
        "score": PROTOCOLS[config.protocol],
        **asdict(config),
        "backend": backend,
        "iou_thresholds": "0.50:0.05:0.95",
        "max_dets": 100,
        "area_ranges_px2": {"small": [0, 32**2], "medium": [32**2, 96**2], "large": [96**2, None]},
    }
    metrics["averaging"] = {
        "AP": "COCO mean over classes with ground truth (RVT's figure)",
        "AP_class_agnostic": "all classes merged into one before matching (eTraM's 'All')",
    }
    return metrics


def evaluate(
    recordings: Iterable[Recording], classes: str | Sequence[str] = "etram8", config: EvalConfig = EvalConfig()
) -> tuple[dict, dict]:
    """Metrics and confusion matrix from one pass of filtering: ``(metrics, confusion)``."""
    frames, counts = label_frames(recordings, config)
    metrics = frame_metrics(frames, counts, classes, config)
    confusion = confusion_matrix(frames, classes, config.confusion_score, config.confusion_iou)
    return metrics, confusion
