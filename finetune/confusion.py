"""Confusion matrix of detections against ground truth, by class, at one IoU threshold.

A ground-truth box unmatched by any prediction counts under ``missed``; a prediction matching no
ground truth counts under ``background``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from evcmae.finetune.classes import class_names

if TYPE_CHECKING:
    from evcmae.finetune.evaluation import Frame

BACKGROUND = "background"
MISSED = "missed"


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every box of ``a`` and of ``b`` (x, y top-left, w, h), as COCO computes it."""
    ax0, ay0 = a["x"].astype(np.float64)[:, None], a["y"].astype(np.float64)[:, None]
    aw, ah = a["w"].astype(np.float64)[:, None], a["h"].astype(np.float64)[:, None]
    bx0, by0 = b["x"].astype(np.float64)[None], b["y"].astype(np.float64)[None]
    bw, bh = b["w"].astype(np.float64)[None], b["h"].astype(np.float64)[None]
    iw = np.clip(np.minimum(ax0 + aw, bx0 + bw) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay0 + ah, by0 + bh) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def confusion_matrix(
    frames: Sequence[Frame],
    classes: str | Sequence[str] = "etram8",
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
) -> dict:
    """Where detections go wrong: class confusions, false positives and misses.

    Per frame, predictions scoring >= ``score_threshold`` are taken highest score first and each
    matched to the still unmatched ground-truth box of highest IoU >= ``iou_threshold``, whatever
    the classes (so a right box with the wrong class shows up as a confusion, not as a miss plus
    a false positive). Rows: ground-truth class, then "background" (unmatched predictions);
    columns: predicted class, then "missed" (unmatched ground truth)."""
    names = class_names(classes)
    n = len(names)
    matrix = np.zeros((n + 1, n + 1), dtype=np.int64)
    for frame in frames:
        pred = frame.pred[frame.pred["class_confidence"] >= score_threshold]
        pred = pred[np.argsort(-pred["class_confidence"], kind="stable")]
        gt = frame.gt
        iou = _iou_matrix(pred, gt) if len(pred) and len(gt) else np.zeros((len(pred), len(gt)))
        taken = np.zeros(len(gt), dtype=bool)
        for i, p in enumerate(pred):
            candidates = np.where(~taken & (iou[i] >= iou_threshold))[0] if len(gt) else []
            if len(candidates):
                j = candidates[np.argmax(iou[i, candidates])]
                taken[j] = True
                matrix[int(gt[j]["class_id"]), int(p["class_id"])] += 1
            else:
                matrix[n, int(p["class_id"])] += 1
        for j in np.where(~taken)[0]:
            matrix[int(gt[j]["class_id"]), n] += 1
    return {
        "rows": [*names, BACKGROUND],
        "columns": [*names, MISSED],
        "matrix": matrix.tolist(),
        "score_threshold": float(score_threshold),
        "iou_threshold": float(iou_threshold),
    }
