"""Results folder of the label-efficiency study: summary JSON, seed aggregates, a Markdown table
and two plots (AP vs label fraction, fine-tuning curves).

``tools/study.py`` runs the study and hands its fine-tuned runs to :func:`write_report`.
Metric values stay COCO fractions in the JSON files; the table and plots show percent points.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import warnings
import zlib
from pathlib import Path

from evcmae.events.errors import OutputFolderError
from evcmae.pretrain import reporting

CONDITION_ORDER = (
    "scratch",
    "untrained",
    "pretrained",
    "no_occupancy",
    "no_reconstruction",
    "no_voxel_nce",
    "no_frame_contrastive",
    "no_rvt_stages",
    "occupancy_only",
)
METRIC_KEYS = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AP_class_agnostic")
TABLE_KEYS = ("AP", "AP50", "AP_S", "AP_M", "AP_L", "AP_class_agnostic")
BASELINE = "scratch"
# The reference each protocol's conditions are compared with: fine-tuning from scratch, or the
# frozen untrained encoder.
BASELINES = {"finetune": "scratch", "frozen": "untrained"}
PROTOCOLS = ("finetune", "frozen")
DASH = "–"
MINUS = "−"


def _condition_key(condition: str):
    # Known conditions in study order, anything else after them alphabetically.
    if condition in CONDITION_ORDER:
        return (CONDITION_ORDER.index(condition), "")
    return (len(CONDITION_ORDER), condition)


def _row_key(row: dict):
    protocol = PROTOCOLS.index(row.get("protocol", "finetune"))
    fraction, seed, repeat = float(row["label_fraction"]), row.get("seed", 0), row.get("repeat", 0)
    return (protocol, *_condition_key(row["condition"]), fraction, seed, repeat)


def _t_central_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with an integer number of degrees of freedom, from the finite
    series in cos(atan(t / sqrt(df))) that integer df allows (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    term = total = 1.0
    if df % 2:
        for k in range(1, (df - 3) // 2 + 1):
            term *= 2 * k / (2 * k + 1) * cos2
            total += term
        spread = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
        return 2 / math.pi * (theta + spread)
    for k in range(1, (df - 2) // 2 + 1):
        term *= (2 * k - 1) / (2 * k) * cos2
        total += term
    return math.sin(theta) * total


def t_quantile(df: int, level: float = 0.95) -> float:
    """The t with P(|T| <= t) = level under Student's t with ``df`` degrees of freedom: the factor
    of a two-sided ``level`` interval. Exact for any integer df (bisection on the series), so an
    interval over 12 or 40 seeds is as wide as it should be, not the normal 1.96."""
    if int(df) != df or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df}")
    if not 0 < level < 1:
        raise ValueError(f"interval level must lie between 0 and 1, got {level}")
    df = int(df)
    low, high = 0.0, 1.0
    while _t_central_mass(high, df) < level:
        low, high = high, 2 * high
    for _ in range(200):
        mid = (low + high) / 2
        if _t_central_mass(mid, df) < level:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


def ci95(diffs) -> list | None:
    """95 % t-interval of the mean of paired differences, [low, high]; None under two pairs."""
    diffs = [d for d in diffs if d is not None]
    if len(diffs) < 2:
        return None
    half = t_quantile(len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    mean = statistics.fmean(diffs)
    return [mean - half, mean + half]


def summary_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        metrics = run.get("metrics") or {}
        row = {
            "condition": run["condition"],
            "protocol": run.get("protocol", "finetune"),
            "label_fraction": float(run["label_fraction"]),
            "seed": int(run["seed"]),
            "repeat": int(run.get("repeat", 0)),
            "split": "test",
        }
        row.update({key: metrics.get(key) for key in METRIC_KEYS})
        rows.append(row)
    return sorted(rows, key=_row_key)


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _std(values):
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) >= 2 else None


def _seed_means(rows: list[dict]) -> dict[tuple, dict[int, dict]]:
    """(protocol, condition, label fraction) -> seed -> that seed's metrics averaged over its
    repeats (fine-tuning runs on the same labelled subset from other training seeds), with
    ``repeats`` their number. Seeds are the unit of pairing: a seed's repeats are not independent
    of each other in what they were trained on, only in how."""
    runs: dict[tuple, dict[int, list]] = {}
    for row in rows:
        key = (row.get("protocol", "finetune"), row["condition"], float(row["label_fraction"]))
        runs.setdefault(key, {}).setdefault(row["seed"], []).append(row)
    return {
        key: {
            seed: {
                **{k: _mean(r.get(k) for r in repeats) for k in METRIC_KEYS},
                "repeats": len(repeats),
            }
            for seed, repeats in seeds.items()
        }
        for key, seeds in runs.items()
    }


def aggregate(rows: list[dict]) -> list[dict]:
    by_group = _seed_means(rows)

    groups = []
    for (protocol, condition, fraction), seeds in by_group.items():
        runs = [seeds[s] for s in sorted(seeds)]
        groups.append(
            {
                "protocol": protocol,
                "condition": condition,
                "label_fraction": fraction,
                "seeds": sorted(seeds),
                "n": len(runs),
                "runs": sum(r["repeats"] for r in runs),
                "mean": {k: _mean(r.get(k) for r in runs) for k in METRIC_KEYS},
                "std": {k: _std([r.get(k) for r in runs]) for k in METRIC_KEYS},
                "delta": dict.fromkeys(METRIC_KEYS),
                "delta_std": dict.fromkeys(METRIC_KEYS),
                "delta_ci95": dict.fromkeys(METRIC_KEYS),
                "wins": None,
            }
        )

    means = {(g["protocol"], g["condition"], g["label_fraction"]): g["mean"] for g in groups}
    for group in groups:
        protocol, fraction = group["protocol"], group["label_fraction"]
        baseline = BASELINES.get(protocol, BASELINE)
        base = by_group.get((protocol, baseline, fraction))
        if group["condition"] == baseline or base is None:
            continue
        paired = paired_difference(by_group[(protocol, group["condition"], fraction)], base)
        base_mean = means[(protocol, baseline, fraction)]
        for key in METRIC_KEYS:
            if paired["delta"][key] is None and group["mean"][key] is not None and base_mean[key] is not None:
                paired["delta"][key] = group["mean"][key] - base_mean[key]  # no seed in common
        group.update({k: paired[k] for k in ("delta", "delta_std", "delta_ci95", "wins")})
    return sorted(groups, key=_row_key)


def paired_difference(own: dict[int, dict], base: dict[int, dict]) -> dict:
    """``own`` minus ``base`` (seed -> metrics, as _seed_means gives them) over the seeds both ran:
    per metric the mean difference, its spread and 95 % interval, and the seeds where ``own`` has
    the higher AP (``wins``). A metric with no pair is None."""
    shared = sorted(set(own) & set(base))
    result = {"seeds": shared, "delta": {}, "delta_std": {}, "delta_ci95": {}}
    for key in METRIC_KEYS:
        # Paired over seeds: seed-to-seed variance is shared by both conditions, so the paired
        # spread is the honest uncertainty of the difference. The difference is taken over the
        # same shared seeds as its spread, interval and wins: a condition run at fewer seeds than
        # the reference is not compared with other seeds' runs.
        diffs = [
            own[s][key] - base[s][key] for s in shared if own[s].get(key) is not None and base[s].get(key) is not None
        ]
        result["delta"][key] = _mean(diffs)
        result["delta_std"][key] = _std(diffs)
        result["delta_ci95"][key] = ci95(diffs)
    result["wins"] = sum(
        1
        for s in shared
        if own[s].get("AP") is not None and base[s].get("AP") is not None and own[s]["AP"] > base[s]["AP"]
    )
    return result


# What an ablation variant is compared with, besides scratch: the method it leaves a part out of.
FULL_METHOD = "pretrained"
NOT_ABLATIONS = (*BASELINES.values(), FULL_METHOD)


def ablation_groups(rows: list[dict]) -> list[dict]:
    """Each fine-tuned ablation variant against the full method at the same label fraction, paired
    by seed: ``full`` minus the variant, so a positive difference is what the left-out part adds
    (``wins``: seeds where the full method has the higher AP). Variants without a full-method run at
    their fraction are left out."""
    by_group = _seed_means(rows)
    groups = []
    for (protocol, condition, fraction), seeds in by_group.items():
        full = by_group.get((protocol, FULL_METHOD, fraction))
        if protocol != "finetune" or condition in NOT_ABLATIONS or full is None:
            continue
        paired = paired_difference(full, seeds)
        if not paired["seeds"]:
            continue
        groups.append({"condition": condition, "label_fraction": fraction, **paired})
    return sorted(groups, key=_row_key)


def ablation_table(groups: list[dict]) -> str:
    """ablation_groups as a Markdown section (empty without any)."""
    if not groups:
        return ""
    rows = []
    for g in groups:
        ci, std = g["delta_ci95"], g["delta_std"]
        rows.append(
            [
                g["condition"],
                _fraction_label(g["label_fraction"]),
                ", ".join(map(str, g["seeds"])),
                _delta_cell(g["delta"]["AP"], std["AP"]),
                _ci_cell(ci["AP"]),
                f"{g['wins']}/{len(g['seeds'])}",
                _delta_cell(g["delta"]["AP_class_agnostic"], std["AP_class_agnostic"]),
                _ci_cell(ci["AP_class_agnostic"]),
            ]
        )
    header = [
        "variant",
        "labels",
        "seeds paired",
        "ΔAP full − variant",
        "95 % CI",
        "full wins",
        "Δ class-agnostic",
        "Δ class-agnostic 95 % CI",
    ]
    return (
        "\n## The ablation against the full method\n\nThe full method's test AP minus each variant's, "
        "paired by seed (ablation.json): positive where the part the variant leaves out helps.\n\n"
        + reporting.markdown_table(header, rows, "lllr")
    )


def _fraction_label(fraction: float) -> str:
    return f"{100 * fraction:g} %"


def _cell(mean, std) -> str:
    if mean is None:
        return DASH
    return f"{100 * mean:.2f}" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


def signed_text(value: float, digits: int = 2) -> str:
    """``value`` with an explicit sign, written with the typographic minus used across reports."""
    text = f"{abs(value):.{digits}f}"
    # A difference that rounds to zero gets "+" so "−0.00" never appears.
    return (MINUS if value < 0 and float(text) != 0 else "+") + text


def _signed(value: float) -> str:
    return signed_text(100 * value)


def _delta_cell(delta, std) -> str:
    if delta is None:
        return DASH
    return _signed(delta) if std is None else f"{_signed(delta)} ± {100 * std:.2f}"


def _ci_cell(interval) -> str:
    return DASH if interval is None else f"[{_signed(interval[0])}, {_signed(interval[1])}]"


def markdown_table(groups: list[dict]) -> str:
    header = [
        "protocol",
        "condition",
        "labels",
        "seeds (n)",
        "AP",
        "AP50",
        "AP_S",
        "AP_M",
        "AP_L",
        "AP class-agnostic",
        "ΔAP vs reference",
        "ΔAP 95 % CI",
        "wins",
        "Δ class-agnostic",
        "Δ class-agnostic 95 % CI",  # the frozen protocol's target is class-agnostic
    ]
    seeds_of = {(g.get("protocol", "finetune"), g["condition"], g["label_fraction"]): set(g["seeds"]) for g in groups}
    rows = []
    for g in groups:
        protocol = g.get("protocol", "finetune")
        intervals = g.get("delta_ci95") or {}
        base_seeds = seeds_of.get((protocol, BASELINES.get(protocol, BASELINE), g["label_fraction"]))
        # Wins are counted over shared seeds; without the scratch group in hand, all seeds.
        pairs = len(set(g["seeds"]) & base_seeds) if base_seeds is not None else g["n"]
        wins = DASH if g.get("wins") is None else f"{g['wins']}/{pairs}"
        runs = g.get("runs", g["n"])
        n = str(g["n"]) if runs == g["n"] else f"{g['n']} ({runs} runs)"
        cells = [protocol, g["condition"], _fraction_label(g["label_fraction"]), n]
        cells += [_cell(g["mean"].get(k), g["std"].get(k)) for k in TABLE_KEYS]
        cells += [
            _delta_cell(g["delta"].get("AP"), g["delta_std"].get("AP")),
            _ci_cell(intervals.get("AP")),
            wins,
            _delta_cell(g["delta"].get("AP_class_agnostic"), g["delta_std"].get("AP_class_agnostic")),
            _ci_cell(intervals.get("AP_class_agnostic")),
        ]
        rows.append(cells)
    return reporting.markdown_table(header, rows)


def condition_colour(condition: str):
    """One colour per condition, shared by every plot of the report."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    if condition in CONDITION_ORDER:
        return palette[CONDITION_ORDER.index(condition)]
    # Stable across runs (unlike hash()), so an extra condition keeps its colour.
    spare = len(palette) - len(CONDITION_ORDER)
    return palette[len(CONDITION_ORDER) + zlib.crc32(condition.encode()) % spare]


