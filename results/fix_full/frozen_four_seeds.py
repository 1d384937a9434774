"""The frozen-encoder protocol with the fine-tuning fix at four seeds: seeds 0 and 1 from
results/fix/, seeds 2 and 3 from results/fix_full/. The two reports pretrained with the same
command in different sessions (the first run's folder was lost), so the pretrained encoder is the
same recipe, not the same weights. Prints the study's own table for the pooled rows, and the
class-agnostic interval.

    python results/fix_full/frozen_four_seeds.py
"""

import json
from pathlib import Path

from evcmae.tools.study_report import aggregate, markdown_table, signed_text

HERE = Path(__file__).resolve().parent
SOURCES = {HERE.parent / "fix" / "summary.json": (0, 1), HERE / "summary.json": (2, 3)}


def frozen_rows() -> list[dict]:
    rows = []
    for path, seeds in SOURCES.items():
        taken = [r for r in json.loads(path.read_text()) if r["protocol"] == "frozen" and r["seed"] in seeds]
        found = sorted({r["seed"] for r in taken})
        if found != list(seeds):
            raise SystemExit(f"{path}: frozen rows for seeds {found}, expected {list(seeds)}")
        rows += taken
    return rows


if __name__ == "__main__":
    groups = aggregate(frozen_rows())
    print(markdown_table(groups))
    for g in groups:
        interval = g["delta_ci95"]["AP_class_agnostic"]
        if interval is not None:  # the table gives the AP interval only; the target is class-agnostic
            low, high = (signed_text(100 * v) for v in interval)  # the reports' own signs and minus
            print(f"{g['condition']}: class-agnostic AP difference 95 % CI [{low}, {high}]")
