"""Configs are checked before any work starts: a value that cannot work is a ConfigError naming the
key (or a LabelFileError naming the file), raised by ``build`` before the trainer exists."""

import shutil

import numpy as np
import pytest
import torch
from config_helpers import tiny_pretrain_config
from hydra.core.global_hydra import GlobalHydra

from evcmae.backbones.sparse_resnet import SparseVoxelBackbone
from evcmae.events.errors import ConfigError, LabelFileError, OutputFolderError
from evcmae.events.labels import load_labels, save_labels
from evcmae.pretrain.export import export_backbones
from evcmae.tools import pretrain as pretrain_tool
from evcmae.tools.config_checks import check_finetune_config, check_pretrain_config

torch.set_num_threads(1)


pretrain_cfg = tiny_pretrain_config


def finetune_cfg(root, out, *overrides):
    from evcmae.tools.demo import _compose

    GlobalHydra.instance().clear()
    return _compose("finetune", ["data=tiny", f"data.root={root}", f"paths.log_dir={out}", *overrides], out / "run")


@pytest.mark.parametrize(
    "override, key, problem",
    [
        ("masking.ratio=0", "masking.ratio", r"must be in \(0, 1\)"),
        ("masking.ratio=1.0", "masking.ratio", r"must be in \(0, 1\)"),
        ("loss.weights.voxel_nce=-0.6", "loss.weights.voxel_nce", "must be >= 0"),
        ("loss.temperature=0", "loss.temperature", "must be > 0"),
        ("optim.optimizer.lr=-1e-3", "optim.optimizer.lr", "must be > 0"),
        ("optim.warmup_fraction=1.5", "optim.warmup_fraction", r"must be in \[0, 1\)"),
        ("trainer.max_steps=0", "trainer.max_steps", "must be -1 or a positive integer"),
        ("data.batch_size=0", "data.batch_size", "must be a positive integer"),
        ("data.window_us=5", "data.window_us", ">= data.num_bins"),
        ("masking.patch_size=[16]", "masking.patch_size", "two positive integers"),
    ],
)
def test_pretrain_values_that_cannot_work(synth_tiny, tmp_path, override, key, problem):
    cfg = pretrain_cfg(synth_tiny, tmp_path, override)
    with pytest.raises(ConfigError, match=problem) as err:
        check_pretrain_config(cfg)
    assert err.value.key == key and str(err.value).startswith(f"{key}=")


def test_all_zero_loss_weights(synth_tiny, tmp_path):
    zero = [
        f"loss.weights.{t}=0" for t in ("occupancy", "reconstruction", "voxel_nce", "frame_contrastive", "rvt_stages")
    ]
    with pytest.raises(ConfigError, match="loss.weights=.*all zero: nothing to train"):
        check_pretrain_config(pretrain_cfg(synth_tiny, tmp_path, *zero))


def test_the_shipped_configs_pass(synth_tiny, tmp_path):
    check_pretrain_config(pretrain_cfg(synth_tiny, tmp_path))
    check_finetune_config(finetune_cfg(synth_tiny, tmp_path))


def test_sensor_size_against_the_data(synth_tiny, tmp_path):
    cfg = pretrain_cfg(synth_tiny, tmp_path, "data.width=640", "data.height=360")
    with pytest.raises(ConfigError, match=r"data.width/height=640x360: .*_td.h5 is a 320x180 recording"):
        check_pretrain_config(cfg)


def test_missing_resume_checkpoint(synth_tiny, tmp_path):
    cfg = pretrain_cfg(synth_tiny, tmp_path, f"ckpt_path={tmp_path / 'nope.ckpt'}")
    with pytest.raises(ConfigError, match="ckpt_path=.*nope.ckpt: no such checkpoint file"):
        check_pretrain_config(cfg)


