"""The Prophesee protocol on hand-made cases whose COCO AP can be worked out on paper."""

import contextlib
import io
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


def test_unbounded_detection_is_a_false_positive_at_its_score():
    """A diverged detector decodes boxes with infinite corners; each counts as a false positive at
    its score, exactly as a finite box that overlaps nothing (RVT's evaluator: its NaN IoU matches
    nothing), instead of stopping the evaluation."""
    gt = gt_two_frames()
    hit = [(T1, 100, 100, 40, 40, 0, 0.5), (T1, 300, 100, 40, 40, 1, 0.5), (T2, 200, 200, 40, 40, 1, 0.5)]
    elsewhere = np.array([[500.0, 250.0, 560.0, 310.0, 0.9, 0.9, 1.0]])  # a vehicle box over no object
    unbounded = np.array([[-np.inf, 250.0, np.inf, np.nan, 0.9, 0.9, 1.0]])
    scores = {}
    for name, extra in (("elsewhere", elsewhere), ("unbounded", unbounded)):
        pred = np.concatenate([boxes(*hit), detections_to_boxes(extra, T1)])
        assert np.isfinite(pred["x"]).all() and np.isfinite(pred["w"]).all()
        scores[name] = run(gt, pred)[0]
    assert scores["unbounded"]["AP"] == pytest.approx(scores["elsewhere"]["AP"])
    assert scores["unbounded"]["AP_per_class"]["vehicle"] < 1.0  # the false positive outranks both hits
    assert scores["unbounded"]["AP_per_class"]["pedestrian"] == pytest.approx(1.0)


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
    metrics, confusion = run(gt, np.concatenate([good, stray]), protocol="yolox")  # exact times
    assert metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["counts"]["pred_outside_label_times"] == 3
    assert sum(confusion["matrix"][-1]) == 0  # no false positives
    # RVT's (and Prophesee's) evaluator accepts predictions within 50 ms: then they do count.
    tolerant, _ = run(gt, np.concatenate([good, stray]))
    assert tolerant["protocol"]["time_tol_us"] == 50_000
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
    assert float(b["class_confidence"][0]) == pytest.approx(0.5)  # rvt: the class confidence
    assert float(detections_to_boxes(det, T1, "yolox")["class_confidence"][0]) == pytest.approx(0.4)  # obj x cls
    assert len(detections_to_boxes(np.zeros((0, 7)), T1)) == 0
    with pytest.raises(ValueError, match="protocol"):
        detections_to_boxes(det, T1, "coco")


# -- RVT's evaluator ------------------------------------------------------------------------------
RVT_KEYS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")