def plot_ap_vs_fraction(groups: list[dict], path) -> None:
    from matplotlib.ticker import NullLocator

    fig, (ax,) = reporting.new_figure(1, (7, 4.5))
    plotted = [g for g in groups if g["mean"].get("AP") is not None and g.get("protocol", "finetune") == "finetune"]
    lines = [c for c in (BASELINE, "pretrained") if any(g["condition"] == c for g in plotted)]
    ablations = sorted({g["condition"] for g in plotted} - set(lines), key=_condition_key)

    def ys(gs):
        return ([100 * g["mean"]["AP"] for g in gs], [100 * (g["std"].get("AP") or 0.0) for g in gs])

    for condition in lines:
        gs = sorted((g for g in plotted if g["condition"] == condition), key=lambda g: g["label_fraction"])
        y, err = ys(gs)
        ax.errorbar(
            [100 * g["label_fraction"] for g in gs],
            y,
            yerr=err,
            marker="o",
            capsize=3,
            color=condition_colour(condition),
            label=condition,
        )
    markers = "s^vDP*Xph<>"
    for i, condition in enumerate(ablations):
        gs = [g for g in plotted if g["condition"] == condition]
        y, err = ys(gs)
        # Multiplicative jitter (equal offsets on the log axis), all to the right of the fraction so
        # the ablations stay clear of the scratch/pretrained markers drawn exactly on it.
        shift = 1.04 ** (i + 1)
        ax.errorbar(
            [100 * g["label_fraction"] * shift for g in gs],
            y,
            yerr=err,
            linestyle="none",
            marker=markers[i % len(markers)],
            capsize=2,
            color=condition_colour(condition),
            label=condition,
        )

    fractions = sorted({g["label_fraction"] for g in plotted})
    ax.set_xscale("log")
    if fractions:
        ax.set_xlim(100 * fractions[0] / 1.6, 100 * fractions[-1] * 1.6)
        ax.set_xticks([100 * f for f in fractions], [_fraction_label(f) for f in fractions])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("label fraction")
    ax.set_ylabel("AP (%)")
    ax.set_title("AP vs label fraction (test split)")
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize=8)
    reporting.save_figure(fig, path)


