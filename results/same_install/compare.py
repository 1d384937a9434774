"""The tables of notes.md: each run's val curve, the full method against scratch at each eps on best
val AP, and on test for the default eps once its checkpoints are evaluated, paired by seed with the
study report's own code (aggregate, markdown_table: mean, 95 % t-interval, wins).

    python results/same_install/compare.py outputs > results/same_install/comparison.md

Run from the clone the runs ran in: OUTPUTS/bn_eps holds the scratch runs of seeds 0-3,
OUTPUTS/same_install the others, each best checkpoint's test evaluation in its eval_test/ folder."""

import json
import sys
from pathlib import Path

from evcmae.pretrain.reporting import read_csv_log
from evcmae.tools.study import latest_csv
from evcmae.tools.study_report import (
    METRIC_KEYS,
    aggregate,
    best_validation,
    markdown_table,
    summary_rows,
    val_curves,
)

PREREGISTERED_SEEDS = (0, 1, 2, 3)
SEEDS = (0, 1, 2, 3, 4, 5)  # 4 and 5 added after the four-seed result (notes.md)
EPS = ("1e-5", "1e-3")
VALIDATIONS = 4  # a 600-step run validated every 150 steps; fewer means it has not finished
# Scratch seeds 0-3 are results/bn_eps's runs; seeds 4 and 5 were run here.
RUNS = {"scratch": "{folder}/scratch-eps{eps}-seed{seed}", "pretrained": "same_install/full-eps{eps}-seed{seed}"}


def run_dirs(root: Path, eps: str):
    """(condition, seed, run folder) of every run made at ``eps``."""
    for condition, pattern in RUNS.items():
        for seed in SEEDS:
            folder = "bn_eps" if seed in PREREGISTERED_SEEDS else "same_install"
            run_dir = root / pattern.format(folder=folder, eps=eps, seed=seed)
            if run_dir.is_dir():
                yield condition, seed, run_dir


def val_curve(run_dir: Path) -> tuple[list[int], dict[str, list]] | None:
    """(steps, metric -> values) of the run's validations, None before it has run all of them."""
    csv = latest_csv(run_dir)
    rows = val_curves([{"series": read_csv_log(csv)}], METRIC_KEYS) if csv else []
    if not rows or len(rows[0]["step"]) < VALIDATIONS:
        return None
    return rows[0]["step"], {m: rows[0][m] for m in METRIC_KEYS if m in rows[0]}


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def main(root: Path) -> None:
    print("| run | val AP at each validation (step: AP) | best val AP | class-agnostic at best |")
    print("|---|---|---:|---:|")
    val_rows: dict[str, list[dict]] = {eps: [] for eps in EPS}
    for eps in EPS:
        for condition, seed, run_dir in run_dirs(root, eps):
            curve = val_curve(run_dir)
            if curve is None:
                print(f"| {run_dir.name} | not finished | | |")
                continue
            steps, metrics = curve
            best = best_validation(steps, metrics)
            points = " / ".join(f"{s}: {pct(v)}" for s, v in zip(steps, metrics["AP"], strict=True))
            print(f"| {run_dir.name} | {points} | {pct(best['AP'])} | {pct(best.get('AP_class_agnostic'))} |")
            run = {"condition": condition, "label_fraction": 0.1, "seed": seed, "metrics": best}
            val_rows[eps] += [{**row, "split": "val"} for row in summary_rows([run])]
    for eps in EPS:
        tables(f"eps {eps}: best val AP, the full method (`pretrained`) against scratch, paired by seed", val_rows[eps])
    tested = []
    for condition, seed, run_dir in run_dirs(root, EPS[0]):
        metrics = run_dir / "eval_test" / "metrics.json"
        if metrics.is_file():
            tested.append(
                {
                    "condition": condition,
                    "label_fraction": 0.1,
                    "seed": seed,
                    "metrics": json.loads(metrics.read_text()),
                }
            )
    if tested:
        tables(f"eps {EPS[0]}: test AP at each run's best-val checkpoint, tested once", summary_rows(tested))


def tables(title: str, rows: list[dict]) -> None:
    """The pre-registered seeds' pairing, then every seed's where more were run."""
    first = [r for r in rows if r["seed"] in PREREGISTERED_SEEDS]
    print(f"\n### {title}\n")
    print(markdown_table(aggregate(first)))
    if len(first) < len(rows):
        print(f"\n### {title}, seeds {', '.join(map(str, sorted({r['seed'] for r in rows})))}\n")
        print(markdown_table(aggregate(rows)))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs"))
