"""The Prophesee protocol on hand-made cases whose COCO AP can be worked out on paper."""

import json

import numpy as np
import pytest

from evcmae.events.labels import BBOX_DTYPE
from evcmae.finetune.classes import CLASS_SETS, ETRAM8_TO_3, remap_classes
from evcmae.finetune.confusion import confusion_matrix
from evcmae.finetune.evaluation import (
    EvalConfig,
    Recording,
    detections_to_boxes,
    evaluate,
    evaluate_detection,
    filter_boxes,
    label_frames,
)
from evcmae.finetune.report import write_metrics

THREE = CLASS_SETS["etram3"]  # pedestrian, vehicle, micro-mobility
T1, T2 = 600_000, 700_000  # label times after the 0.5 s skip


def boxes(*rows):
    """rows of (t, x, y, w, h, class_id[, score])."""
    out = np.zeros(len(rows), BBOX_DTYPE)
    for i, r in enumerate(rows):
        for name, value in zip(("t", "x", "y", "w", "h", "class_id"), r):
            out[i][name] = value
        out[i]["class_confidence"] = r[6] if len(r) > 6 else 1.0
    return out


def gt_two_frames():
    return boxes((T1, 100, 100, 40, 40, 0), (T1, 300, 100, 40, 40, 1), (T2, 200, 200, 40, 40, 1))


def run(gt, pred, classes=THREE, **config):
    return evaluate([Recording(gt, pred, 360, 640)], classes, EvalConfig(**config))


def test_perfect_predictions_give_ap_one():
    gt = gt_two_frames()
    metrics, _ = run(gt, gt.copy())
    for key in ("AP", "AP50", "AP75", "AP_M", "AP_class_agnostic"):
        # pycocotools divides by tp + fp + eps, so "1" is 1 - 2e-16
        assert metrics[key] == pytest.approx(1.0, abs=1e-12), key
    assert metrics["AP_per_class"]["pedestrian"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AP_S"] is None and metrics["AP_L"] is None  # no 40x40 box is small or large


@pytest.mark.parametrize(
    "shift, iou, expected_ap",
    [
        (11, 29 / 51, 0.2),  # IoU 0.569: matches at 0.50, 0.55 -> 2 of 10 thresholds
        (8, 32 / 48, 0.4),  # IoU 0.667: 0.50 .. 0.65 -> 4 of 10
        (10, 30 / 50, 0.3),  # IoU exactly 0.6: pycocotools matches at IoU >= threshold, so 0.60 counts
    ],
)
def test_known_shift_gives_known_ap(shift, iou, expected_ap):
    # 40x40 boxes shifted by d px: IoU = (40 - d) / (40 + d); each image has one box, so AP at a
    # threshold is 1 if the IoU reaches it and 0 if not, and AP is the share of thresholds met.
    gt = gt_two_frames()
    pred = gt.copy()
    pred["x"] += shift
    metrics, _ = run(gt, pred)
    assert metrics["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AP75"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["AP"] == pytest.approx(expected_ap, abs=1e-12)
    assert metrics["AP_class_agnostic"] == pytest.approx(expected_ap, abs=1e-12)


def test_class_without_gt_is_missing_not_zero():
    gt = gt_two_frames()  # pedestrian and vehicle only
    metrics, _ = run(gt, gt.copy())
    assert metrics["AP_per_class"]["micro-mobility"] is None
    assert metrics["counts"]["gt_per_class"] == {"pedestrian": 1, "vehicle": 2, "micro-mobility": 0}
    # ... and a false positive of that class does not make it 0 (nor lower the class-averaged AP)
    fp = boxes((T1, 500, 200, 40, 40, 2, 0.99))
    metrics, _ = run(gt, np.concatenate([gt, fp]))
    assert metrics["AP_per_class"]["micro-mobility"] is None
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)


def test_no_predictions_gives_zero_for_classes_with_gt():
    metrics, confusion = run(gt_two_frames(), boxes())
    assert metrics["AP"] == 0.0 and metrics["AP_per_class"]["vehicle"] == 0.0
    assert metrics["AP_per_class"]["micro-mobility"] is None
    assert [row[-1] for row in confusion["matrix"]] == [1, 2, 0, 0]


def test_skip_window_is_relative_to_recording_start():
    b = boxes(
        (499_999, 0, 0, 40, 40, 0),
        (500_000, 0, 0, 40, 40, 0),
        (500_001, 0, 0, 40, 40, 0),
        (1_500_000, 0, 0, 40, 40, 0),
        (1_500_001, 0, 0, 40, 40, 0),
    )
    assert filter_boxes(b)["t"].tolist() == [500_001, 1_500_000, 1_500_001]
    assert filter_boxes(b, t0_us=1_000_000)["t"].tolist() == [1_500_001]
    assert filter_boxes(b, EvalConfig(skip_ts_us=0))["t"].tolist() == b["t"].tolist()


def test_size_filter_keeps_exactly_diag_and_side_at_threshold():
    b = boxes(
        (T1, 0, 0, 18, 24, 0),  # diagonal exactly 30: kept
        (T1, 0, 0, 10, 30, 0),  # side exactly 10, diagonal 31.6: kept
        (T1, 0, 0, 9.9, 40, 0),  # side below 10: dropped
        (T1, 0, 0, 21, 21, 0),  # sides fine, diagonal 29.7: dropped
        (T1, 0, 0, 100, 5, 0),
    )  # long but thin: dropped
    assert filter_boxes(b)["w"].tolist() == pytest.approx([18, 10])
    gen4 = EvalConfig.for_camera("gen4")
    assert (gen4.min_box_diag, gen4.min_box_side) == (60, 20)
    assert len(filter_boxes(b, gen4)) == 0


def test_filters_apply_to_gt_and_predictions():
    gt = boxes((T1, 100, 100, 40, 40, 0), (T1, 300, 100, 8, 8, 0), (200_000, 10, 10, 40, 40, 0))
    pred = boxes(
        (T1, 100, 100, 40, 40, 0, 0.5),
        (T1, 500, 300, 9, 30, 0, 0.99),  # unmatched but below the size filter
        (200_000, 400, 10, 40, 40, 0, 0.99),
    )  # unmatched but inside the skip window
    metrics, _ = run(gt, pred)
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)  # the small GT is not a miss either
    c = metrics["counts"]
    assert (c["images"], c["gt"], c["pred"]) == (1, 1, 1)
    assert (c["gt_dropped_skip"], c["gt_dropped_size"]) == (1, 1)
    assert (c["pred_dropped_skip"], c["pred_dropped_size"]) == (1, 1)


