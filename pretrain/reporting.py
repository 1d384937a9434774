"""Report writing, one home for every table and plot the project writes: Markdown and fixed-width
tables, a run's CSV log as curves, and matplotlib figures saved the same way everywhere.

Users: the pretraining and fine-tuning callbacks (``pretrain.watch``), evaluation summaries
(``finetune.report``), run comparisons (``finetune.compare``) and the study and sweep reports
(``tools/``). It sits in ``pretrain/`` because that is the lowest layer all of them may import:
fine-tuning imports pretraining (the exported backbone), never the other way round. Nothing here
knows about events, networks or losses.

Figures are built with ``matplotlib.figure.Figure``, never ``pyplot``: no global figure state, so
plotting from a callback, a worker or a test leaks nothing and needs no display.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

MISSING = "–"


# -- tables -------------------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str = "") -> str:
    """A GitHub Markdown table, newline-terminated. ``align`` has one letter per column, ``l`` or
    ``r`` (missing letters repeat the last one given, ``l`` when none is). Cells are ``str()``-ed."""
    kinds = _alignments(align, len(header))
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"table row {i} has {len(row)} cells for {len(header)} columns")
    lines = [_markdown_row(header), "|" + "".join("---:|" if k == "r" else "---|" for k in kinds)]
    lines += [_markdown_row(row) for row in rows]
    return "\n".join(lines) + "\n"


def text_table(header: Sequence[str], rows: Sequence[Sequence], widths: Sequence[int], align: str = "") -> str:
    """A fixed-width plain-text table (for ``summary.txt`` files read in a terminal), no trailing
    newline. Each column is padded to its width, left or right as ``align`` says."""
    kinds = _alignments(align, len(header))

    def line(cells) -> str:
        return "".join(
            f"{str(c):>{w}}" if k == "r" else f"{str(c):<{w}}" for c, w, k in zip(cells, widths, kinds)
        ).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def _alignments(align: str, n: int) -> str:
    if set(align) - {"l", "r"}:
        raise ValueError(f"alignment letters must be 'l' or 'r', got {align!r}")
    align = align or "l"
    return (align + align[-1] * n)[:n]


def _markdown_row(cells) -> str:
    # A "|" inside a cell would end it early.
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


# -- a run's CSV log ----------------------------------------------------------------------------
def read_csv_log(path) -> dict[str, tuple[list[int], list[float]]]:
    """Every numeric column of a Lightning ``CSVLogger`` ``metrics.csv`` as (steps, values), in
    file order, skipping empty and non-finite cells (each row holds only what was logged then)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = _number(row.get("step"))
            if step is None:
                continue
            for column, text in row.items():
                value = _number(text)
                if column in ("step", "epoch") or value is None:
                    continue
                steps, values = series.setdefault(column, ([], []))
                steps.append(int(step))
                values.append(value)
    return series


def _number(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# -- figures ------------------------------------------------------------------------------------
def new_figure(ncols: int = 1, figsize: tuple[float, float] = (6.0, 4.0)):
    """(figure, list of ``ncols`` axes) without pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Lay out and write a figure (PNG by the path's suffix); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def plot_csv_log(csv_path, png_path, panels: dict[str, Sequence[str]]) -> Path | None:
    """One panel per entry of ``panels`` (title -> column names or glob patterns such as
    ``train/*``), each showing the matching columns of the CSV log against the step. Returns the
    PNG's path, or None when no column matches (nothing logged yet)."""
    from fnmatch import fnmatchcase

    series = read_csv_log(csv_path)
    # Columns in the order their patterns are given (e.g. the total before its terms).
    chosen = {
        title: list(dict.fromkeys(c for p in patterns for c in series if fnmatchcase(c, p)))
        for title, patterns in panels.items()
    }
    chosen = {title: columns for title, columns in chosen.items() if columns}
    if not chosen:
        return None
    fig, axes = new_figure(len(chosen), (5.5 * len(chosen), 4.0))
    for ax, (title, columns) in zip(axes, chosen.items()):
        for column in columns:
            steps, values = series[column]
            # A single point (e.g. one validation) is invisible as a line.
            ax.plot(steps, values, marker="o" if len(steps) < 3 else None, linewidth=1.0, label=column)
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, png_path)
