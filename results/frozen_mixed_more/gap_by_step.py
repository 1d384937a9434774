"""The frozen protocol's pretrained - untrained gap at every validation, over the ten pairs of
teachers B-E: B's four seeds (this folder) and C, D, E at seeds 4 and 5 (results/frozen_pt1-3),
each against this folder's untrained-frozen run at the same seed. Val AP in %, mean over pairs, and
how many pairs the pretrained detector led. Read from each report's val_curves.json.

    python results/frozen_mixed_more/gap_by_step.py
"""

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEACHERS = {
    "B": HERE,
    "C": HERE.parent / "frozen_pt1",
    "D": HERE.parent / "frozen_pt2",
    "E": HERE.parent / "frozen_pt3",
}
METRICS = {"AP": "val AP", "AP_class_agnostic": "val class-agnostic AP"}


def frozen_curves(folder: Path, condition: str) -> dict[int, dict]:
    """seed -> {step: {metric: %}} of the report's frozen runs of ``condition``."""
    path = folder / "val_curves.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing (the study writes it from 2026-12-05; rerun the study's command)")
    found = {}
    for row in json.loads(path.read_text(encoding="utf-8")):
        if row["protocol"] == "frozen" and row["condition"] == condition and row.get("repeat", 0) == 0:
            found[row["seed"]] = {
                step: {m: 100 * row[m][i] for m in METRICS if row[m][i] is not None}
                for i, step in enumerate(row["step"])
            }
    return found


def pairs() -> list[tuple[str, int, dict, dict]]:
    untrained = frozen_curves(HERE, "untrained")
    found = []
    for teacher, folder in TEACHERS.items():
        for seed, curve in sorted(frozen_curves(folder, "pretrained").items()):
            if seed not in untrained:
                raise SystemExit(f"{folder}: seed {seed} has no untrained-frozen run in {HERE}")
            found.append((teacher, seed, curve, untrained[seed]))
    return found


if __name__ == "__main__":
    found = pairs()
    steps = sorted(set.intersection(*(set(p) & set(u) for _, _, p, u in found)))
    print(f"{len(found)} pairs: " + ", ".join(f"{t} seed {s}" for t, s, _, _ in found))
    header = "| step |"
    for label in METRICS.values():
        header += f" {label}: untrained / pretrained | Δ | wins |"
    print(header)
    print("|---:|" + "---:|---:|---:|" * len(METRICS))
    for step in steps:
        cells = [f"| {step + 1} |"]  # Lightning logs the step index; step + 1 steps have been taken
        for metric in METRICS:
            gaps = [p[step][metric] - u[step][metric] for _, _, p, u in found]
            unt = statistics.mean(u[step][metric] for _, _, _, u in found)
            pre = statistics.mean(p[step][metric] for _, _, p, _ in found)
            wins = sum(g > 0 for g in gaps)
            cells.append(f" {unt:.1f} / {pre:.1f} | {statistics.mean(gaps):+.2f} | {wins}/{len(gaps)} |")
        print("".join(cells))
