"""RVT checkpoints: the rename against names and shapes read off RVT's source, strict loading of
tiny / small / base, and identical outputs after conversion."""

import re

import pytest
import torch

from evcmae.finetune.encoder import EventDetector
from evcmae.finetune.module import FinetuneModule
from evcmae.finetune.rvt_checkpoint import (
    RVTCheckpointError,
    convert,
    infer_architecture,
    load_detector_weights,
    load_rvt,
    rvt_name,
)

torch.set_num_threads(1)

# Names and shapes of RVT-tiny (3 classes, 20 input channels), written out from RVT's module code
# (RNNDetectorStage, PartitionAttentionCl, MLP, DWSConvLSTM2d, YOLOPAFPN, CSPLayer, YOLOXHead):
# stage widths 32/64/128/256, PAFPN inputs (64, 128, 256), head width 256 * 256 / 1024 = 64.
RVT_TINY_SHAPES = {
    "backbone.stages.0.downsample_cf2cl.conv.weight": (32, 20, 7, 7),
    "backbone.stages.1.downsample_cf2cl.conv.weight": (64, 32, 3, 3),
    "backbone.stages.1.downsample_cf2cl.norm.bias": (64,),
    "backbone.stages.0.att_blocks.0.att_window.self_attn.qkv.weight": (96, 32),
    "backbone.stages.0.att_blocks.0.att_window.self_attn.proj.bias": (32,),
    "backbone.stages.3.att_blocks.0.att_grid.norm1.weight": (256,),
    "backbone.stages.2.att_blocks.0.att_window.mlp.net.0.0.weight": (512, 128),
    "backbone.stages.2.att_blocks.0.att_grid.mlp.net.2.weight": (128, 512),
    "backbone.stages.1.att_blocks.0.att_window.ls1.gamma": (64,),
    "backbone.stages.1.att_blocks.0.att_grid.ls2.gamma": (64,),
    "backbone.stages.3.lstm.conv1x1.weight": (1024, 512, 1, 1),
    "fpn.lateral_conv0.conv.weight": (128, 256, 1, 1),
    "fpn.C3_p4.conv1.conv.weight": (64, 256, 1, 1),
    "fpn.reduce_conv1.conv.weight": (64, 128, 1, 1),
    "fpn.C3_p3.conv3.conv.weight": (64, 64, 1, 1),
    "fpn.bu_conv2.conv.weight": (64, 64, 3, 3),
    "fpn.C3_n3.conv3.conv.weight": (128, 128, 1, 1),
    "fpn.bu_conv1.conv.weight": (128, 128, 3, 3),
    "fpn.C3_n4.m.0.conv2.conv.weight": (128, 128, 3, 3),
    "fpn.C3_n4.conv2.bn.running_var": (128,),
    "yolox_head.stems.2.conv.weight": (64, 256, 1, 1),
    "yolox_head.cls_convs.1.0.conv.weight": (64, 64, 3, 3),
    "yolox_head.reg_convs.0.1.bn.num_batches_tracked": (),
    "yolox_head.cls_preds.0.weight": (3, 64, 1, 1),
    "yolox_head.obj_preds.2.bias": (1,),
}
# Not in RVT: the first block's window attention follows the downsample's LayerNorm (no norm1),
# and the LSTM's depthwise conv is off in RVT's configs.
RVT_ABSENT = ("backbone.stages.0.att_blocks.0.att_window.norm1.weight", "backbone.stages.0.lstm.conv3x3_dws.weight")
# RVT's parameter counts (3 classes), as its paper and the issue state.
PARAMETERS = {"tiny": 4_405_336, "small": 9_870_456, "base": 18_536_856}


