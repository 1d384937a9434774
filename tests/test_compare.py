"""Experiment records and the baseline comparison table."""

import json

import pytest

from evcmae.finetune.compare import compare, load_run, markdown
from evcmae.finetune.records import ExperimentRecord, load_record
from evcmae.tools.compare import main


def fake_metrics(ap, ap_s, per_class):
    return {
        "AP": ap,
        "AP50": 0.6703,
        "AP75": 0.3079,
        "AP_S": ap_s,
        "AP_M": 0.40,
        "AP_L": None,
        "AP_class_agnostic": ap + 0.1,
        "AP_per_class": per_class,
    }


@pytest.fixture
def two_runs(tmp_path):
    base = ExperimentRecord.create(
        tmp_path,
        hypothesis="3-scale RVT baseline",
        name="baseline",
        config={"model": {"fpn_scales": 3}},
        command=["evcmae-finetune", "x=1"],
    )
    base.write_metrics(fake_metrics(0.3402, 0.1728, {"pedestrian": 0.30, "car": 0.50, "tram": None}))
    size = ExperimentRecord.create(
        tmp_path,
        hypothesis="size-aware loss helps small objects",
        name="size-loss",
        config={"model": {"fpn_scales": 3}},
    )
    size.write_metrics(fake_metrics(0.3408, 0.1650, {"pedestrian": 0.3125, "car": 0.4950, "tram": 0.10}))
    return base, size


def test_record_round_trip(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    config = omegaconf.OmegaConf.create({"lr": 2e-4, "model": {"name": "rvt", "lr_copy": "${lr}"}})
    record = ExperimentRecord.create(
        tmp_path / "experiments", hypothesis="4-scale FPN helps", config=config, command=["train.py", "model=rvt 4"]
    )
    assert record.path.parent == tmp_path / "experiments"
    assert record.experiment_id.endswith("-4-scale-fpn-helps")
    record.set_checkpoint(tmp_path / "last.ckpt")
    loaded = load_record(record.path)
    assert loaded.config == {"lr": 2e-4, "model": {"name": "rvt", "lr_copy": 2e-4}}  # resolved
    assert loaded.command == "train.py 'model=rvt 4'"
    assert loaded.hypothesis == "4-scale FPN helps"
    assert loaded.checkpoint == str((tmp_path / "last.ckpt").resolve())
    assert loaded.metrics is None
    # automatic ids never collide; explicit ones are never overwritten
    again = ExperimentRecord.create(tmp_path / "experiments", hypothesis="4-scale FPN helps")
    assert again.path != record.path
    ExperimentRecord.create(tmp_path / "experiments", experiment_id="fixed")
    with pytest.raises(FileExistsError):
        ExperimentRecord.create(tmp_path / "experiments", experiment_id="fixed")


def test_record_holds_metrics_and_confusion(two_runs):
    base, _ = two_runs
    confusion = {
        "rows": ["a", "background"],
        "columns": ["a", "missed"],
        "matrix": [[1, 0], [2, 0]],
        "score_threshold": 0.3,
        "iou_threshold": 0.5,
    }
    base.write_metrics(base.metrics, confusion)
    loaded = load_record(base.path)
    assert loaded.metrics["AP"] == 0.3402
    assert loaded.confusion["matrix"] == [[1, 0], [2, 0]]
    for name in ("config.yaml", "command.txt", "metrics.json", "confusion_matrix.png", "summary.txt"):
        assert (base.path / name).exists(), name


def test_compare_deltas(two_runs):
    base, size = two_runs
    result = compare([load_run(size.path)], load_run(base.path))
    assert result["runs"] == [base.experiment_id, size.experiment_id]
    rows = result["sections"]["overall"]["rows"]
    assert rows[size.experiment_id]["AP"]["delta"] == pytest.approx(0.0006)
    assert rows[base.experiment_id]["AP"]["delta"] is None
    table = markdown(result)
    assert "| 34.08 (+0.06) |" in table
    assert "34.02 |" in table and "(baseline)" in table
    assert "16.50 (-0.78)" in table  # AP small
    assert "31.25 (+1.25)" in table  # pedestrian
    assert "49.50 (-0.50)" in table  # car
    assert "| 10.00 |" in table  # tram: no baseline value, so no difference
    assert table.count("| – |") == 3  # AP large in both runs, tram in the baseline
    assert "size-aware loss helps small objects" in table


def test_cli_markdown_and_json(two_runs, capsys):
    base, size = two_runs
    assert main([str(size.path), "--baseline", str(base.path)]) == 0
    out = capsys.readouterr().out
    assert "### Per class" in out and "34.08 (+0.06)" in out
    assert main([str(base.path), str(size.path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["baseline"] == base.experiment_id
    assert data["sections"]["class"]["rows"][base.experiment_id]["tram"]["value"] is None
    assert main([str(base.path / "nothing")]) == 2