def test_predictions_only_count_at_label_times():
    gt = gt_two_frames()
    good = gt.copy()
    good["class_confidence"] = 0.5  # below the strays: were they counted, AP would drop
    stray = boxes(
        (T1 + 1, 500, 50, 40, 40, 0, 0.99), (650_000, 500, 50, 40, 40, 1, 0.99), (T2 + 50_000, 500, 50, 40, 40, 1, 0.99)
    )
    metrics, confusion = run(gt, np.concatenate([good, stray]))
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["counts"]["pred_outside_label_times"] == 3
    assert sum(confusion["matrix"][-1]) == 0  # no false positives
    # Prophesee's own tool accepts predictions within a time tolerance: then they do count.
    tolerant, _ = run(gt, np.concatenate([good, stray]), time_tol_us=50_000)
    assert tolerant["counts"]["pred_outside_label_times"] == 0
    assert tolerant["AP"] < 1


def test_frames_are_the_labelled_times_after_filtering():
    gt = boxes((T1, 0, 0, 40, 40, 0), (T1, 50, 0, 40, 40, 1), (T2, 0, 0, 5, 5, 0), (800_000, 0, 0, 40, 40, 2))
    frames, counts = label_frames([Recording(gt, boxes(), 360, 640), Recording(gt, boxes(), 360, 640)])
    assert [(f.recording, f.t, len(f.gt)) for f in frames] == [(0, T1, 2), (0, 800_000, 1), (1, T1, 2), (1, 800_000, 1)]


