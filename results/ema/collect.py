"""Val AP of the weight-EMA pilot runs, live and averaged, every validation (results/ema/README.md).

Each run was fine-tuned with ``callbacks.weight_ema.horizon=0.1`` and ``callbacks.validations.keep=true``:
its logged ``val/*`` are the EMA's, and its ``step=N.ckpt`` files hold the live weights, each
scored on val by ``evcmae-evaluate checkpoint=.../step=N.ckpt split=val out=LIVE/<run>-<N>``.
The live weights follow the trajectory the run would have taken without the EMA (the average
only reads them), so each run compares the two on one training trajectory.

    python results/ema/collect.py outputs/ema > results/ema/val_curves.json
"""

import json
import statistics
import sys
from pathlib import Path

from evcmae.pretrain.reporting import read_csv_log
from evcmae.tools.study import latest_csv

STEPS = (150, 300, 450, 600, 750, 900)


def curves(run: Path, live_root: Path) -> dict:
    logged = read_csv_log(latest_csv(run))
    (steps, ap), (_, agnostic) = logged["val/AP"], logged["val/AP_class_agnostic"]
    ema = {step + 1: (100 * a, 100 * c) for step, a, c in zip(steps, ap, agnostic)}
    live = {}
    for n in STEPS:
        scored = live_root / f"{run.name}-{n}" / "metrics.json"
        if scored.is_file():
            m = json.loads(scored.read_text())
            m = m.get("metrics", m)
            live[n] = (100 * m["AP"], 100 * m["AP_class_agnostic"])
    out = {"run": run.name}
    for kind, values in (("live", live), ("ema", ema)):
        ap = [values[n][0] if n in values else None for n in STEPS]
        agnostic = [values[n][1] if n in values else None for n in STEPS]
        done = [(a, n) for a, n in zip(ap, STEPS) if a is not None]
        best_ap, best_step = max(done) if done else (None, None)
        out[kind] = {
            "val_AP": ap,
            "val_AP_class_agnostic": agnostic,
            "best_val_AP": best_ap,
            "best_step": best_step,
            "best_val_AP_class_agnostic": agnostic[STEPS.index(best_step)] if done else None,
        }
    return out


def main(root: str) -> None:
    root = Path(root)
    runs = [
        curves(r, root / "live") for r in sorted(root.glob("scratch-*")) if any(r.glob("csv/version_*/metrics.csv"))
    ]
    summary = {}
    for kind in ("live", "ema"):
        best = [r[kind]["best_val_AP"] for r in runs if r[kind]["best_val_AP"] is not None]
        summary[kind] = {
            "best_val_AP_mean": statistics.mean(best) if best else None,
            "best_val_AP_sd": statistics.stdev(best) if len(best) > 1 else None,
            "runs": len(best),
        }
    json.dump({"steps": STEPS, "runs": runs, "across_runs": summary}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/ema")