# What the fine-tuning figure draws of a run's log: its key -> the logged metric.
CURVE_SERIES = {"train_loss": "train/loss", "val_AP": "val/AP"}


def curve_series(series: dict) -> dict:
    """What the figure draws of a parsed log (reporting.read_csv_log): CURVE_SERIES' keys ->
    (steps, values), empty where the log lacks the metric."""
    return {key: series.get(name, ([], [])) for key, name in CURVE_SERIES.items()}


def read_curve(csv_path) -> dict:
    """The training loss and validation AP of a fine-tuning run's CSV log, as (steps, values)."""
    return curve_series(reporting.read_csv_log(csv_path))


def read_logs(curves: list[dict]) -> list[dict]:
    """Each fine-tuning run's CSV log read once, as the run's curve dict with its ``series``
    (reporting.read_csv_log), in report order. An unreadable log is left out with a warning: the
    figure and val_curves.json then both lack that run."""
    read = []
    for curve in sorted(curves, key=_row_key):
        try:
            series = reporting.read_csv_log(curve["csv"])
        except (KeyError, TypeError, OSError, ValueError, csv.Error) as exc:
            warnings.warn(f"skipping fine-tuning curve {curve.get('csv')}: {exc}", stacklevel=2)
            continue
        read.append({**curve, "series": series})
    return read