def test_wrong_class_is_fp_per_class_but_tp_class_agnostic():
    gt = boxes((T1, 100, 100, 40, 40, 1), (T1, 300, 100, 40, 40, 0))  # vehicle A, pedestrian B
    pred = boxes(
        (T1, 300, 100, 40, 40, 1, 0.9),  # B called vehicle: higher score, wrong class
        (T1, 100, 100, 40, 40, 1, 0.8),
    )  # A called vehicle: right
    metrics, confusion = run(gt, pred)
    # vehicle: FP then TP -> precision 1/2 at every recall level; pedestrian: never detected
    assert metrics["AP_per_class"]["vehicle"] == pytest.approx(0.5, abs=1e-12)
    assert metrics["AP_per_class"]["pedestrian"] == 0.0
    assert metrics["AP"] == pytest.approx(0.25, abs=1e-12)
    assert metrics["AP_class_agnostic"] == pytest.approx(1.0, abs=1e-12)
    assert confusion["matrix"][0][1] == 1 and confusion["matrix"][1][1] == 1


def test_confusion_matrix_hand_case():
    gt = boxes(
        (T1, 0, 0, 40, 40, 0),  # A pedestrian
        (T1, 100, 0, 40, 40, 1),  # B vehicle
        (T1, 200, 0, 40, 40, 1),
    )  # C vehicle
    pred = boxes(
        (T1, 0, 0, 40, 40, 0, 0.9),  # A as pedestrian: correct
        (T1, 102, 0, 40, 40, 0, 0.8),  # B as pedestrian: confusion
        (T1, 400, 0, 40, 40, 1, 0.7),  # nothing there: false positive
        (T1, 1, 0, 40, 40, 1, 0.6),  # A again, already taken: false positive
        (T1, 200, 0, 40, 40, 2, 0.2),
    )  # C, below the score threshold: C is missed
    frames, _ = label_frames([Recording(gt, pred, 360, 640)])
    confusion = confusion_matrix(frames, THREE, score_threshold=0.3)
    assert confusion["rows"] == [*THREE, "background"]
    assert confusion["columns"] == [*THREE, "missed"]
    assert confusion["matrix"] == [[1, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0], [0, 2, 0, 0]]
    lower = confusion_matrix(frames, THREE, score_threshold=0.1)["matrix"]
    assert lower[1] == [1, 0, 1, 0]


def test_class_maps():
    assert len(CLASS_SETS["etram8"]) == 8 and len(ETRAM8_TO_3) == 8
    b = boxes(*[(T1, 0, 0, 40, 40, k) for k in range(8)])
    three = remap_classes(b)
    names = [THREE[k] for k in three["class_id"]]
    assert names == [
        "pedestrian",
        "vehicle",
        "micro-mobility",
        "vehicle",
        "micro-mobility",
        "vehicle",
        "vehicle",
        "micro-mobility",
    ]
    with pytest.raises(ValueError):
        evaluate_detection([Recording(b, boxes(), 360, 640)], THREE)  # class 7 is not in 3 classes


def test_write_metrics_files_and_keys(tmp_path):
    gt = gt_two_frames()
    metrics, confusion = run(gt, gt.copy())
    write_metrics(tmp_path, metrics, confusion)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AP_class_agnostic", "AP_per_class", "counts"):
        assert key in saved
    assert saved["AP_per_class"]["micro-mobility"] is None
    assert saved["protocol"]["skip_ts_us"] == 500_000
    assert json.loads((tmp_path / "confusion_matrix.json").read_text())["matrix"] == confusion["matrix"]
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    summary = (tmp_path / "summary.txt").read_text()
    assert "AP_class_agnostic" in summary and "micro-mobility" in summary and "–" in summary


def test_detections_from_postprocess_layout():
    det = np.array([[10.0, 20.0, 50.0, 80.0, 0.8, 0.5, 2.0]], dtype=np.float32)
    b = detections_to_boxes(det, T1)
    assert b.dtype == BBOX_DTYPE
    assert (int(b["t"][0]), int(b["class_id"][0])) == (T1, 2)
    assert [float(b[k][0]) for k in ("x", "y", "w", "h")] == [10, 20, 40, 60]
    assert float(b["class_confidence"][0]) == pytest.approx(0.4)
    assert len(detections_to_boxes(np.zeros((0, 7)), T1)) == 0
