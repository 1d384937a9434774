"""Compare evaluated runs against a baseline: overall, per size and per class AP.

A run is an experiment record folder (see ``finetune.records``) or any folder or file holding a
``metrics.json`` written by ``finetune.evaluation``. Tables show percent with two decimals and
the difference from the baseline in brackets, computed from the shown (rounded) values so the
table adds up; ``--json`` output keeps the unrounded fractions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from evcmae.pretrain.reporting import MISSING, markdown_table

SECTIONS = {
    "overall": ("AP", "AP50", "AP75", "AP_class_agnostic"),
    "size": ("AP_S", "AP_M", "AP_L"),
}
TITLES = {"overall": "Overall", "size": "By object size", "class": "Per class"}
HEADERS = {"AP_class_agnostic": "AP class-agnostic", "AP_S": "AP small", "AP_M": "AP medium", "AP_L": "AP large"}


@dataclass
class Run:
    name: str
    path: Path
    metrics: dict
    hypothesis: str | None = None


def load_run(path: str | os.PathLike) -> Run:
    path = Path(path)
    metrics_file = path if path.is_file() else path / "metrics.json"
    if not metrics_file.exists():
        raise FileNotFoundError(f"no metrics.json for run {path}")
    folder = metrics_file.parent
    hypothesis_file = folder / "hypothesis.txt"
    hypothesis = hypothesis_file.read_text(encoding="utf-8").strip() if hypothesis_file.exists() else None
    return Run(folder.name or str(folder), folder, json.loads(metrics_file.read_text(encoding="utf-8")), hypothesis)


def _values(metrics: dict, section: str) -> dict:
    if section == "class":
        return dict(metrics.get("AP_per_class") or {})
    return {key: metrics.get(key) for key in SECTIONS[section]}


def _pct(value) -> float | None:
    return None if value is None else round(100.0 * float(value), 2)


def compare(runs: Sequence[Run], baseline: Run | None = None) -> dict:
    """Values and differences to the baseline (default: the first run), per section.

    The baseline comes first; class columns are all classes any run reports, baseline's order
    first. A value or difference is None where a run has no value (e.g. a class with no GT)."""
    runs = list(runs)
    if baseline is None:
        baseline = runs[0]
    runs = [baseline] + [r for r in runs if r.path.resolve() != baseline.path.resolve()]
    _unique_names(runs)
    out = {
        "baseline": baseline.name,
        "runs": [r.name for r in runs],
        "hypotheses": {r.name: r.hypothesis for r in runs if r.hypothesis},
        "sections": {},
    }
    for section in (*SECTIONS, "class"):
        columns = list(dict.fromkeys(k for r in runs for k in _values(r.metrics, section)))
        base = _values(baseline.metrics, section)
        rows = {}
        for run in runs:
            values = _values(run.metrics, section)
            rows[run.name] = {}
            for col in columns:
                v, b = values.get(col), base.get(col)
                delta = None if v is None or b is None or run is baseline else float(v) - float(b)
                rows[run.name][col] = {"value": v, "delta": delta}
        out["sections"][section] = {"columns": columns, "rows": rows}
    return out


def _unique_names(runs: Sequence[Run]) -> None:
    """Two runs with the same folder name (from different roots) are told apart by their path."""
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in runs:
        if seen[r.name] > 1:
            r.name = str(r.path)


def _cell(value, base_value, is_baseline: bool) -> str:
    v = _pct(value)
    if v is None:
        return MISSING
    b = _pct(base_value)
    if is_baseline or b is None:
        return f"{v:.2f}"
    delta = round(v - b, 2) + 0.0  # + 0.0 turns -0.0 into 0.0
    return f"{v:.2f} ({delta:+.2f})"


def markdown(comparison: dict) -> str:
    base = comparison["baseline"]
    lines = [
        f"Baseline: `{base}`. COCO AP (Prophesee protocol) in percent; (±x) = difference "
        f"from the baseline; {MISSING} = no value (e.g. a class without ground truth). "
        "AP is averaged over classes, AP class-agnostic merges them."
    ]
    for section, table in comparison["sections"].items():
        columns = table["columns"]
        if not columns:
            continue
        base_row = table["rows"][base]
        rows = [
            [f"{name} (baseline)" if name == base else name]
            + [_cell(row[c]["value"], base_row[c]["value"], name == base) for c in columns]
            for name, row in table["rows"].items()
        ]
        header = ["run", *(HEADERS.get(c, c) for c in columns)]
        lines += ["", f"### {TITLES[section]}", "", markdown_table(header, rows, "lr").rstrip("\n")]
    if comparison.get("hypotheses"):
        lines += ["", "Hypotheses:"] + [f"- `{n}`: {' '.join(h.split())}" for n, h in comparison["hypotheses"].items()]
    return "\n".join(lines) + "\n"
