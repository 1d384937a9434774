"""The label-efficiency study report: summary rows, seed aggregates, table, curves and files."""

import json

import numpy as np
import pytest

from evcmae.tools.study_report import (
    METRIC_KEYS,
    _t_central_mass,
    ablation_groups,
    ablation_table,
    aggregate,
    best_validation,
    ci95,
    interval_text,
    markdown_table,
    read_curve,
    read_logs,
    refresh_hand_notes,
    signed_text,
    summary_rows,
    t_quantile,
    val_curves,
    write_report,
)

SCRATCH_AP = {0: 0.20, 1: 0.24, 2: 0.21}
PRETRAINED_AP = {0: 0.25, 1: 0.23, 2: 0.27}


def run(condition, fraction, seed, ap, **extra):
    metrics = {
        "AP": ap,
        "AP50": ap + 0.2,
        "AP75": ap - 0.05,
        "AP_S": None,
        "AP_M": ap / 2,
        "AP_L": None,
        "AP_class_agnostic": ap + 0.1,
        "AP_per_class": {"car": ap},
    }
    metrics.update(extra)
    return {"condition": condition, "label_fraction": fraction, "seed": seed, "metrics": metrics}


def study_runs():
    runs = [run("scratch", 0.1, s, ap) for s, ap in SCRATCH_AP.items()]
    runs += [run("pretrained", 0.1, s, ap) for s, ap in PRETRAINED_AP.items()]
    runs += [run("no_occupancy", 0.1, 0, 0.19, AP_S=0.05)]
    runs += [run("pretrained", 1.0, s, 0.4 + 0.01 * s) for s in (0, 1)]  # no scratch at 100 %
    return runs


def by_group(groups):
    return {(g["condition"], g["label_fraction"]): g for g in groups}


def test_summary_rows_order_and_schema():
    runs = [
        run("occupancy_only", 0.1, 0, 0.1),
        run("zzz_extra", 0.1, 0, 0.1),
        run("pretrained", 1.0, 1, 0.3),
        run("pretrained", 0.1, 2, 0.2),
        run("aaa_extra", 1.0, 0, 0.1),
        run("scratch", 1.0, 0, 0.3),
        run("pretrained", 0.1, 0, 0.2),
        run("scratch", 0.1, 0, 0.1),
    ]
    runs.append({"condition": "no_voxel_nce", "label_fraction": 0.1, "seed": 0, "metrics": {"AP": 0.15}})
    rows = summary_rows(runs)
    assert [(r["condition"], r["label_fraction"], r["seed"]) for r in rows] == [
        ("scratch", 0.1, 0),
        ("scratch", 1.0, 0),
        ("pretrained", 0.1, 0),
        ("pretrained", 0.1, 2),
        ("pretrained", 1.0, 1),
        ("no_voxel_nce", 0.1, 0),
        ("occupancy_only", 0.1, 0),
        ("aaa_extra", 1.0, 0),
        ("zzz_extra", 0.1, 0),
    ]
    for row in rows:
        assert list(row) == ["condition", "protocol", "label_fraction", "seed", "repeat", "split", *METRIC_KEYS]
        assert row["protocol"] == "finetune"
        assert row["split"] == "test"
    sparse = next(r for r in rows if r["condition"] == "no_voxel_nce")
    assert sparse["AP"] == 0.15
    assert all(sparse[k] is None for k in METRIC_KEYS if k != "AP")


