"""evcmae-probe on a pretraining export, a fine-tuning-style checkpoint and the references."""

import json

import pytest
import torch

from evcmae.backbones.sparse_resnet import SparseVoxelBackbone
from evcmae.pretrain.export import export_backbones
from evcmae.tools import probe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export(synth_tiny, tmp_path_factory):
    from evcmae.events.voxelize import Voxelizer

    torch.manual_seed(0)
    backbone = SparseVoxelBackbone(blocks=(1, 1, 1, 1)).truncate("x_conv3")
    out = tmp_path_factory.mktemp("export")
    export_backbones(out, backbone, backbone, Voxelizer(320, 180))
    return out, backbone


def test_probe_writes_rows_for_every_encoder(export, synth_tiny, tmp_path, capsys):
    out, _ = export
    rows = probe.run(
        probe.parser().parse_args(
            [
                str(out),
                "--data-root",
                str(synth_tiny),
                "--references",
                "--max-windows",
                "8",
                "--json",
                str(tmp_path / "p.json"),
            ]
        )
    )
    assert [r["encoder"] for r in rows] == ["pretrained", "untrained", "raw_features"]
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved == rows
    for row in rows:
        assert {"balanced_accuracy", "accuracy", "macro_f1", "boxes"} <= row.keys()
        assert 0 <= row["balanced_accuracy"] <= 1 and row["boxes"] > 10
    # the same windows for every encoder
    assert len({r["boxes"] for r in rows}) == 1
    tracks = rows[0]["tracks_per_class"]
    assert tracks and all(n >= 1 for n in tracks.values()) and sum(tracks.values()) <= rows[0]["boxes"]
    expected = ", ".join(f"{c}: {n}" for c, n in tracks.items())
    assert f"tracks per class (class index: tracks voted on): {expected}" in capsys.readouterr().out
    for row in rows:
        lo, hi = row["balanced_accuracy_ci95"]
        assert 0 <= lo <= hi <= 1
    for row in rows[1:]:  # each reference against the encoder under test, on the same boxes
        diff = row["pretrained_minus_this"]
        if diff is not None:
            assert diff["balanced_accuracy"] == pytest.approx(rows[0]["balanced_accuracy"] - row["balanced_accuracy"])
            assert diff["ci95"][0] <= diff["ci95"][1]


def test_probe_compares_encoders_on_the_same_boxes(export, synth_tiny, tmp_path):
    import shutil

    from evcmae.events.errors import ConfigError

    out, _ = export
    twin = shutil.copytree(out, tmp_path / "twin")
    args = [str(out), "--data-root", str(synth_tiny), "--max-windows", "8", "--compare", str(twin)]
    rows = probe.run(probe.parser().parse_args(args))
    assert [r["encoder"] for r in rows] == ["pretrained", "twin"]
    # The same weights vote the same on every box: the paired difference is exactly zero.
    assert rows[1]["pretrained_minus_this"] == {"balanced_accuracy": 0.0, "ci95": [0.0, 0.0]}
    clash = shutil.copytree(out, tmp_path / "pretrained")
    with pytest.raises(ConfigError, match="--compare"):
        probe.run(probe.parser().parse_args([*args[:-1], str(clash)]))


def test_probe_reads_a_finetuning_checkpoint_encoder(export, tmp_path):
    out, backbone = export
    state = {f"model.encoder.backbone.{k}": v for k, v in backbone.state_dict().items()}
    ckpt = tmp_path / "ft.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"data": {"width": 320, "height": 180}}}, ckpt)
    loaded, kwargs = probe.load_encoder(ckpt)
    assert list(loaded.stage_names) == ["x_conv1", "x_conv2", "x_conv3"]
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in backbone.state_dict().items())
