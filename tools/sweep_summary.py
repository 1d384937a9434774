"""evcmae-sweep-summary DIR: one table comparing the runs of a sweep (or any folder of runs).

    evcmae-sweep-summary outputs/multiruns/2025-01-01_12-00-00

Every folder under DIR holding ``.hydra/overrides.yaml`` is a run. Its row shows the overrides
that differ between runs (those shared by all are listed once above the table) and its final
metrics: ``final_metrics.json`` where the run wrote one, else the last logged value of each column
of its CSV log. Writes DIR/summary.md, DIR/summary.csv and DIR/summary.png and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

import yaml

from evcmae.pretrain import reporting
from evcmae.tools.cli import entry

LOSS_TERMS = ("train/occupancy", "train/reconstruction", "train/voxel_nce", "train/frame_contrastive")
METRICS = ("probe/knn_acc", "probe/majority_acc", "train/total", *LOSS_TERMS, "global_step")


def _natural(path: Path):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(path))]


def find_runs(root: Path) -> list[Path]:
    return sorted((p.parent.parent for p in root.rglob(".hydra/overrides.yaml")), key=_natural)


def read_overrides(run: Path) -> dict[str, str]:
    items = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_metrics(run: Path) -> dict[str, float]:
    final = run / "final_metrics.json"
    if final.exists():
        data = json.loads(final.read_text())
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and v is not None}
    metrics = {}
    for log in sorted(run.rglob("metrics.csv")):
        with open(log, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                for key, text in row.items():
                    value = _number(text)
                    if value is not None:
                        metrics[key] = value  # rows are in time order: the last one wins
    if "step" in metrics:
        metrics.setdefault("global_step", metrics.pop("step"))
    return metrics


def summarise(root: Path):
    """-> (rows, varying override keys, constant overrides, metric columns)."""
    runs = find_runs(root)
    if not runs:
        raise FileNotFoundError(f"no runs (folders with .hydra/overrides.yaml) under {root}")
    rows = [
        {"run": str(r.relative_to(root)) or ".", "overrides": read_overrides(r), "metrics": read_metrics(r)}
        for r in runs
    ]
    keys = list(dict.fromkeys(k for r in rows for k in r["overrides"]))
    varying = [k for k in keys if len({r["overrides"].get(k) for r in rows}) > 1]
    constant = {k: rows[0]["overrides"][k] for k in keys if k not in varying}
    present = [m for m in METRICS if any(m in r["metrics"] for r in rows)]
    return rows, varying, constant, present


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{int(value)}" if value.is_integer() else f"{value:.4f}"
    return str(value)


def markdown(rows, varying, constant, metrics) -> str:
    lines = []
    if constant:
        lines.append("Shared by all runs: " + ", ".join(f"`{k}={v}`" for k, v in constant.items()) + "\n")
    cells = [
        [r["run"], *(r["overrides"].get(k, "–") for k in varying), *(_fmt(r["metrics"].get(m)) for m in metrics)]
        for r in rows
    ]
    align = "l" * (1 + len(varying)) + "r" * len(metrics)
    lines.append(reporting.markdown_table(["run", *varying, *metrics], cells, align))
    return "\n".join(lines)


def write_csv(path: Path, rows, metrics) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r["overrides"]))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["run", *keys, *metrics])
        for r in rows:
            writer.writerow(
                [
                    r["run"],
                    *(r["overrides"].get(k, "") for k in keys),
                    *("" if r["metrics"].get(m) is None else r["metrics"][m] for m in metrics),
                ]
            )


def plot(path: Path, rows, varying, metrics) -> None:
    """Probe accuracy and the loss terms per run; against the swept value when a single numeric
    override varies (a λ sweep reads as a curve), as bars otherwise."""
    numeric = len(varying) == 1 and all(_number(r["overrides"].get(varying[0])) is not None for r in rows)
    if numeric:
        x = [_number(r["overrides"][varying[0]]) for r in rows]
        order = sorted(range(len(rows)), key=lambda i: x[i])
        xs, xlabel = [x[i] for i in order], varying[0]
    else:
        order = list(range(len(rows)))
        xs = list(range(len(rows)))
        xlabel = "run"
    labels = [", ".join(f"{k}={rows[i]['overrides'].get(k, '–')}" for k in varying) or rows[i]["run"] for i in order]
    fig, axes = reporting.new_figure(2, (12, 4.5))
    series = [("probe/knn_acc", axes[0])] + [(m, axes[1]) for m in LOSS_TERMS + ("train/total",)]
    for metric, ax in series:
        if metric not in metrics:
            continue
        ys = [rows[i]["metrics"].get(metric, float("nan")) for i in order]
        ax.plot(xs, ys, marker="o", label=metric.split("/")[-1])
    axes[0].set_title("k-NN probe accuracy (teacher)")
    axes[1].set_title("final training losses")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if not numeric:
            ax.set_xticks(xs)
            ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    reporting.save_figure(fig, path)


@entry("evcmae-sweep-summary")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="evcmae-sweep-summary", description=__doc__.strip().splitlines()[0])
    parser.add_argument("dir", type=Path, help="a sweep folder (outputs/multiruns/<time>) or any folder of runs")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: DIR)")
    args = parser.parse_args(argv)
    try:
        rows, varying, constant, metrics = summarise(args.dir)
    except FileNotFoundError as exc:
        print(f"evcmae-sweep-summary: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.dir
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, varying, constant, metrics)
    (out / "summary.md").write_text(table, encoding="utf-8")
    write_csv(out / "summary.csv", rows, metrics)
    plot(out / "summary.png", rows, varying, metrics)
    print(table)
    print(f"{len(rows)} runs; wrote {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'summary.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