def test_aggregate_against_numpy():
    groups = by_group(aggregate(summary_rows(study_runs())))
    scratch, pre = groups[("scratch", 0.1)], groups[("pretrained", 0.1)]
    s_ap, p_ap = np.array(list(SCRATCH_AP.values())), np.array(list(PRETRAINED_AP.values()))

    assert scratch["seeds"] == [0, 1, 2] and scratch["n"] == 3
    assert scratch["mean"]["AP"] == pytest.approx(np.mean(s_ap))
    assert scratch["std"]["AP"] == pytest.approx(np.std(s_ap, ddof=1))
    assert pre["mean"]["AP50"] == pytest.approx(np.mean(p_ap + 0.2))
    assert pre["std"]["AP_class_agnostic"] == pytest.approx(np.std(p_ap + 0.1, ddof=1))

    assert pre["delta"]["AP"] == pytest.approx(np.mean(p_ap) - np.mean(s_ap))
    assert pre["delta"]["AP_M"] == pytest.approx(np.mean(p_ap / 2) - np.mean(s_ap / 2))
    assert pre["delta_std"]["AP"] == pytest.approx(np.std(p_ap - s_ap, ddof=1))
    d = p_ap - s_ap  # 95 % t-interval, 2 degrees of freedom: t = 4.302653
    half = 4.302653 * np.std(d, ddof=1) / np.sqrt(len(d))
    assert pre["delta_ci95"]["AP"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert pre["wins"] == int(np.sum(p_ap > s_ap)) == 2
    assert scratch["wins"] is None
    assert all(v is None for v in scratch["delta"].values())
    assert all(v is None for v in scratch["delta_std"].values())

    # A key missing in every seed stays None all the way through.
    assert pre["mean"]["AP_S"] is None and pre["std"]["AP_S"] is None and pre["delta"]["AP_S"] is None

    # A single seed: a mean but no spread, and no paired spread either.
    single = groups[("no_occupancy", 0.1)]
    assert single["n"] == 1 and single["std"]["AP"] is None
    assert single["delta"]["AP"] == pytest.approx(0.19 - s_ap[0])  # against scratch's same seed
    assert single["delta_std"]["AP"] is None
    assert single["delta"]["AP_S"] is None  # scratch has no AP_S to compare with
    assert single["wins"] == int(np.sum(0.19 > s_ap[:1])) == 0

    # No scratch at 100 %: nothing to compare against.
    full = groups[("pretrained", 1.0)]
    assert full["mean"]["AP"] == pytest.approx(0.405)
    assert full["delta"]["AP"] is None and full["wins"] is None


def test_aggregate_pairs_only_shared_seeds():
    rows = summary_rows(
        [
            run("scratch", 0.1, 0, 0.2),
            run("scratch", 0.1, 1, 0.3),
            run("scratch", 0.1, 2, 0.1),
            run("pretrained", 0.1, 1, 0.35),
            run("pretrained", 0.1, 2, 0.05),
            run("pretrained", 0.1, 7, 0.9),
        ]
    )
    pre = by_group(aggregate(rows))[("pretrained", 0.1)]
    # The difference, its spread and the wins all come from seeds 1 and 2, the ones both ran: a
    # difference of the groups' own means would set seed 7 against seed 0 (0.17 instead of 0).
    assert pre["delta"]["AP"] == pytest.approx(np.mean([0.35 - 0.3, 0.05 - 0.1]))
    assert pre["delta_std"]["AP"] == pytest.approx(np.std([0.35 - 0.3, 0.05 - 0.1], ddof=1))
    assert pre["wins"] == 1
    # With no seed in common the groups' means are all there is to compare.
    apart = summary_rows([run("scratch", 0.1, 0, 0.2), run("pretrained", 0.1, 5, 0.6)])
    assert by_group(aggregate(apart))[("pretrained", 0.1)]["delta"]["AP"] == pytest.approx(0.4)


def test_ablation_variants_are_paired_with_the_full_method():
    full_ap = {0: 0.30, 1: 0.22, 2: 0.27, 3: 0.25}
    variant_ap = {0: 0.26, 1: 0.23, 2: 0.20}  # seed 3 not run
    runs = [run("scratch", 0.1, s, 0.1) for s in range(4)]
    runs += [run("pretrained", 0.1, s, ap) for s, ap in full_ap.items()]
    runs += [run("no_rvt_stages", 0.1, s, ap, AP_class_agnostic=2 * ap) for s, ap in variant_ap.items()]
    runs += [run("occupancy_only", 0.1, 9, 0.5)]  # no seed in common with the full method: left out
    runs += [run("no_occupancy", 1.0, 0, 0.5)]  # no full-method run at 100 %: left out
    runs += [
        {**run("untrained", 1.0, 0, 0.1), "protocol": "frozen"},
        {**run("pretrained", 1.0, 0, 0.2), "protocol": "frozen"},
    ]
    groups = ablation_groups(summary_rows(runs))

    assert [(g["condition"], g["label_fraction"], g["seeds"]) for g in groups] == [("no_rvt_stages", 0.1, [0, 1, 2])]
    group = groups[0]
    diffs = np.array([full_ap[s] - variant_ap[s] for s in (0, 1, 2)])  # full minus variant
    assert group["delta"]["AP"] == pytest.approx(diffs.mean())
    assert group["delta_std"]["AP"] == pytest.approx(np.std(diffs, ddof=1))
    half = 4.302653 * np.std(diffs, ddof=1) / np.sqrt(3)  # t, 2 degrees of freedom
    assert group["delta_ci95"]["AP"] == pytest.approx([diffs.mean() - half, diffs.mean() + half])
    assert group["wins"] == 2  # seeds 0 and 2: the full method ahead
    agnostic = np.array([full_ap[s] + 0.1 - 2 * variant_ap[s] for s in (0, 1, 2)])
    assert group["delta"]["AP_class_agnostic"] == pytest.approx(agnostic.mean())
    assert group["delta"]["AP_S"] is None and group["delta_ci95"]["AP_S"] is None

    table = ablation_table(groups)
    assert table.startswith("\n## The ablation against the full method\n")
    assert (
        f"| no_rvt_stages | 10 % | 0, 1, 2 | {signed_text(100 * diffs.mean())} ± {100 * np.std(diffs, ddof=1):.2f} |"
        in table
    )
    assert "| 2/3 |" in table
    assert ablation_table([]) == ""


def test_markdown_table_cells():
    groups = aggregate(summary_rows(study_runs()))
    table = markdown_table(groups)
    lines = table.strip().splitlines()
    assert lines[0] == (
        "| protocol | condition | labels | seeds (n) | AP | AP50 | AP_S | AP_M | AP_L | AP class-agnostic"
        " | ΔAP vs reference | ΔAP 95 % CI | wins | Δ class-agnostic | Δ class-agnostic 95 % CI |"
    )
    assert len(lines) == 2 + len(groups)

    s_ap, p_ap = np.array(list(SCRATCH_AP.values())), np.array(list(PRETRAINED_AP.values()))
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[1:3]): line for line in lines[2:]}
    scratch = rows[("scratch", "10 %")]
    assert f"| {100 * s_ap.mean():.2f} ± {100 * s_ap.std(ddof=1):.2f} |" in scratch
    assert scratch.endswith("| – | – | – | – | – |")
    pre = rows[("pretrained", "10 %")]
    delta, delta_std = 100 * (p_ap.mean() - s_ap.mean()), 100 * np.std(p_ap - s_ap, ddof=1)
    assert f"| +{delta:.2f} ± {delta_std:.2f} | [" in pre and "| 2/3 |" in pre
    half = 4.302653 * delta_std / np.sqrt(3)  # Student's t, 2 degrees of freedom
    interval = f"[{signed_text(delta - half)}, {signed_text(delta + half)}]"
    # class-agnostic AP is AP + 0.1 here: the same differences, the same interval
    assert pre.endswith(f"| {interval} | 2/3 | +{delta:.2f} ± {delta_std:.2f} | {interval} |")
    assert "| 3 |" in pre and "| – |" in pre  # seeds, AP_S
    ablation = rows[("no_occupancy", "10 %")]
    assert f"| −{100 * (s_ap[0] - 0.19):.2f} | – | 0/1 |" in ablation  # seed 0 against scratch's seed 0
    assert "| 19.00 |" in ablation and "| 5.00 |" in ablation
    assert rows[("pretrained", "100 %")].endswith("| – | – | – | – |")


