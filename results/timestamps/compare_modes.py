"""The two ways of taking 10 % of the labels, side by side at the default length (900 fine-tuning
steps, the same 600-step recipe of pretraining): whole recordings, streamed (results/fix/, seeds 0,
3, 4, 5) and with mixed sampling (results/recordings_mixed/, the same seeds and so the same
recording pairs), and thinned label times with mixed sampling (this folder, seeds 0-3). For each:
scratch's spread across its seeds, and the paired pretrained - scratch difference over the seeds
that have both, on val (best val AP, the checkpoint each run chose) and on test. The study's rule
is to keep the mode with the smaller spread, read on val.

    python results/timestamps/compare_modes.py
"""

import statistics
from pathlib import Path

from evcmae.tools.study_report import ci95, signed_text

HERE = Path(__file__).resolve().parent
MODES = {
    "recordings, stream sampling": HERE.parent / "fix" / "README.md",
    "recordings, mixed sampling": HERE.parent / "recordings_mixed" / "README.md",
    "timestamps, mixed sampling": HERE / "README.md",
}
COLUMNS = ("protocol", "condition", "labels", "seed", "recordings", "step", "val", "test", "test_agnostic", "minutes")


def runs(readme: Path) -> dict[tuple[str, int], dict[str, float]]:
    """(condition, seed) -> best val AP, test AP and test class-agnostic AP (%), from the report's
    fine-tuning runs table (10 % labels, fine-tuned)."""
    found = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(COLUMNS) or cells[0] != "finetune" or cells[2] != "10 %":
            continue
        row = dict(zip(COLUMNS, cells, strict=True))
        found[(row["condition"], int(row["seed"]))] = {k: float(row[k]) for k in ("val", "test", "test_agnostic")}
    if not found:
        raise SystemExit(f"{readme}: no fine-tuning runs at 10 % labels in its runs table")
    return found


def mode_summary(name: str, table: dict) -> list[str]:
    scratch_seeds = sorted(s for c, s in table if c == "scratch")
    seeds = [s for s in scratch_seeds if ("pretrained", s) in table]
    lines = [f"{name}: scratch at seeds {scratch_seeds}, pretrained - scratch at {seeds}"]
    for key, label in (("val", "best val AP"), ("test", "test AP"), ("test_agnostic", "test class-agnostic AP")):
        scratch = [table[("scratch", s)][key] for s in scratch_seeds]
        deltas = [table[("pretrained", s)][key] - table[("scratch", s)][key] for s in seeds]
        low, high = ci95(deltas)
        wins = sum(d > 0 for d in deltas)
        lines.append(
            f"  {label}: scratch {statistics.mean(scratch):.2f} +- {statistics.stdev(scratch):.2f} "
            f"(coefficient of variation {statistics.stdev(scratch) / statistics.mean(scratch):.2f}); "
            f"pretrained - scratch {signed_text(statistics.mean(deltas))} +- {statistics.stdev(deltas):.2f} "
            f"[{signed_text(low)}, {signed_text(high)}], {wins}/{len(seeds)} wins"
        )
    return lines


if __name__ == "__main__":
    for mode, readme in MODES.items():
        print("\n".join(mode_summary(mode, runs(readme))))
