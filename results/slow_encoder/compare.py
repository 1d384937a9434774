"""The tables of notes.md, in the order notes.md fixed: each run's val curve; on val, the slow
encoder's effect on each side and on the gap, and the rule for the study's recipe; with --test (read
once, after the val analysis is written down), the same pairings on test.

    python results/slow_encoder/compare.py outputs > results/slow_encoder/comparison.md
    python results/slow_encoder/compare.py outputs --test >> results/slow_encoder/comparison.md

Run from the clone the runs ran in: OUTPUTS/slow_encoder holds this report's runs (the encoder at
a tenth of the rate), OUTPUTS/new_seeds the full-rate runs of the same seeds and command."""

import json
import sys
from functools import cache
from pathlib import Path

from evcmae.pretrain.reporting import read_csv_log
from evcmae.tools.study import latest_csv
from evcmae.tools.study_report import METRIC_KEYS, best_validation, ci95, paired_difference, val_curves

SEEDS = (6, 7, 8, 9, 10)  # in the order they run; a seed not finished is left out (notes.md)
VALIDATIONS = 4  # a 600-step run validated every 150 steps; fewer means it did not finish
RECIPES = {"slow": "slow_encoder", "full-rate": "new_seeds"}
SIDES = {"pretrained": "full", "scratch": "scratch"}


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def signed(x) -> str:
    return "–" if x is None else f"{100 * x:+.2f}"


def interval(ci) -> str:
    return "–" if ci is None else f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"


@cache  # the val table and collect() ask for the same runs
def best_val(run: Path) -> tuple[dict | None, str]:
    """The run's best validation (AP and the rest) and its val curve as text; None if unfinished."""
    csv = latest_csv(run)
    rows = val_curves([{"series": read_csv_log(csv)}], METRIC_KEYS) if csv is not None else []
    if not rows or len(rows[0]["step"]) < VALIDATIONS:
        return None, "not finished"
    row = rows[0]
    points = " / ".join(f"{s}: {pct(v)}" for s, v in zip(row["step"], row["AP"], strict=True))
    return best_validation(row["step"], {m: row[m] for m in METRIC_KEYS if m in row}), points


def collect(root: Path, split: str) -> dict[tuple[str, str], dict[int, dict]]:
    """(recipe, side) -> seed -> metrics, for the seeds whose four runs all finished."""
    found: dict[tuple[str, str], dict[int, dict]] = {}
    for seed in SEEDS:
        runs = {
            (recipe, side): root / folder / f"{prefix}-seed{seed}"
            for recipe, folder in RECIPES.items()
            for side, prefix in SIDES.items()
        }
        metrics = {}
        for key, run in runs.items():
            val, _ = best_val(run)
            if val is None:
                break
            if split == "val":
                metrics[key] = val
            else:
                test = run / "eval_test/metrics.json"
                if not test.is_file():
                    break
                metrics[key] = json.loads(test.read_text())
        if len(metrics) == len(runs):
            for key, value in metrics.items():
                found.setdefault(key, {})[seed] = value
    return found


def pairing(name: str, own: dict[int, dict], base: dict[int, dict], seeds) -> str:
    own = {s: own[s] for s in seeds if s in own}
    paired = paired_difference(own, base)
    n = len(paired["seeds"])
    ap, agn = "AP", "AP_class_agnostic"
    return (
        f"| {name} | {n} | {signed(paired['delta'][ap])} | {interval(paired['delta_ci95'][ap])} | "
        f"{paired['wins']}/{n} | {signed(paired['delta'][agn])} | {interval(paired['delta_ci95'][agn])} |"
    )


def gap_change(runs: dict, seeds) -> str:
    """Per seed, (pretrained − scratch) under the slow recipe minus the same at the full rate."""
    changes = [
        (runs["slow", "pretrained"][s]["AP"] - runs["slow", "scratch"][s]["AP"])
        - (runs["full-rate", "pretrained"][s]["AP"] - runs["full-rate", "scratch"][s]["AP"])
        for s in seeds
    ]
    mean = sum(changes) / len(changes) if changes else None
    wins = sum(c > 0 for c in changes)
    per_seed = ", ".join(f"{s}: {signed(c)}" for s, c in zip(seeds, changes, strict=True))
    return (
        f"| gap (pretrained − scratch), slow − full-rate | {len(changes)} | {signed(mean)} | "
        f"{interval(ci95(changes))} | {wins}/{len(changes)} | per seed {per_seed} | |"
    )


HEADER = "| pairing | seeds | Δ AP | 95 % CI | wins | Δ class-agnostic | 95 % CI |\n|---|---:|---:|---|---:|---:|---|"


def main(root: Path, test: bool) -> None:
    if not test:
        print("| run | val AP at each validation (step: AP) | best val AP | class-agnostic at best |")
        print("|---|---|---:|---:|")
        for seed in SEEDS:
            for recipe, folder in RECIPES.items():
                for side, prefix in SIDES.items():
                    best, points = best_val(root / folder / f"{prefix}-seed{seed}")
                    ap = pct(best["AP"]) if best else ""
                    agn = pct(best.get("AP_class_agnostic")) if best else ""
                    print(f"| {recipe} {side} seed {seed} | {points} | {ap} | {agn} |")
    split = "test" if test else "val"
    runs = collect(root, split)
    seeds = sorted(runs.get(("slow", "pretrained"), {}))
    what = "test AP at each run's best-val checkpoint" if test else "best val AP"
    print(f"\n### {what}, seeds {seeds} (all four runs of each finished)\n")
    if not seeds:
        print("No seed has all four runs finished.")
        return
    print(HEADER)
    rows = [
        ("1. pretrained: slow − full-rate", ("slow", "pretrained"), ("full-rate", "pretrained")),
        ("1. scratch: slow − full-rate", ("slow", "scratch"), ("full-rate", "scratch")),
        ("2. slow: pretrained − scratch", ("slow", "pretrained"), ("slow", "scratch")),
        ("full-rate: pretrained − scratch", ("full-rate", "pretrained"), ("full-rate", "scratch")),
        ("pretrained slow − scratch full-rate", ("slow", "pretrained"), ("full-rate", "scratch")),
    ]
    for name, own, base in rows:
        print(pairing(name, runs[own], runs[base], seeds))
    print(gap_change(runs, seeds))
    if test:
        confirm = [s for s in seeds if s <= 9]
        print(f"\nSeeds 6-9 only ({confirm}):\n")
        print(HEADER)
        print(pairing("slow: pretrained − scratch", runs["slow", "pretrained"], runs["slow", "scratch"], confirm))
        return
    pre = paired_difference(runs["slow", "pretrained"], runs["full-rate", "pretrained"])
    scr = paired_difference(runs["slow", "scratch"], runs["full-rate", "scratch"])
    need = len(seeds) - 1 if len(seeds) < len(SEEDS) else 4
    adopt = pre["delta"]["AP"] > 0 and pre["wins"] >= need and scr["delta"]["AP"] > -0.01
    print(
        f"\nRule (notes.md): pretrained slow − full-rate mean {signed(pre['delta']['AP'])} (> 0 asked), "
        f"wins {pre['wins']}/{len(seeds)} (at least {need} asked); scratch slow − full-rate mean "
        f"{signed(scr['delta']['AP'])} (> −1.00 asked): "
        + ("adopt lr_scale 0.1 in the study's recipe." if adopt else "the study's recipe stays encoder_mode=full.")
    )


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--test"]
    main(Path(args[0] if args else "outputs"), "--test" in sys.argv[1:])
