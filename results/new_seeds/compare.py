"""The tables of notes.md: each run's val curve; the full method against scratch on the fresh seeds
6-9 (the confirmatory result, test AP), then pooled with results/same_install's seeds 0-4, on val and
on test, paired by seed with the study report's own code (aggregate, markdown_table: mean, 95 %
t-interval, wins).

    python results/new_seeds/compare.py outputs > results/new_seeds/comparison.md

Run from the clone the runs ran in (OUTPUTS/new_seeds, OUTPUTS/same_install, OUTPUTS/bn_eps), each
best checkpoint's test evaluation in its run's eval_test/ folder."""

import json
import sys
from pathlib import Path

from evcmae.tools.study import latest_csv
from evcmae.tools.study_report import (
    METRIC_KEYS,
    aggregate,
    best_validation,
    markdown_table,
    read_logs,
    summary_rows,
    val_curves,
)

NEW_SEEDS = (6, 7, 8, 9)  # the pre-registered, confirmatory seeds
MORE_SEEDS = range(10, 14)  # run after them while time allowed (notes.md)
VALIDATIONS = 4  # a 600-step run validated every 150 steps; fewer means it did not finish


def run_dirs(root: Path):
    """(condition, seed, run folder): the new seeds, then results/same_install's default-eps pairing
    (its scratch seeds 0-3 are results/bn_eps's runs)."""
    for seed in (*NEW_SEEDS, *MORE_SEEDS):
        yield "scratch", seed, root / f"new_seeds/scratch-seed{seed}"
        yield "pretrained", seed, root / f"new_seeds/full-seed{seed}"
    for seed in range(5):
        yield "scratch", seed, root / ("bn_eps" if seed < 4 else "same_install") / f"scratch-eps1e-5-seed{seed}"
        yield "pretrained", seed, root / f"same_install/full-eps1e-5-seed{seed}"


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def main(root: Path) -> None:
    runs = [(c, s, d) for c, s, d in run_dirs(root) if d.is_dir()]
    logged = [
        {"condition": c, "label_fraction": 0.1, "seed": s, "csv": csv, "name": f"{d.parent.name}/{d.name}"}
        for c, s, d in runs
        if (csv := latest_csv(d)) is not None
    ]
    print("| run | val AP at each validation (step: AP) | best val AP | class-agnostic at best |")
    print("|---|---|---:|---:|")
    val = []
    for curve in read_logs(logged):
        rows = val_curves([curve], METRIC_KEYS)  # [] before the run's first validation
        if not rows or len(rows[0]["step"]) < VALIDATIONS:
            print(f"| {curve['name']} | not finished | | |")
            continue
        row = rows[0]
        best = best_validation(row["step"], {m: row[m] for m in METRIC_KEYS if m in row})
        points = " / ".join(f"{s}: {pct(v)}" for s, v in zip(row["step"], row["AP"], strict=True))
        print(f"| {curve['name']} | {points} | {pct(best['AP'])} | {pct(best.get('AP_class_agnostic'))} |")
        val.append({**curve, "metrics": best})
    finished = {(v["condition"], v["seed"]) for v in val}  # a stopped run's checkpoint is not tested here
    test = [
        {
            "condition": c,
            "label_fraction": 0.1,
            "seed": s,
            "metrics": json.loads((d / "eval_test/metrics.json").read_text()),
        }
        for c, s, d in runs
        if (c, s) in finished and (d / "eval_test/metrics.json").is_file()
    ]
    for split, done in (("test AP at each run's best-val checkpoint, tested once", test), ("best val AP", val)):
        rows = [{**r, "split": "test" if done is test else "val"} for r in summary_rows(done)]
        new = [r for r in rows if r["seed"] in NEW_SEEDS]
        print(f"\n### {split}: the full method (`pretrained`) against scratch, fresh seeds {list(NEW_SEEDS)}\n")
        print(markdown_table(aggregate(new)))
        print(f"\n### {split}: pooled with results/same_install's seeds 0-4\n")
        print(markdown_table(aggregate(rows)))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs"))