def write_csv(path, text):
    path.write_text(text)
    return path


def test_read_curve(tmp_path):
    csv_path = write_csv(
        tmp_path / "metrics.csv",
        "epoch,lr/all,step,train/loss,val/AP\n"
        "0,0.001,9,2.5,\n"
        "0,0.001,19,2.25,\n"
        "0,,19,,0.125\n"
        "1,0.0005,29,1.75,\n"
        "1,,39,,0.25\n",
    )
    curve = read_curve(csv_path)
    assert curve["train_loss"] == ([9, 19, 29], [2.5, 2.25, 1.75])
    assert curve["val_AP"] == ([19, 39], [0.125, 0.25])

    no_val = read_curve(write_csv(tmp_path / "loss_only.csv", "step,train/loss\n0,1.0\n"))
    assert no_val == {"train_loss": ([0], [1.0]), "val_AP": ([], [])}


def test_best_validation_is_the_first_highest_ap_with_its_metrics():
    steps = [149, 299, 449, 599]
    metrics = {"AP": [0.01, 0.25, 0.25, 0.20], "AP_class_agnostic": [0.02, 0.30, 0.40, 0.35]}
    # Two validations tie on AP: the checkpoint callback keeps the earlier one, and so does this.
    assert best_validation(steps, metrics) == {"step": 299, "AP": 0.25, "AP_class_agnostic": 0.30}
    assert best_validation([9], {"AP": [0.0]}) == {"step": 9, "AP": 0.0}