def rvt_reference(gt_list, rows_list, classes, score="class", time_tol=50_000, skip=500_000, diag=30, side=10):
    """RVT's evaluation, step by step as its utils/evaluation/prophesee code does it (a reference
    written from that code's description, not a copy): detections are YOLOX rows converted with
    class_confidence = the class confidence (column 5); GT and detections are filtered (t > skip,
    w² + h² >= diag², both sides >= side); every unique GT time of a recording is one image with
    the GT at that time and every detection within ±time_tol of it; pycocotools' loadRes and
    COCOeval; all zeros when there is no detection at all."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def to_boxes(rows):
        out = np.zeros(len(rows), BBOX_DTYPE)
        for i, (t, r) in enumerate(rows):
            out[i] = (t, r[0], r[1], r[2] - r[0], r[3] - r[1], int(r[6]), 0, r[5] if score == "class" else r[4] * r[5])
        return out

    def keep(b):
        w, h = b["w"], b["h"]
        return b[(b["t"] > skip) & (w**2 + h**2 >= diag**2) & (w >= side) & (h >= side)]

    images_gt, images_dt = [], []
    for gt, rows in zip(gt_list, rows_list):
        gt, dt = keep(gt), keep(to_boxes(rows))
        for ts in np.unique(gt["t"]):
            images_gt.append(gt[gt["t"] == ts])
            images_dt.append(dt[(dt["t"] >= ts - time_tol) & (dt["t"] <= ts + time_tol)])
    if sum(len(d) for d in images_dt) == 0:
        return dict.fromkeys(RVT_KEYS, 0.0)
    annotations, results = [], []
    for image_id, (g, d) in enumerate(zip(images_gt, images_dt), start=1):
        for b in g:
            annotations.append(
                {
                    "area": float(b["w"] * b["h"]),
                    "iscrowd": False,
                    "image_id": image_id,
                    "bbox": [float(b["x"]), float(b["y"]), float(b["w"]), float(b["h"])],
                    "category_id": int(b["class_id"]) + 1,
                    "id": len(annotations) + 1,
                }
            )
        for b in d:
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(b["class_id"]) + 1,
                    "score": float(b["class_confidence"]),
                    "bbox": [float(b["x"]), float(b["y"]), float(b["w"]), float(b["h"])],
                }
            )
    coco_gt = COCO()
    coco_gt.dataset = {
        "images": [{"id": i, "height": 360, "width": 640} for i in range(1, len(images_gt) + 1)],
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = np.arange(1, len(images_gt) + 1, dtype=int)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(RVT_KEYS, (float(v) for v in evaluator.stats[:6])))


def shared_fixture(seed=0):
    """Three recordings with label times 50 ms apart (and a gap), detections as YOLOX rows
    ``(t, [x1, y1, x2, y2, obj, cls_conf, class])`` at every label time and between them, with
    objectness and class confidence drawn apart so the two scorings rank differently."""
    rng = np.random.default_rng(seed)
    gts, rows_list = [], []
    for _ in range(3):
        times = [t for t in range(400_000, 1_050_001, 50_000) if t != 800_000]
        gt, rows = [], []
        for t in times:
            for k in range(rng.integers(1, 5)):
                x, y = rng.uniform(0, 560), rng.uniform(0, 280)
                w, h = rng.uniform(12, 80), rng.uniform(12, 80)
                cls = int(rng.integers(0, 3))
                gt.append((t, x, y, w, h, cls, k, 1.0))
                if rng.uniform() < 0.85:  # a detection of it, jittered, sometimes of another class
                    jx, jy = rng.normal(0, 3, 2)
                    c = cls if rng.uniform() < 0.8 else int(rng.integers(0, 3))
                    rows.append(
                        (t, [x + jx, y + jy, x + jx + w, y + jy + h, rng.uniform(0.05, 1), rng.uniform(0.05, 1), c])
                    )
            for _ in range(rng.integers(0, 3)):  # false positives
                x, y = rng.uniform(0, 560), rng.uniform(0, 280)
                rows.append(
                    (
                        t,
                        [
                            x,
                            y,
                            x + rng.uniform(12, 70),
                            y + rng.uniform(12, 70),
                            rng.uniform(),
                            rng.uniform(),
                            int(rng.integers(0, 3)),
                        ],
                    )
                )
            if rng.uniform() < 0.3:  # a prediction between label times
                x, y = rng.uniform(0, 560), rng.uniform(0, 280)
                rows.append((t + 20_000, [x, y, x + 40, y + 40, rng.uniform(), rng.uniform(), int(rng.integers(0, 3))]))
        gts.append(np.array(gt, dtype=BBOX_DTYPE))
        rows_list.append(sorted(rows, key=lambda r: r[0]))
    return gts, rows_list


def ours(gts, rows_list, protocol, backend="pycocotools"):
    recordings = []
    for gt, rows in zip(gts, rows_list):
        parts = [detections_to_boxes(np.array([r]), t, protocol) for t, r in rows]
        recordings.append(Recording(gt, np.concatenate(parts), 360, 640))
    return evaluate_detection(recordings, THREE, EvalConfig(protocol=protocol, backend=backend))


def test_rvt_protocol_equals_rvts_evaluator_with_labels_50ms_apart():
    gts, rows_list = shared_fixture()
    reference = rvt_reference(gts, rows_list, THREE)
    metrics = ours(gts, rows_list, "rvt")
    for key in RVT_KEYS:
        expected = reference[key]
        assert (metrics[key] if metrics[key] is not None else -1.0) == pytest.approx(expected, abs=1e-12), key
    assert metrics["protocol"]["name"] == "rvt" and metrics["protocol"]["time_tol_us"] == 50_000
    assert metrics["protocol"]["score"] == "class confidence"
    # the tolerance matters here: labels 50 ms apart share their neighbours' detections, so more
    # detections are evaluated (counted once per image) than survive the filters
    c = metrics["counts"]
    assert c["pred"] > sum(len(r) for r in rows_list) - c["pred_dropped_skip"] - c["pred_dropped_size"]


def test_yolox_protocol_scores_objectness_times_class_at_exact_times():
    gts, rows_list = shared_fixture()
    reference = rvt_reference(gts, rows_list, THREE, score="obj_x_class", time_tol=0)
    metrics = ours(gts, rows_list, "yolox")
    for key in RVT_KEYS:
        assert (metrics[key] if metrics[key] is not None else -1.0) == pytest.approx(reference[key], abs=1e-12), key
    assert metrics["protocol"]["name"] == "yolox" and metrics["protocol"]["time_tol_us"] == 0
    # the two protocols rank the same detections differently: the numbers move
    rvt = ours(gts, rows_list, "rvt")
    assert abs(rvt["AP"] - metrics["AP"]) > 0.01


def test_faster_coco_eval_gives_pycocotools_ap():
    pytest.importorskip("faster_coco_eval", reason="faster-coco-eval not installed (pip install faster-coco-eval)")
    gts, rows_list = shared_fixture(seed=3)
    slow = ours(gts, rows_list, "rvt", backend="pycocotools")
    fast = ours(gts, rows_list, "rvt", backend="faster_coco_eval")
    assert fast["protocol"]["backend"] == "faster_coco_eval" and slow["protocol"]["backend"] == "pycocotools"
    for key in (*RVT_KEYS, "AP_class_agnostic"):
        assert (fast[key] is None) == (slow[key] is None), key
        if slow[key] is not None:
            assert fast[key] == pytest.approx(slow[key], abs=1e-4), key
    for name in THREE:
        assert fast["AP_per_class"][name] == pytest.approx(slow["AP_per_class"][name], abs=1e-4), name


def test_unknown_protocol_or_backend_fail_at_once():
    with pytest.raises(ValueError, match="eval.protocol must be one of"):
        EvalConfig(protocol="coco")
    with pytest.raises(ValueError, match="eval.backend must be one of"):
        EvalConfig(backend="detectron2")


def test_evaluate_cli_on_box_files_equals_rvts_evaluator(tmp_path):
    """evcmae-evaluate labels=... detections=...: RVT's format on disk (detections scored by class
    confidence, as evcmae-detect writes them under protocol=rvt)."""
    from evcmae.events.labels import save_labels
    from evcmae.tools.evaluate import main

    gts, rows_list = shared_fixture(seed=5)
    (tmp_path / "labels").mkdir()
    (tmp_path / "dets").mkdir()
    for i, (gt, rows) in enumerate(zip(gts, rows_list)):
        save_labels(tmp_path / "labels" / f"rec{i}_bbox.npy", gt)
        dets = np.concatenate([detections_to_boxes(np.array([r]), t, "rvt") for t, r in rows])
        save_labels(tmp_path / "dets" / f"rec{i}_detections_bbox.npy", dets)
    out = tmp_path / "eval"
    labels, dets = tmp_path / "labels", tmp_path / "dets"
    assert main([f"labels={labels}", f"detections={dets}", "classes=etram3", f"out={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    reference = rvt_reference(gts, rows_list, THREE)
    for key in RVT_KEYS:
        assert (metrics[key] if metrics[key] is not None else -1.0) == pytest.approx(reference[key], abs=1e-6), key
    assert metrics["protocol"]["name"] == "rvt"
    assert "rvt scoring (class confidence), predictions within ±50 ms" in (out / "summary.txt").read_text()
    assert "protocol: rvt" in (out / "config.yaml").read_text()


def test_coco_benchmark_reports_both_backends():
    from evcmae.finetune.coco_benchmark import bench_coco

    result = bench_coco(frames=30, repeats=1)
    assert result["frames"] == 30 and result["pycocotools_ms"] > 0
    if "faster_coco_eval_ms" in result:
        assert result["max_ap_difference"] < 1e-4 and result["speedup"] > 0
