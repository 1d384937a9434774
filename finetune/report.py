"""Writing evaluation results: a text summary, the confusion-matrix plot and metrics.json (the
tables and figures through ``pretrain.reporting``, the project's one report writer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evcmae.finetune.evaluation import AP_KEYS
from evcmae.pretrain.reporting import MISSING, new_figure, save_figure, text_table


def _pct(value) -> str:
    return MISSING if value is None else f"{100 * value:.2f}"


def protocol_line(metrics: dict) -> str:
    """Which evaluator made the numbers: protocol, score, time matching, COCO backend."""
    p = metrics.get("protocol", {})
    name = p.get("name", "?")
    tol = p.get("time_tol_us")
    matching = "exact label times" if not tol else f"predictions within ±{tol / 1000:g} ms of a label time"
    return f"Prophesee protocol, {name} scoring ({p.get('score', '?')}), {matching}; COCO via {p.get('backend', '?')}"


def summary_text(metrics: dict) -> str:
    """A small fixed-width table for people reading a run folder (values in percent)."""
    c = metrics.get("counts", {})
    lines = [
        protocol_line(metrics),
        "COCO AP in percent",
        f"{c.get('images', '?')} label frames from {c.get('recordings', '?')} recordings; "
        f"{c.get('gt', '?')} GT boxes, {c.get('pred', '?')} predictions evaluated "
        f"({c.get('pred_outside_label_times', '?')} predictions outside label times ignored)",
        "",
        text_table(
            ["metric", "value"], [(k, _pct(metrics.get(k))) for k in (*AP_KEYS, "AP_class_agnostic")], (22, 8), "lr"
        ),
        "",
    ]
    gt_per_class = c.get("gt_per_class", {})
    classes = [(name, _pct(v), gt_per_class.get(name, "")) for name, v in metrics.get("AP_per_class", {}).items()]
    lines += [text_table(["class", "AP", "GT"], classes, (22, 8, 8), "lr")]
    lines += ["", f"AP: mean over classes with GT; AP_class_agnostic: classes merged; {MISSING} = no GT"]
    return "\n".join(lines) + "\n"


def plot_confusion(path: str | Path, confusion: dict) -> None:
    """Counts in each cell, colour by share of the row, so rare classes stay readable."""
    matrix = np.asarray(confusion["matrix"], dtype=np.float64)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.7 * len(confusion["columns"])
    fig, (ax,) = new_figure(1, (size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (r, col), count in np.ndenumerate(matrix):
        ax.text(
            col,
            r,
            f"{int(count)}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if share[r, col] > 0.5 else "black",
        )
    ax.set_xticks(range(len(confusion["columns"])), confusion["columns"], rotation=40, ha="right")
    ax.set_yticks(range(len(confusion["rows"])), confusion["rows"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"score ≥ {confusion['score_threshold']:g}, IoU ≥ {confusion['iou_threshold']:g}")
    fig.colorbar(image, ax=ax, label="share of row")
    save_figure(fig, path)


def write_metrics(out_dir: str | Path, metrics: dict, confusion: dict | None = None) -> Path:
    """``metrics.json``, ``summary.txt`` and, with a confusion matrix, its ``.json`` and ``.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "summary.txt").write_text(summary_text(metrics), encoding="utf-8")
    if confusion is not None:
        (out / "confusion_matrix.json").write_text(json.dumps(confusion, indent=2) + "\n", encoding="utf-8")
        plot_confusion(out / "confusion_matrix.png", confusion)
    return out
