"""COCO box AP over label frames, through faster-coco-eval when it is installed, else pycocotools.

Both backends implement the same COCO rules (IoU thresholds 0.50:0.05:0.95, 101 recall points, at
most 100 detections per image and class, areas small < 32² < medium < 96² < large); faster-coco-eval
does the matching in C++ and is several times faster on many label frames. ``backend="auto"``
picks it when importable; ``"pycocotools"`` or ``"faster_coco_eval"`` force one.

Frames come from :func:`finetune.evaluation.label_frames`: one COCO image per labelled time, the
detections' ``class_confidence`` is the COCO score.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Sequence

AP_KEYS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")
BACKENDS = ("auto", "faster_coco_eval", "pycocotools")


def faster_coco_eval_available() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str = "auto") -> str:
    """The backend that will run: ``auto`` means faster-coco-eval when it imports."""
    if backend not in BACKENDS:
        raise ValueError(f"eval.backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "faster_coco_eval" if faster_coco_eval_available() else "pycocotools"
    if backend == "faster_coco_eval" and not faster_coco_eval_available():
        raise ValueError(
            "eval.backend=faster_coco_eval, but faster-coco-eval is not installed (pip install faster-coco-eval)"
        )
    return backend


def _classes(backend: str):
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        def make_eval(gt, dt):
            return COCOeval_faster(gt, dt, "bbox", print_function=lambda *args, **kwargs: None)

        return COCO, make_eval
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, lambda gt, dt: COCOeval(gt, dt, "bbox")


def coco_datasets(frames: Sequence, names: Sequence[str], agnostic: bool):
    """Ground truth and results as COCO dataset dicts (category id = class_id + 1, as Prophesee
    does). Results are built like ground truth rather than through ``loadRes``, which fails on an
    empty list; the area is w·h, as ``loadRes`` would set it."""
    categories = (
        [{"id": 1, "name": "object"}] if agnostic else [{"id": k + 1, "name": name} for k, name in enumerate(names)]
    )
    images, gts, dts = [], [], []
    for image_id, frame in enumerate(frames, start=1):
        images.append({"id": image_id, "height": frame.height, "width": frame.width})
        for boxes, out in ((frame.gt, gts), (frame.pred, dts)):
            for b in boxes:
                w, h = float(b["w"]), float(b["h"])
                ann = {
                    "id": len(out) + 1,
                    "image_id": image_id,
                    "bbox": [float(b["x"]), float(b["y"]), w, h],
                    "area": w * h,
                    "category_id": 1 if agnostic else int(b["class_id"]) + 1,
                    "iscrowd": 0,
                }
                if out is dts:
                    ann["score"] = float(b["class_confidence"])
                out.append(ann)
    gt = {"images": images, "annotations": gts, "categories": categories}
    dt = {"images": images, "annotations": dts, "categories": categories}
    return gt, dt


def _none_if_missing(value) -> float | None:
    value = float(value)
    return None if value < 0 or math.isnan(value) else value


def coco_ap(frames: Sequence, names: Sequence[str], agnostic: bool = False, backend: str = "auto") -> dict:
    """The six COCO AP figures and AP per category (None where there is no ground truth).

    Both backends print progress; it is captured so evaluation stays quiet in training logs."""
    n_cats = 1 if agnostic else len(names)
    if not frames:
        return {"stats": {k: None for k in AP_KEYS}, "per_category": [None] * n_cats}
    coco_class, make_eval = _classes(resolve_backend(backend))
    gt_data, dt_data = coco_datasets(frames, names, agnostic)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = coco_class(), coco_class()
        coco_gt.dataset, coco_dt.dataset = gt_data, dt_data
        coco_gt.createIndex()
        coco_dt.createIndex()
        evaluator = make_eval(coco_gt, coco_dt)
        evaluator.params.imgIds = list(range(1, len(frames) + 1))
        evaluator.params.catIds = list(range(1, n_cats + 1))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [iou thr, recall, category, area range, max dets]
    per_category = []
    for k in range(n_cats):
        p = precision[:, :, k, 0, -1]
        per_category.append(float(p[p > -1].mean()) if (p > -1).any() else None)
    stats = {key: _none_if_missing(evaluator.stats[i]) for i, key in enumerate(AP_KEYS)}
    return {"stats": stats, "per_category": per_category}