def randomized(model):
    """Every tensor random (BatchNorm statistics included), so a misplaced tensor shows."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=generator) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=generator) * 0.2)
    return model.eval()


def rvt_checkpoint(model, path):
    """An RVT-style Lightning checkpoint of ``model``'s weights: RVT's names under ``mdl.``."""
    state = {f"mdl.{rvt_name(k)}": v.clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 9, "global_step": 400_000}, path)
    return state


def test_rename_matches_names_and_shapes_from_rvt_source():
    model = EventDetector("histogram", "tiny", 3, 360, 640)
    renamed = {rvt_name(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(renamed) == len(model.state_dict()) == 376  # one to one
    for key, shape in RVT_TINY_SHAPES.items():
        assert renamed.get(key) == shape, key
    for key in RVT_ABSENT:
        assert key not in renamed
    with pytest.raises(KeyError, match="sparse encoder"):
        rvt_name("encoder.backbone.conv_input.0.weight")


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_parameter_counts_are_rvts(size):
    model = EventDetector("histogram", size, 3, 360, 640)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[size]


@pytest.mark.parametrize("size", ["tiny", *(pytest.param(s, marks=pytest.mark.slow) for s in ("small", "base"))])
def test_converted_checkpoint_gives_the_same_outputs(size, tmp_path, capsys):
    # Gen1: 2 classes at 304x240 with RVT's partition split 1 (the converter picks both)
    original = randomized(EventDetector("histogram", size, 2, 240, 304, partition_split=1))
    rvt_checkpoint(original, tmp_path / "rvt.ckpt")
    report = convert(tmp_path / "rvt.ckpt", tmp_path / "out.ckpt")
    n = len(original.state_dict())  # 376 tensors (424 for base: two bottlenecks per CSP layer)
    assert (report["size"], report["dataset"], report["loaded"], report["total"]) == (size, "gen1", n, n)
    assert f"loaded {report['loaded']} of {report['total']} tensors" in capsys.readouterr().out

    module = FinetuneModule.load_from_checkpoint(tmp_path / "out.ckpt", map_location="cpu").eval()
    assert module.hparams.data["classes"] == "gen1" and module.hparams.data["root"] is None
    assert module.model.detector.backbone.partition_size == (8, 10)  # RVT's Gen1 partition
    x = torch.randint(0, 6, (1, 20, 240, 304)).float()
    with torch.no_grad():
        expected, states = original(x)
        got, got_states = module.model(x)
        # the recurrence too: a second window from the carried states
        expected2, _ = original(x.flip(-1), states)
        got2, _ = module.model(x.flip(-1), got_states)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(got2, expected2, rtol=0, atol=0)


def test_rvt_checkpoint_loads_directly_and_as_finetuning_start(tmp_path):
    original = randomized(EventDetector("histogram", "tiny", 3, 360, 640))
    rvt_checkpoint(original, tmp_path / "rvt.ckpt")
    module, report = load_rvt(tmp_path / "rvt.ckpt", verbose=False)
    assert report["dataset"] == "gen4" and module.classes == "gen4" and module.hparams.data["downsample"] == 2
    fresh = EventDetector("histogram", "tiny", 3, 360, 640)
    assert load_detector_weights(fresh, tmp_path / "rvt.ckpt", verbose=False) == {"loaded": 376, "total": 376}
    for name, tensor in original.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
        assert torch.equal(module.model.state_dict()[name], tensor), name


def test_strict_errors_name_the_file(tmp_path):
    model = EventDetector("histogram", "tiny", 3, 360, 640)
    state = rvt_checkpoint(model, tmp_path / "ok.ckpt")
    broken = dict(state)
    del broken["mdl.fpn.C3_p4.conv1.conv.weight"]
    broken["mdl.backbone.stages.0.lstm.conv3x3_dws.weight"] = torch.zeros(32, 1, 3, 3)
    torch.save({"state_dict": broken}, tmp_path / "broken.ckpt")
    with pytest.raises(
        RVTCheckpointError, match=r"broken\.ckpt.*1 missing: fpn\.C3_p4\.conv1\.conv\.weight.*1 unexpected"
    ):
        load_rvt(tmp_path / "broken.ckpt", verbose=False)
    wrong = dict(state)
    wrong["mdl.yolox_head.stems.0.conv.weight"] = torch.zeros(64, 63, 1, 1)
    torch.save({"state_dict": wrong}, tmp_path / "wrong.ckpt")
    with pytest.raises(RVTCheckpointError, match=r"wrong\.ckpt.*shape mismatch: yolox_head\.stems\.0\.conv\.weight"):
        load_rvt(tmp_path / "wrong.ckpt", verbose=False)
    torch.save({"state_dict": {"model.x": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(RVTCheckpointError, match=r"other\.ckpt: not an RVT checkpoint"):
        load_rvt(tmp_path / "other.ckpt", verbose=False)
    with pytest.raises(RVTCheckpointError, match="3 classes but data=gen1 has 2"):
        load_rvt(tmp_path / "ok.ckpt", dataset="gen1", verbose=False)
    four_scales = EventDetector("histogram", "tiny", 3, 360, 640, fpn_stages=(1, 2, 3, 4))
    with pytest.raises(RVTCheckpointError, match=r"ok\.ckpt: the detector is not RVT's architecture.*3 levels"):
        load_detector_weights(four_scales, tmp_path / "ok.ckpt", verbose=False)


def test_architecture_read_from_shapes():
    for size, embed in (("tiny", 32), ("small", 48), ("base", 64)):
        state = {rvt_name(k): v for k, v in EventDetector("histogram", size, 8, 360, 640).state_dict().items()}
        arch = infer_architecture(state)
        assert (arch["size"], arch["num_classes"], arch["in_channels"]) == (size, 8, 20), embed
        assert arch["fpn_depth"] == (0.67 if size == "base" else 0.33)


def test_convert_cli(tmp_path, capsys):
    from evcmae.tools.convert_rvt import main

    rvt_checkpoint(EventDetector("histogram", "tiny", 3, 360, 640), tmp_path / "rvt.ckpt")
    assert main([str(tmp_path / "rvt.ckpt"), str(tmp_path / "out.ckpt"), "--dataset", "etram3"]) == 0
    out = capsys.readouterr().out
    assert "loaded 376 of 376 tensors" in out and "data=etram3" in out
    module = FinetuneModule.load_from_checkpoint(tmp_path / "out.ckpt", map_location="cpu")
    assert module.classes == "etram3" and module.hparams.data["class_map"] == [0, 1, 2, 1, 2, 1, 1, 2]
    assert main([str(tmp_path / "rvt.ckpt"), str(tmp_path / "x.ckpt"), "--dataset", "nope"]) == 2
    assert "no data config 'nope'" in capsys.readouterr().err


def test_finetuning_starts_from_a_converted_checkpoint(tmp_path, capsys):
    """evcmae-finetune model=histogram data=gen1 model.pretrained=OUT.ckpt: every tensor loaded."""
    from evcmae.tools.demo import _compose
    from evcmae.tools.finetune import load_start
    from evcmae.tools.pretrain import build

    original = randomized(EventDetector("histogram", "tiny", 2, 240, 304, partition_split=1))
    rvt_checkpoint(original, tmp_path / "rvt.ckpt")
    convert(tmp_path / "rvt.ckpt", tmp_path / "out.ckpt")
    (tmp_path / "gen1").mkdir()  # the config check wants the data root to exist
    for source in ("out.ckpt", "rvt.ckpt"):  # the converted file, and RVT's own
        cfg = _compose(
            "finetune",
            [
                "data=gen1",
                f"data.root={tmp_path}/gen1",
                "model=histogram",
                f"model.pretrained={tmp_path / source}",
                f"paths.log_dir={tmp_path}/logs",
                "logger=csv",
            ],
            tmp_path / "run",
        )
        _, module, _ = build(cfg)
        load_start(module, cfg.model)  # what evcmae-finetune does before fitting
        assert "loaded 376 of 376" in capsys.readouterr().out
        assert module.model.detector.backbone.partition_size == (8, 10)  # RVT's Gen1 attention partition
        for name, tensor in original.state_dict().items():
            assert torch.equal(module.model.state_dict()[name], tensor), (source, name)


def test_evaluate_asks_for_the_data_of_an_rvt_checkpoint(tmp_path, capsys):
    from evcmae.tools.evaluate import main

    rvt_checkpoint(EventDetector("histogram", "tiny", 3, 360, 640), tmp_path / "rvt.ckpt")
    assert main([f"checkpoint={tmp_path / 'rvt.ckpt'}", "split=test"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"rvt\.ckpt does not say where its data is: add data\.root=", err) and len(err.splitlines()) == 1
