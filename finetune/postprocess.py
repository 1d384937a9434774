"""Detections from decoded YOLOX outputs: score threshold, then class-aware NMS.

Output per image: a (K, 7) float tensor, rows sorted by decreasing score, columns
``x1, y1, x2, y2, obj, cls_conf, class`` (see ``COLUMNS``): YOLOX's and RVT's layout, so their
evaluation and Prophesee-format conversion code reads it unchanged. Thresholding and NMS rank by
``obj · cls_conf`` (:func:`detection_scores`), in RVT as in YOLOX; ``class`` is the arg-max class
as a float. Images with no detection give a (0, 7) tensor (YOLOX gives ``None``).

Evaluation scores the kept rows by protocol (:func:`evaluation_scores`, ``PROTOCOLS``): RVT's
evaluator by the class confidence alone, YOLOX's COCO evaluator by ``obj · cls_conf``.

torchvision's ``batched_nms`` is used when torchvision imports and its compiled operator works
on the tensor's device (probed once per device type, then cached): the torchvision wheels on
the package index are CUDA builds whose operators fail to load under a CPU torch. Otherwise a
pure-torch greedy NMS gives the same result (same IoU formula, suppression when IoU > threshold).
"""

from __future__ import annotations

from typing import Callable

import torch

COLUMNS = ("x1", "y1", "x2", "y2", "obj", "cls_conf", "class")
MATRIX_LIMIT = 4096  # up to this many boxes the IoU matrix (N² bools) is built in one go

_TORCHVISION: dict[str, Callable | None] = {}


# Evaluation protocol -> what a detection's COCO score is.
PROTOCOLS = {"rvt": "class confidence", "yolox": "objectness x class confidence"}


def detection_scores(detections: torch.Tensor) -> torch.Tensor:
    """The ranking score of post-processing (threshold, NMS): obj · cls_conf."""
    return detections[:, 4] * detections[:, 5]


def evaluation_scores(detections, protocol: str = "rvt"):
    """COCO score of each (K, 7) row under ``protocol`` (a tensor or an array, same type back)."""
    if protocol == "rvt":
        return detections[:, 5]
    if protocol == "yolox":
        return detections[:, 4] * detections[:, 5]
    raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")


def postprocess(
    decoded: torch.Tensor,
    conf_threshold: float = 0.1,
    nms_threshold: float = 0.45,
    class_agnostic: bool = False,
    use_torchvision: bool | None = None,
) -> list[torch.Tensor]:
    """decoded: (B, A, 5 + C) = cx, cy, w, h, obj prob, class probs (``YOLOXHead.decode``).
    Keeps anchors with obj·max class prob ≥ ``conf_threshold`` (RVT: 0.1 in training, 0.001 for
    reported metrics), then NMS at ``nms_threshold`` within each class."""
    results = []
    for pred in decoded:
        cls_conf, cls = pred[:, 5:].max(dim=1)
        scores = pred[:, 4] * cls_conf
        keep = scores >= conf_threshold
        half = pred[keep, 2:4] / 2
        det = torch.cat(
            (
                pred[keep, :2] - half,
                pred[keep, :2] + half,
                pred[keep, 4:5],
                cls_conf[keep, None],
                cls[keep, None].to(pred.dtype),
            ),
            dim=1,
        )
        groups = torch.zeros_like(cls[keep]) if class_agnostic else cls[keep]
        results.append(det[batched_nms(det[:, :4], scores[keep], groups, nms_threshold, use_torchvision)])
    return results


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor,
    iou_threshold: float,
    use_torchvision: bool | None = None,
) -> torch.Tensor:
    """Indices of the kept (x1, y1, x2, y2) boxes, by decreasing score; boxes of different
    ``groups`` never suppress each other. ``use_torchvision``: None = when it works, False = never."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if use_torchvision is not False:
        tv = _torchvision_batched_nms(boxes.device.type)
        if tv is not None:
            try:
                return tv(boxes, scores, groups, iou_threshold)
            except Exception:  # e.g. a dtype its kernel lacks: the pure version still answers
                pass
        elif use_torchvision:
            raise RuntimeError("torchvision's batched_nms is not usable here")
    return batched_nms_torch(boxes, scores, groups, iou_threshold)


def batched_nms_torch(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Class-aware NMS in one pass: each group is shifted by a multiple of the coordinate span
    so boxes of different groups cannot overlap."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    span = boxes.max() - boxes.min() + 1
    return nms_torch(boxes + (groups.to(boxes.dtype) * span)[:, None], scores, iou_threshold)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4) × (M, 4) x1y1x2y2 → (N, M), the formula torchvision's NMS kernel uses."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms_torch(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: take the best remaining box, drop every remaining box overlapping it by more
    than the threshold, repeat. One vectorised step per kept box; the IoU matrix is built once
    when it is small enough, else one row per kept box (memory O(N))."""
    order = scores.argsort(descending=True, stable=True)
    b = boxes[order].float()
    overlap = box_iou(b, b) > iou_threshold if b.shape[0] <= MATRIX_LIMIT else None
    keep = []
    remaining = torch.arange(b.shape[0], device=b.device)
    while remaining.numel():
        i, rest = remaining[0], remaining[1:]
        keep.append(i)
        suppressed = overlap[i, rest] if overlap is not None else box_iou(b[i : i + 1], b[rest])[0] > iou_threshold
        remaining = rest[~suppressed]
    return order[torch.stack(keep)]


def _torchvision_batched_nms(device_type: str) -> Callable | None:
    if device_type not in _TORCHVISION:
        fn = None
        try:
            from torchvision.ops import batched_nms as tv_batched_nms

            probe = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.1]], device=device_type)
            kept = tv_batched_nms(
                probe,
                torch.tensor([0.9, 0.8], device=device_type),
                torch.zeros(2, dtype=torch.long, device=device_type),
                0.5,
            )
            if kept.tolist() == [0]:
                fn = tv_batched_nms
        except Exception:  # not installed, or its C++ operator does not load with this torch
            fn = None
        _TORCHVISION[device_type] = fn
    return _TORCHVISION[device_type]