def test_val_curves_keeps_the_metrics_asked_for(tmp_path):
    log = write_csv(
        tmp_path / "metrics.csv",
        "epoch,step,train/loss,val/AP,val/AP50,val/AP_S,val/AP_class_agnostic\n"
        "0,9,2.5,,,,\n0,9,,0.1,0.2,0.05,0.3\n1,19,,0.15,0.25,,0.35\n",
    )
    curves = read_logs([{"condition": "scratch", "label_fraction": 0.1, "seed": 2, "csv": log}])
    row = {"condition": "scratch", "label_fraction": 0.1, "seed": 2, "step": [9, 19]}
    # The report's own file keeps AP, AP50 and class-agnostic AP; a caller may ask for AP_S too.
    assert val_curves(curves) == [{**row, "AP": [0.1, 0.15], "AP50": [0.2, 0.25], "AP_class_agnostic": [0.3, 0.35]}]
    assert val_curves(curves, ("AP", "AP_S", "AP75")) == [{**row, "AP": [0.1, 0.15], "AP_S": [0.05, None]}]


def test_write_report(tmp_path):
    from PIL import Image

    good = write_csv(
        tmp_path / "metrics.csv",
        "epoch,lr/all,step,train/loss,val/AP,val/AP_class_agnostic\n"
        "0,0.001,9,2.5,,\n0,,9,,0.1,0.3\n1,0.001,19,2.0,,\n1,,19,,0.2,\n",
    )
    curves = [
        {"protocol": "frozen", "condition": "pretrained", "label_fraction": 0.1, "seed": 0, "repeat": 1, "csv": good},
        {"condition": "scratch", "label_fraction": 1.0, "seed": 0, "csv": tmp_path / "missing.csv"},
    ]
    runs = study_runs()
    out = tmp_path / "results"
    with pytest.warns(UserWarning, match="missing.csv"):
        paths = write_report(
            runs,
            out,
            curves=curves,
            commands=["evcmae-study --scale tiny"],
            notes="Seeds differ only in the fine-tuning split.",
            meta={"scale": "tiny", "pretrain_steps": 200},
        )

    assert json.loads(paths["summary"].read_text()) == summary_rows(runs)
    # The val log as numbers, aligned by step; AP50 was never logged, the missing log is left out.
    assert paths["val_curves"] == out / "val_curves.json"
    assert json.loads(paths["val_curves"].read_text()) == [
        {
            "protocol": "frozen",
            "condition": "pretrained",
            "label_fraction": 0.1,
            "seed": 0,
            "repeat": 1,
            "step": [9, 19],
            "AP": [0.1, 0.2],
            "AP_class_agnostic": [0.3, None],
        }
    ]
    assert json.loads((out / "groups.json").read_text()) == paths["groups"] == aggregate(summary_rows(runs))
    # study_runs' no_occupancy ran seed 0, which the full method ran too.
    assert json.loads(paths["ablation"].read_text()) == ablation_groups(summary_rows(runs))
    assert paths["ablation"] == out / "ablation.json"
    for png in (paths["plot"], paths["curves"]):
        assert png.parent == out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = Image.open(png).size
        assert width > 100 and height > 100

    readme = paths["table"].read_text()
    assert readme.startswith("# evcmae label-efficiency study\n")
    assert "- scale: tiny\n" in readme and "- pretrain_steps: 200\n" in readme
    assert markdown_table(paths["groups"]) in readme
    assert ablation_table(ablation_groups(summary_rows(runs))) in readme
    assert "](ap_vs_label_fraction.png)" in readme and "](finetune_curves.png)" in readme
    assert "Seeds differ only in the fine-tuning split." in readme
    assert "## Reproduce\n\n```bash\nevcmae-study --scale tiny\n```" in readme
    assert (
        readme.index("| condition |")
        < readme.index("](ap_vs")
        < readme.index("](finetune_curves")
        < readme.index("## The ablation against the full method")
        < readme.index("Seeds differ")
        < readme.index("## Reproduce")
    )


