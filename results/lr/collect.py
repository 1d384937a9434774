"""Val AP of the fine-tuning-noise pilot runs, every validation (results/lr/README.md).

Run folders under ROOT, all scratch at 10 % labels on one labelled pair:

- ``scratch-lr<LR>-seed<S>``: peak learning rate LR, training seed S;
- ``scratch-warmup<W>-seed<S>``: lr 2e-3 with OneCycle's warm-up over a share W of the steps;
- ``scratch-init<A>-data<B>``: lr 2e-3, the detector initialised from seed A (``seed``), the
  training stream's order and augmentation drawn from seed B (``data.seed``);
- ``scratch-epochfix-seed<S>``: lr 2e-3 at commit 7d85112, where each epoch draws its own chunks
  and augmentation (every run above replayed its first epoch's draw all run long).

Each run's CSV log holds the val AP of each validation. The reference (lr 2e-3, warm-up 0.005,
init and data from one seed) is the live weights of the weight-EMA pilot's four runs on the same
pair (``results/ema/val_curves.json``): the EMA only read those weights, so they are the
trajectory a plain run takes. ``ROOT/precise_bn/<run>-val/metrics.json``, where present, is the
run's final weights scored on val after ``precise_bn.py`` re-estimated their BatchNorm statistics.

    python results/lr/collect.py outputs/lr > results/lr/val_curves.json
"""

import json
import re
import statistics
import sys
from pathlib import Path

from evcmae.pretrain.reporting import read_csv_log
from evcmae.tools.study import latest_csv

STEPS = (150, 300, 450, 600, 750, 900)
REFERENCE = Path(__file__).resolve().parents[1] / "ema" / "val_curves.json"
REFERENCE_SETTING = "lr 0.002, warm-up 0.005"
SETTINGS = (
    (re.compile(r"scratch-lr([0-9.e-]+)-seed(?P<seed>\d+)"), lambda m: f"lr {m[1]}, warm-up 0.005"),
    (re.compile(r"scratch-warmup([0-9.e-]+)-seed(?P<seed>\d+)"), lambda m: f"lr 0.002, warm-up {m[1]}"),
    (re.compile(r"scratch-epochfix-seed(?P<seed>\d+)"), lambda m: "lr 0.002, warm-up 0.005, each epoch its own draw"),
)
SWAPPED = re.compile(r"scratch-init(\d+)-data(\d+)")


def logged_curve(run: Path) -> dict:
    logged = read_csv_log(latest_csv(run))
    (steps, ap), (_, agnostic) = logged.get("val/AP", ((), ())), logged.get("val/AP_class_agnostic", ((), ()))
    by_step = {step + 1: (100 * a, 100 * c) for step, a, c in zip(steps, ap, agnostic)}
    return {
        "val_AP": [by_step[n][0] if n in by_step else None for n in STEPS],
        "val_AP_class_agnostic": [by_step[n][1] if n in by_step else None for n in STEPS],
    }


def with_best(values: dict) -> dict:
    done = [(a, n) for a, n in zip(values["val_AP"], STEPS) if a is not None]
    best_ap, best_step = max(done) if done else (None, None)
    return {
        **values,
        "best_val_AP": best_ap,
        "best_step": best_step,
        "best_val_AP_class_agnostic": values["val_AP_class_agnostic"][STEPS.index(best_step)] if done else None,
    }


def across(runs: list[dict]) -> dict:
    out = {"runs": sum(r["best_val_AP"] is not None for r in runs)}
    for key in ("best_val_AP", "best_val_AP_class_agnostic"):
        values = [r[key] for r in runs if r[key] is not None]
        out[f"{key}_mean"] = statistics.mean(values) if values else None
        out[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    return out


def main(root: str) -> None:
    settings: dict[str, list[dict]] = {REFERENCE_SETTING: []}
    for r in json.loads(REFERENCE.read_text())["runs"]:
        live = {k: r["live"][k] for k in ("val_AP", "val_AP_class_agnostic")}
        seed = int(r["run"].rsplit("seed", 1)[1])
        settings[REFERENCE_SETTING].append({"run": f"results/ema {r['run']} (live)", "seed": seed, **with_best(live)})
    swapped = []
    for run in sorted(Path(root).iterdir()):
        if not any(run.glob("csv/version_*/metrics.csv")):
            continue
        for pattern, name in SETTINGS:
            if m := pattern.fullmatch(run.name):
                settings.setdefault(name(m), []).append(
                    {"run": run.name, "seed": int(m["seed"]), **with_best(logged_curve(run))}
                )
        if m := SWAPPED.fullmatch(run.name):
            swapped.append(
                {"run": run.name, "init_seed": int(m[1]), "data_seed": int(m[2]), **with_best(logged_curve(run))}
            )
    reference = {r["seed"]: r["val_AP"] for r in settings[REFERENCE_SETTING]}
    for row in swapped:  # stopped after step 450: compared with the reference at the same steps
        row["reference_val_AP"] = {
            "init_and_data_from_init_seed": reference.get(row["init_seed"]),
            "init_and_data_from_data_seed": reference.get(row["data_seed"]),
        }
    for runs in settings.values():
        for row in runs:
            rescored = Path(root) / "precise_bn" / f"{row['run']}-val" / "metrics.json"
            if rescored.is_file():
                metrics = json.loads(rescored.read_text())
                row["final_val_AP_with_reestimated_batchnorm"] = 100 * metrics["AP"]
    report = {
        name: {"runs": sorted(runs, key=lambda r: r["seed"]), "across_seeds": across(runs)}
        for name, runs in settings.items()
    }
    json.dump({"steps": STEPS, "by_setting": report, "init_against_data": swapped}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/lr")
