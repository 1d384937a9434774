"""Score every kept validation checkpoint of fine-tuning runs (``callbacks.validations.keep=true``),
and the averages of the last 2 and 3, on val and test: all 16 recordings of each split, and the
first 4, the split the studies before 2026-12-02 used. Reads and extends ``evaluations.json``
(run|checkpoint|split|recordings -> AP, AP50, AP_class_agnostic), then prints per run which
checkpoint each val split picks and how it scores on test.

    python results/selection/score_checkpoints.py results/selection/evaluations.json outputs/sel/*

Run from the repository root, with ``data/study`` generated, ``data/study_first4`` holding links
to the first 4 val and test recordings and ``data/study_val_last12`` to val recordings 5-16
(commands.sh makes both)."""

from __future__ import annotations

import copy
import csv
import json
import sys
from pathlib import Path

import torch

from evcmae.tools.evaluate import evaluate_checkpoint

# recordings -> (data.root, splits); None: the run's own. val 4-15, the 12 val recordings after the
# first 4, scores a choice made on the first 4 without reusing them.
SUBSETS = {
    "16": (None, ("val", "test")),
    "4": ("data/study_first4", ("val", "test")),
    "last12": ("data/study_val_last12", ("val",)),
}
METRICS = ("AP", "AP50", "AP_class_agnostic")


def average(paths: list[Path], dest: Path) -> None:
    """Mean of the floating-point tensors (weights and BatchNorm statistics) of ``paths``."""
    ckpts = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    out = copy.deepcopy(ckpts[-1])
    for key, value in out["state_dict"].items():
        if value.is_floating_point():
            out["state_dict"][key] = sum(c["state_dict"][key] for c in ckpts) / len(ckpts)
    torch.save(out, dest)


def candidates(run: Path) -> dict[str, Path]:
    steps = sorted(int(p.name[5:-5]) for p in (run / "checkpoints").glob("step=*.ckpt"))
    found = {f"step{s}": run / "checkpoints" / f"step={s}.ckpt" for s in steps}
    for k in (2, 3):
        dest = run / f"avg_last{k}.ckpt"
        if not dest.exists():
            average([found[f"step{s}"] for s in steps[-k:]], dest)
        found[f"avg_last{k}"] = dest
    return found


def logged_val(run: Path) -> dict[int, dict]:
    """val/* as training logged it (all 16 val recordings); evaluate_checkpoint reproduces it."""
    with open(next(run.glob("csv/version_*/metrics.csv"))) as f:
        return {int(r["step"]) + 1: r for r in csv.DictReader(f) if r.get("val/AP")}


def score(runs: list[Path], results: dict, save) -> None:
    torch.set_num_threads(1)
    for run in runs:
        logged = logged_val(run)
        for name, path in candidates(run).items():
            if name.startswith("step"):
                row = logged[int(name[4:])]
                results[f"{run.name}|{name}|val|16"] = {m: float(row[f"val/{m}"]) for m in METRICS}
            for split in ("val", "test"):
                for n, (root, splits) in SUBSETS.items():
                    key = f"{run.name}|{name}|{split}|{n}"
                    if key in results or split not in splits or (n == "last12" and not name.startswith("step")):
                        continue
                    data = {"root": root, "synth_preset": None} if root else {}
                    out = run / "scored" / f"{name}_{split}{n}"
                    metrics = evaluate_checkpoint(path, split=split, out=out, data_overrides=data)["metrics"]
                    results[key] = {m: float(metrics[m]) for m in METRICS}
                    save(results)


def report(results: dict) -> str:
    def ap(run, cand, split, n):
        value = results.get(f"{run}|{cand}|{split}|{n}")
        return None if value is None else 100 * value["AP"]

    def text(value):
        return "–" if value is None else f"{value:.2f}"

    columns = (("val", "4"), ("val", "last12"), ("val", "16"), ("test", "4"), ("test", "16"))
    lines = []
    for run in sorted({k.split("|")[0] for k in results}):
        cands = sorted({k.split("|")[1] for k in results if k.startswith(run + "|")})
        steps = sorted((c for c in cands if c.startswith("step")), key=lambda c: int(c[4:]))
        lines += [
            f"\n{run}",
            "| checkpoint | val 1-4 | val 5-16 | val 1-16 | test 1-4 | test 1-16 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for c in steps + [c for c in cands if not c.startswith("step")]:
            lines.append(f"| {c} | " + " | ".join(text(ap(run, c, s, n)) for s, n in columns) + " |")
        for n in ("4", "16"):
            best = max(steps, key=lambda c: ap(run, c, "val", n))
            scores = f"test 1-4 {text(ap(run, best, 'test', '4'))}, test 1-16 {text(ap(run, best, 'test', '16'))}"
            if n == "4":
                scores += f", val 5-16 {text(ap(run, best, 'val', 'last12'))}"
            lines.append(f"best on val 1-{n}: {best}, {scores}")
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1])
    results = json.loads(path.read_text()) if path.exists() else {}

    def save(r):
        path.write_text(json.dumps(dict(sorted(r.items())), indent=1) + "\n")

    score([Path(p) for p in sys.argv[2:]], results, save)
    save(results)
    print(report(results))


if __name__ == "__main__":
    main()