def test_write_report_without_curves(tmp_path):
    paths = write_report([run("scratch", 0.1, 0, 0.2)], tmp_path / "r")
    assert paths["curves"] is None and not (tmp_path / "r" / "finetune_curves.png").exists()
    assert paths["plot"].exists()
    assert "finetune_curves" not in paths["table"].read_text()


def test_a_report_whose_logs_are_all_unreadable_draws_no_empty_curve_figure(tmp_path):
    curves = [{"condition": "scratch", "label_fraction": 0.1, "seed": 0, "csv": tmp_path / "missing.csv"}]
    with pytest.warns(UserWarning, match="missing.csv"):
        paths = write_report([run("scratch", 0.1, 0, 0.2)], tmp_path / "r", curves=curves)
    assert paths["curves"] is None and paths["val_curves"] is None
    assert not (tmp_path / "r" / "finetune_curves.png").exists()


def test_a_report_without_fine_tuning_runs_has_no_ap_table_or_plot(tmp_path):
    """A study of pretraining and the probe alone (the ablation at the probe) reports those."""
    paths = write_report([], tmp_path / "r", notes="## Representation probe\n")
    text = paths["table"].read_text()
    assert paths["plot"] is None and not (tmp_path / "r" / "ap_vs_label_fraction.png").exists()
    assert "| protocol | condition |" not in text and "No fine-tuning runs" in text
    assert "## Representation probe" in text and json.loads(paths["summary"].read_text()) == []


def test_a_rewritten_report_keeps_no_figure_of_an_earlier_invocation(tmp_path):
    """The report folder holds one invocation's report: figures it no longer draws are removed."""
    out = tmp_path / "r"
    log = write_csv(tmp_path / "metrics.csv", "epoch,step,train/loss,val/AP\n0,9,2.5,\n0,9,,0.1\n")
    curves = [{"condition": "scratch", "label_fraction": 0.1, "seed": 0, "csv": log}]
    ablated = [run("pretrained", 0.1, 0, 0.3), run("no_reconstruction", 0.1, 0, 0.25)]
    first = write_report([run("scratch", 0.1, 0, 0.2), *ablated], out, curves=curves)
    assert first["plot"].is_file() and first["curves"].is_file()
    assert first["val_curves"].is_file() and first["ablation"].is_file()
    again = write_report([], out)
    assert again["plot"] is None and again["curves"] is None and again["val_curves"] is None
    assert again["ablation"] is None
    for name in ("ap_vs_label_fraction.png", "finetune_curves.png", "val_curves.json", "ablation.json"):
        assert not (out / name).exists(), name