def plot_curves(curves: list[dict], path) -> None:
    """Training loss and val AP of each run in ``curves`` (read by read_logs)."""
    fig, (loss_ax, ap_ax) = reporting.new_figure(2, (11, 4))
    labelled = set()
    for curve in curves:
        data = curve_series(curve["series"])
        key = (curve["condition"], float(curve["label_fraction"]))
        label = f"{key[0]} {_fraction_label(key[1])}"
        # One legend entry per (condition, fraction) however many seeds were run.
        style = {
            "color": condition_colour(key[0]),
            "linewidth": 0.9,
            "linestyle": "-" if key[1] >= 1.0 else "--",
            "label": label if key not in labelled else "_nolegend_",
        }
        labelled.add(key)
        loss_ax.plot(*data["train_loss"], **style)
        steps, values = data["val_AP"]
        ap_ax.plot(steps, [100 * v for v in values], **style)
    loss_ax.set(xlabel="step", ylabel="training loss", title="training loss")
    ap_ax.set(xlabel="step", ylabel="AP (%)", title="validation AP")
    for ax in (loss_ax, ap_ax):
        ax.grid(alpha=0.3)
    if labelled:
        ap_ax.legend(fontsize=7)
    reporting.save_figure(fig, path)


# What val_curves.json keeps of each run's validation log (as logged: fractions, not %).
VAL_CURVE_METRICS = ("AP", "AP50", "AP_class_agnostic")


