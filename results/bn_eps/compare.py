"""The tables of notes.md: each run's val curve, and best val AP of eps 1e-3 against the default
eps, paired by seed, against the same-install baselines and against results/t600's recorded rows.

    python results/bn_eps/compare.py outputs/bn_eps      # from the directory the runs ran in

Uses the study report's own pairing (paired_difference: mean, 95 % t-interval, wins)."""

import glob
import json
import sys
from pathlib import Path

from evcmae.pretrain.reporting import read_csv_log
from evcmae.tools.study import latest_csv
from evcmae.tools.study_report import VAL_CURVE_METRICS, best_validation, paired_difference

T600 = Path(__file__).resolve().parent.parent / "t600" / "val_curves.json"


def val_curve(run_dir: Path) -> dict:
    """metric -> (steps, values) of the run's newest CSV log."""
    log = read_csv_log(latest_csv(run_dir))
    return {m: log.get(f"val/{m}", ([], [])) for m in VAL_CURVE_METRICS}


def best(curve: dict) -> dict:
    """The metrics at the validation with the highest AP (the checkpoint the run would keep)."""
    return best_validation(curve["AP"][0], {m: curve[m][1] for m in VAL_CURVE_METRICS})


def t600_scratch() -> dict[int, dict]:
    return {
        row["seed"]: best({m: (row["step"], row[m]) for m in VAL_CURVE_METRICS})
        for row in json.loads(T600.read_text())
        if row["condition"] == "scratch" and row["label_fraction"] == 0.1 and row["protocol"] == "finetune"
    }


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def pair_line(label: str, own: dict, base: dict) -> str:
    p = paired_difference(own, base)
    if not p["seeds"]:
        return f"| {label} | none yet | | | | |"
    ci = p["delta_ci95"]["AP"]
    interval = "–" if ci is None else f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"
    per_seed = ", ".join(f"{s}: {100 * (own[s]['AP'] - base[s]['AP']):+.2f}" for s in p["seeds"])
    return (
        f"| {label} | {', '.join(map(str, p['seeds']))} | {100 * p['delta']['AP']:+.2f} | {interval} | "
        f"{p['wins']}/{len(p['seeds'])} | {per_seed} |"
    )


def main(root: str) -> None:
    runs = {Path(d).name: val_curve(Path(d)) for d in sorted(glob.glob(f"{root}/*/")) if latest_csv(Path(d))}
    runs = {name: curve for name, curve in runs.items() if curve["AP"][1]}  # validated at least once
    print("| run | val AP at each validation (step: AP) | best val AP | class-agnostic at best |")
    print("|---|---|---:|---:|")
    for name, curve in runs.items():
        steps, ap = curve["AP"]
        b = best(curve)
        print(
            f"| {name} | {' / '.join(f'{s}: {pct(v)}' for s, v in zip(steps, ap))} | {pct(b['AP'])} | "
            f"{pct(b['AP_class_agnostic'])} |"
        )
    by_eps = {"1e-3": {}, "1e-5": {}}
    for name, curve in runs.items():
        if name.startswith("scratch-eps") and len(curve["AP"][1]) == 4:  # finished runs only
            eps, seed = name[len("scratch-eps") :].split("-seed")
            by_eps[eps][int(seed)] = best(curve)
    print()
    print("| best val AP, paired by seed | seeds | mean Δ | 95 % CI | wins | per seed |")
    print("|---|---|---:|---:|---:|---|")
    print(pair_line("eps 1e-3 − 1e-5, both run here", by_eps["1e-3"], by_eps["1e-5"]))
    recorded = t600_scratch()
    print(pair_line("eps 1e-3 here − 1e-5 in results/t600 (another install)", by_eps["1e-3"], recorded))
    print(pair_line("1e-5 here − 1e-5 in results/t600 (same command, another install)", by_eps["1e-5"], recorded))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/bn_eps")