def test_hand_notes_survive_a_rewritten_report(tmp_path):
    out = tmp_path / "r"
    first = write_report([run("scratch", 0.1, 0, 0.2)], out)["table"].read_text()
    assert "## Notes" not in first

    (out / "notes.md").write_text("- Seed 2 was trained a session earlier.\n\n")
    for ap in (0.2, 0.3):  # each invocation rewrites README.md and carries the notes in, once
        readme = write_report([run("scratch", 0.1, 0, ap)], out)["table"].read_text()
        assert readme.count("## Notes (written by hand, in notes.md)\n\n- Seed 2 was trained a session earlier.\n") == 1
        assert readme.index("## Reproduce") < readme.index("## Notes")
    assert (out / "notes.md").read_text() == "- Seed 2 was trained a session earlier.\n\n"


def test_refreshed_notes_replace_only_the_notes_section(tmp_path):
    """A report whose run folders are gone can take new hand notes: the README then reads exactly
    as a study run would have written it with those notes, and nothing else moves."""
    from evcmae.events.errors import OutputFolderError

    out = tmp_path / "r"
    runs = [run("scratch", 0.1, 0, 0.2), run("pretrained", 0.1, 0, 0.3)]
    notes = out / "notes.md"
    out.mkdir()
    notes.write_text("- first draft\n")
    write_report(runs, out, commands=["evcmae-study out=r"], notes="## Fine-tuning runs\n\nrun rows\n")
    readme = out / "README.md"

    notes.write_text("- rewritten: seed 0 was rerun\n\n- a second point\n")
    refresh_hand_notes(out)
    refreshed = readme.read_text()
    assert "first draft" not in refreshed and refreshed.count("## Notes (written by hand") == 1
    assert refreshed.endswith(
        "## Notes (written by hand, in notes.md)\n\n- rewritten: seed 0 was rerun\n\n- a second point\n"
    )
    # the reference: the study rewriting its README with the new notes
    write_report(runs, out, commands=["evcmae-study out=r"], notes="## Fine-tuning runs\n\nrun rows\n")
    assert readme.read_text() == refreshed
    assert refresh_hand_notes(out).read_text() == refreshed  # idempotent

    notes.unlink()  # no notes.md: no notes section, the generated part kept whole
    without_notes = refresh_hand_notes(out).read_text()
    assert "## Notes" not in without_notes and refreshed.startswith(without_notes)
    assert without_notes.endswith("evcmae-study out=r\n```\n")

    with pytest.raises(OutputFolderError, match=r"empty: has no README.md: not a study report folder"):
        refresh_hand_notes(tmp_path / "empty")


def test_frozen_protocol_is_compared_with_the_untrained_encoder():
    runs = [run("scratch", 1.0, 0, 0.30), run("pretrained", 1.0, 0, 0.32)]
    runs += [
        {**run(c, 1.0, s, ap), "protocol": "frozen"}
        for c, s, ap in (
            ("untrained", 0, 0.05),
            ("untrained", 1, 0.07),
            ("pretrained", 0, 0.15),
            ("pretrained", 1, 0.12),
        )
    ]
    groups = {(g["protocol"], g["condition"]): g for g in aggregate(summary_rows(runs))}
    frozen = groups[("frozen", "pretrained")]
    assert frozen["delta"]["AP"] == pytest.approx(np.mean([0.15, 0.12]) - np.mean([0.05, 0.07]))
    assert frozen["wins"] == 2
    assert groups[("finetune", "pretrained")]["delta"]["AP"] == pytest.approx(0.02)  # vs scratch, not untrained
    assert groups[("frozen", "untrained")]["delta"]["AP"] is None