def val_curves(curves: list[dict], metrics: tuple[str, ...] = VAL_CURVE_METRICS) -> list[dict]:
    """Each fine-tuning run's validation metrics along its steps, one row per run: what
    finetune_curves.png draws, as numbers, so that a comparison along the runs (a gap by step) can
    be recomputed from the report once the run folders are gone. Every metric is a list aligned with
    ``step`` (None where that validation did not log it). ``curves`` are read by read_logs;
    ``metrics`` are the names kept (val_curves.json keeps VAL_CURVE_METRICS)."""
    rows = []
    for curve in curves:
        series = curve["series"]
        logged = {m: dict(zip(*series[f"val/{m}"], strict=True)) for m in metrics if f"val/{m}" in series}
        steps = sorted({step for values in logged.values() for step in values})
        if not steps:
            continue
        row = {key: curve[key] for key in ("protocol", "condition", "label_fraction", "seed", "repeat") if key in curve}
        rows.append({**row, "step": steps, **{m: [values.get(s) for s in steps] for m, values in logged.items()}})
    return rows


def best_validation(steps: list[int], metrics: dict[str, list]) -> dict:
    """The validation a run keeps its checkpoint from (the highest val AP; the earliest of equal
    ones, as the checkpoint callback keeps the first): its step and every metric there. ``metrics``
    maps names to values aligned with ``steps``, ``AP`` among them (a val_curves.json row's layout)."""
    ap = metrics["AP"]
    i = max(range(len(ap)), key=ap.__getitem__)
    return {"step": steps[i], **{name: values[i] for name, values in metrics.items()}}


REPORT_FILE = "README.md"  # rewritten by every invocation of the study
HAND_NOTES = "notes.md"  # a person's notes on a study, kept in the report's folder across invocations