def test_unwritable_checkpoint_folder_is_found_before_step_0(synth_tiny, tmp_path):
    """Read-only for everyone (root included): a file where the folder's parent should be."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    cfg = pretrain_cfg(synth_tiny, tmp_path, f"callbacks.checkpoint.dirpath={blocker}/checkpoints")
    with pytest.raises(OutputFolderError, match=r"not_a_folder/checkpoints: the checkpoint folder cannot be written"):
        pretrain_tool.build(cfg)  # used to fail at the first save, 100 steps in


# -- fine-tuning ---------------------------------------------------------------------------------
@pytest.fixture
def tiny_copy(synth_tiny, tmp_path):
    root = tmp_path / "tiny"
    shutil.copytree(synth_tiny, root)
    return root


def test_class_ids_beyond_num_classes_name_file_and_id(tiny_copy, tmp_path):
    bbox = sorted((tiny_copy / "train").glob("*_bbox.npy"))[1]
    labels = load_labels(bbox)
    labels["class_id"][7] = 11
    save_labels(bbox, labels)
    with pytest.raises(
        LabelFileError,
        match=rf"{bbox.name}: class_id \(row 7\): class id 11 has no class: the number of data.classes is 8",
    ):
        check_finetune_config(finetune_cfg(tiny_copy, tmp_path))


def test_class_map_entries_beyond_num_classes(synth_tiny, tmp_path):
    cfg = finetune_cfg(synth_tiny, tmp_path, "data.class_map=[0,1,2,1,2,1,1,3]", "data.classes=etram3")
    with pytest.raises(ConfigError, match=r"data.class_map=.*entries must be class ids 0..2"):
        check_finetune_config(cfg)


@pytest.mark.parametrize(
    "override, key",
    [("data.label_fraction=0", "data.label_fraction"), ("model.encoder_mode=thaw", "model.encoder_mode")],
)
def test_finetune_values_that_cannot_work(synth_tiny, tmp_path, override, key):
    with pytest.raises(ConfigError) as err:
        check_finetune_config(finetune_cfg(synth_tiny, tmp_path, override))
    assert err.value.key == key


@pytest.fixture
def narrow_export(tmp_path):
    """A pretraining export whose backbone is narrower than the default one."""
    student, teacher = SparseVoxelBackbone(channels=(8, 16, 24, 32)), SparseVoxelBackbone(channels=(8, 16, 24, 32))
    export_backbones(tmp_path / "export", student, teacher)
    return tmp_path / "export"


def test_explicit_backbone_channels_are_not_silently_replaced(synth_tiny, tmp_path, narrow_export):
    cfg = finetune_cfg(synth_tiny, tmp_path, f"model.pretrained={narrow_export}", "backbone.channels=[16,32,64,128]")
    with pytest.raises(
        ConfigError,
        match=r"backbone.channels=\[16, 32, 64, 128\]: the pretrained encoder .* channels=\[8, 16, 24, 32\]",
    ):
        check_finetune_config(cfg)


def test_backbone_not_given_follows_the_pretrained_encoder(synth_tiny, tmp_path, narrow_export):
    from evcmae.tools.finetune import pretrained_overrides, with_overrides
    from evcmae.tools.pretrain import build

    cfg = finetune_cfg(synth_tiny, tmp_path, f"model.pretrained={narrow_export}", "trainer.max_steps=1")
    _, module, _ = build(with_overrides(cfg, pretrained_overrides(cfg.model)))  # as evcmae-finetune does
    assert list(module.model.encoder.backbone.channels) == [8, 16, 24]  # the export's widths, cut at x_conv3


def test_label_file_with_a_nan_box_is_named_before_training(tiny_copy, tmp_path):
    bbox = sorted((tiny_copy / "val").glob("*_bbox.npy"))[0]
    labels = np.load(bbox)
    labels["w"][3] = np.nan
    np.save(bbox, labels)
    with pytest.raises(LabelFileError, match=rf"{bbox.name}: w \(row 3\): not a number"):
        check_finetune_config(finetune_cfg(tiny_copy, tmp_path))