def test_signed_numbers_use_one_minus_and_never_a_signed_zero():
    assert signed_text(-0.0412, 3) == "−0.041" and signed_text(0.0412, 3) == "+0.041"
    assert signed_text(-0.0004, 3) == "+0.000"  # rounds to zero: no "−0.000"
    assert signed_text(-1.5) == "−1.50"
    assert interval_text([-0.094, 0.104], signed=True) == " [−0.094, +0.104]"
    assert interval_text([0.25, 0.31]) == " [0.250, 0.310]" and interval_text(None) == ""


def test_repeats_are_averaged_within_a_seed_before_pairing():
    """Two fine-tuning runs per seed and condition: the seed's mean is what is paired, so the
    interval and wins count seeds, not runs."""
    scratch = {0: (0.10, 0.20), 1: (0.30, 0.10), 2: (0.05, 0.15)}
    pretrained = {0: (0.20, 0.22), 1: (0.16, 0.30), 2: (0.08, 0.10)}
    runs = [
        {**run(condition, 0.1, seed, ap), "repeat": r}
        for condition, aps in (("scratch", scratch), ("pretrained", pretrained))
        for seed, pair in aps.items()
        for r, ap in enumerate(pair)
    ]
    rows = summary_rows(runs)
    assert [(r["condition"], r["seed"], r["repeat"]) for r in rows[:2]] == [("scratch", 0, 0), ("scratch", 0, 1)]
    group = by_group(aggregate(rows))[("pretrained", 0.1)]
    diffs = [np.mean(pretrained[s]) - np.mean(scratch[s]) for s in (0, 1, 2)]  # +0.06, +0.03, -0.01
    assert group["n"] == 3 and group["runs"] == 6 and group["seeds"] == [0, 1, 2]
    assert group["mean"]["AP"] == pytest.approx(np.mean([np.mean(v) for v in pretrained.values()]))
    assert group["delta"]["AP"] == pytest.approx(np.mean(diffs))
    assert group["delta_std"]["AP"] == pytest.approx(np.std(diffs, ddof=1))
    half = 4.302653 * np.std(diffs, ddof=1) / np.sqrt(3)  # t(0.975, 2 df)
    assert group["delta_ci95"]["AP"] == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half])
    assert group["wins"] == 2
    assert "| 3 (6 runs) |" in markdown_table(aggregate(rows))


# Two-sided 95 % factors of Student's t from printed tables, by degrees of freedom.
T_TABLE = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    15: 2.131,
    20: 2.086,
    30: 2.042,
    60: 2.000,
    120: 1.980,
}


@pytest.mark.parametrize("df", sorted(T_TABLE))
def test_t_quantile_matches_the_printed_table(df):
    assert t_quantile(df) == pytest.approx(T_TABLE[df], abs=6e-4)


@pytest.mark.parametrize("df", [1, 2, 3, 7, 12])
def test_t_central_mass_equals_the_integrated_density(df):
    # Reference: trapezoid integral of Student's t density over [-t, t] on a fine grid.
    from math import gamma, pi, sqrt

    t = 1.7
    x = np.linspace(-t, t, 200_001)
    density = gamma((df + 1) / 2) / (sqrt(df * pi) * gamma(df / 2)) * (1 + x**2 / df) ** (-(df + 1) / 2)
    assert _t_central_mass(t, df) == pytest.approx(np.trapezoid(density, x), abs=1e-9)


def test_interval_over_many_seeds_uses_students_t_not_the_normal_factor():
    diffs = [0.5, -1.0, 2.0, 3.5, 0.0, 1.5, -0.5, 4.0, 2.5, 1.0, -2.0, 3.0]  # 12 seeds, 11 df
    half = 2.201 * np.std(diffs, ddof=1) / np.sqrt(len(diffs))
    assert ci95(diffs) == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half], rel=1e-3)


def test_t_quantile_rejects_bad_degrees_of_freedom_and_levels():
    for df in (0, -3, 2.5):
        with pytest.raises(ValueError, match="degrees of freedom"):
            t_quantile(df)
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="interval level"):
            t_quantile(5, level)
    assert t_quantile(5, 0.90) == pytest.approx(2.015, abs=6e-4)  # printed 90 % two-sided factor