def write_report(
    runs: list[dict], out_dir, curves: list[dict] | None = None, commands=(), notes: str = "", meta: dict | None = None
) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(runs)
    groups = aggregate(rows)

    summary, groups_path = out / "summary.json", out / "groups.json"
    summary.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    groups_path.write_text(json.dumps(groups, indent=2) + "\n", encoding="utf-8")
    ablation = ablation_groups(rows)
    ablation_path = write_json_or_remove(out / "ablation.json", ablation or None)
    # The folder is the report of this invocation alone: a figure it does not draw is removed, so a
    # figure from an earlier invocation with other runs never sits beside tables that disagree.
    plot = _figure(out / "ap_vs_label_fraction.png", plot_ap_vs_fraction, groups)
    read = read_logs(curves or [])
    curves_path = _figure(out / "finetune_curves.png", plot_curves, read)
    curves_json = write_json_or_remove(out / "val_curves.json", val_curves(read) or None, indent=1)

    parts = ["# evcmae label-efficiency study\n"]
    if meta:
        parts.append("".join(f"- {key}: {value}\n" for key, value in meta.items()))
    if plot is not None:
        parts.append(markdown_table(groups))
        parts.append(f"![AP vs label fraction]({plot.name})\n")
    else:
        parts.append("No fine-tuning runs: the pretraining runs and the probe below are this study's results.\n")
    if curves_path is not None:
        parts.append(f"![fine-tuning curves]({curves_path.name})\n")
    if ablation:
        parts.append(ablation_table(ablation))
    if notes:
        parts.append(notes if notes.endswith("\n") else notes + "\n")
    parts.append("## Reproduce\n\n```bash\n" + "".join(f"{c}\n" for c in commands) + "```\n")
    table = out / REPORT_FILE
    table.write_text("\n".join(parts) + _hand_notes_section(out), encoding="utf-8")
    return {
        "summary": summary,
        "table": table,
        "plot": plot,
        "curves": curves_path,
        "val_curves": curves_json,
        "groups": groups,
        "ablation": ablation_path,
    }


def write_json_or_remove(path: Path, data, indent: int = 2) -> Path | None:
    """``data`` as JSON at ``path`` and return ``path``; with ``data`` None remove the file instead
    and return None, so that a file an earlier invocation wrote never outlives it (as _figure does
    for figures)."""
    if data is None:
        path.unlink(missing_ok=True)
        return None
    path.write_text(json.dumps(data, indent=indent) + "\n", encoding="utf-8")
    return path


def _figure(path: Path, draw, data) -> Path | None:
    """``draw(data, path)`` and return ``path``; without data (a study of pretraining and the probe
    alone has no AP to plot) remove the file instead and return None."""
    if not data:
        path.unlink(missing_ok=True)
        return None
    draw(data, path)
    return path


NOTES_HEADING = f"## Notes (written by hand, in {HAND_NOTES})\n"


def _hand_notes_section(out: Path) -> str:
    """README.md is rewritten by every invocation; what a person adds lives beside it in notes.md
    and is carried in as the last section (empty without notes.md)."""
    hand_notes = out / HAND_NOTES
    if not hand_notes.is_file():
        return ""
    return f"\n{NOTES_HEADING}\n{hand_notes.read_text(encoding='utf-8').strip()}\n"


def refresh_hand_notes(out_dir) -> Path:
    """Carry a report folder's current notes.md into its README.md without rebuilding the rest.

    The study rebuilds README.md from its run folders, which a report outlives (they are work
    files); after editing notes.md of a report whose runs are gone, this replaces only the notes
    section and keeps every generated line. Returns the README's path."""
    out = Path(out_dir)
    readme = out / REPORT_FILE
    if not readme.is_file():
        raise OutputFolderError(out, "has no README.md: not a study report folder (evcmae-study out=...)")
    text = readme.read_text(encoding="utf-8")
    generated = text.split("\n" + NOTES_HEADING, 1)[0]
    if not generated.endswith("\n"):
        generated += "\n"
    readme.write_text(generated + _hand_notes_section(out), encoding="utf-8")
    return readme


def interval_text(ci, signed: bool = False) -> str:
    """ " [lo, hi]" for a 95 % interval (3 decimals, with signs for differences); empty without one."""
    if not ci:
        return ""
    text = (lambda v: signed_text(v, 3)) if signed else "{:.3f}".format
    return f" [{text(ci[0])}, {text(ci[1])}]"


def tracks_text(tracks: dict) -> str:
    """The probe's tracks per class, ``{"0": 12, "3": 2}``, as ``0: 12, 3: 2``."""
    return ", ".join(f"{c}: {n}" for c, n in tracks.items()) or "none"
