"""Pair results/abl_fc's no_frame_contrastive runs with results/t600's scratch and full-method runs.

This session's machine no longer held results/t600's run folders, so the study could not share them
through work_dir; their test rows and val curves are in results/t600's summary.json and
val_curves.json. Same seeds, labelled subsets, recipe and schedule, so this pairs them by seed with
the report's own code (tools/study_report.py): the ablation table (full method minus the variant)
and the comparison with scratch, on test AP and on best val AP.

    python results/abl_fc/pair_with_t600.py > results/abl_fc/paired_with_t600.md
"""

import json
from pathlib import Path

from evcmae.tools.study_report import (
    VAL_CURVE_METRICS,
    ablation_groups,
    ablation_table,
    aggregate,
    best_validation,
    markdown_table,
)

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parent / "t600"
VARIANT = "no_frame_contrastive"


def rows(folder: Path, conditions: set[str]) -> list[dict]:
    return [r for r in json.loads((folder / "summary.json").read_text()) if r["condition"] in conditions]


def best_val_rows(folder: Path, conditions: set[str]) -> list[dict]:
    """Each run's best val AP (the value its checkpoint was chosen by) and the other metrics
    val_curves.json keeps at that validation, as rows the pairing code reads."""
    out = []
    for curve in json.loads((folder / "val_curves.json").read_text()):
        if curve["condition"] not in conditions:
            continue
        best = best_validation(curve["step"], {m: curve[m] for m in VAL_CURVE_METRICS})
        out.append(
            {
                **{k: curve[k] for k in ("protocol", "condition", "label_fraction", "seed", "repeat")},
                "split": "val",
                **{m: best[m] for m in VAL_CURVE_METRICS},
            }
        )
    return out


def section(title: str, table_rows: list[dict], value: str) -> str:
    text = "\n".join(
        [
            f"## {title}",
            "",
            "Against scratch (reference rows from results/t600):",
            "",
            markdown_table(aggregate(table_rows)),
            "",
            ablation_table(ablation_groups(table_rows)),
        ]
    )
    # The ablation table's own wording names test AP and the study's ablation.json, not written here.
    return text.replace("test AP", value).replace(" (ablation.json)", "")


def main() -> None:
    reference = {"scratch", "pretrained"}
    test = [r for r in rows(REFERENCE, reference) + rows(HERE, {VARIANT}) if r["split"] == "test"]
    val = best_val_rows(REFERENCE, reference) + best_val_rows(HERE, {VARIANT})
    print(section("Test (each run's best-val checkpoint, tested once)", test, "test AP"))
    print()
    print(section("Val (best val AP, the value each checkpoint was chosen by)", val, "best val AP"))


if __name__ == "__main__":
    main()
