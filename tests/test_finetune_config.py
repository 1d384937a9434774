"""The fine-tuning config tree: every option composes, Hydra builds data and model from their
_target_, the one voxel group reaches pretraining data, fine-tuning data and the detector, and a
pretrained export's settings come back as overrides."""

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from evcmae.backbones.batchnorm import batchnorms
from evcmae.pretrain.checkpointing import newest_loadable
from evcmae.tools.finetune import pretrained_overrides, with_overrides
from evcmae.tools.pretrain import config_dir

GROUPS = {
    "data": ["demo", "tiny", "study", "bench"],
    "model": ["sparse", "histogram"],
    "voxel": ["full", "half"],
    "backbone": ["default"],
    "trainer": ["default", "ddp"],
    "logger": ["csv", "wandb", "tensorboard"],
}
PATHS = ["paths.root_dir=/r", "paths.output_dir=/r/out"]


def _compose(app, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(app), version_base="1.3"):
        return compose(app, overrides=[*PATHS, *overrides])


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_group_option_composes_and_resolves(group, option):
    cfg = _compose("finetune", f"{group}={option}")
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.model._target_.endswith("FinetuneModule") and cfg.data._target_.endswith("FinetuneDataModule")


@pytest.mark.parametrize(
    "data,downsample", [("demo", 2), ("tiny", 1), ("study", 1), ("bench", 1)], ids=["demo", "tiny", "study", "bench"]
)
def test_each_preset_picks_its_voxel_grid_for_data_and_model(data, downsample):
    for app in ("finetune", "pretrain"):
        cfg = _compose(app, f"data={data}")
        assert cfg.voxel.downsample == cfg.data.downsample == downsample, app
    cfg = _compose("finetune", f"data={data}", "voxel.num_bins=5", "voxel=half")
    assert cfg.data.num_bins == cfg.model.voxel.num_bins == 5
    assert cfg.data.downsample == cfg.model.voxel.downsample == 2  # the command line beats the preset
    pre = _compose("pretrain", f"data={data}", "voxel.num_bins=5")
    assert pre.data.num_bins == 5


def test_data_and_model_are_built_by_hydra_and_agree():
    cfg = _compose("finetune", "data=tiny", "voxel.downsample=2", "data.classes=etram3")
    datamodule, module = instantiate(cfg.data), instantiate(cfg.model)
    detector = module.model
    assert datamodule.frame_hw == (detector.height, detector.width) == (90, 160)
    assert detector.encoder.grid == datamodule.voxelizer.spatial_shape == (10, 90, 160)
    assert detector.num_classes == len(datamodule.class_names) == 3
    assert module.hparams.data == OmegaConf.to_container(cfg.data, resolve=True)  # stored for evaluation
    assert datamodule.eval_config.min_box_diag == cfg.data.eval.min_box_diag == 8.0
    histogram = instantiate(_compose("finetune", "data=tiny", "model=histogram").model)
    assert histogram.model.encoder is None and (histogram.model.height, histogram.model.width) == (180, 320)


def test_bn_eps_option_reaches_the_detector_and_its_checkpoint_but_not_the_encoder():
    def eps_of(module):
        return {m.eps for m in batchnorms(module)}

    default = instantiate(_compose("finetune", "data=tiny").model)
    assert eps_of(default.model.detector) == {1e-5}
    module = instantiate(_compose("finetune", "data=tiny", "model.detector.bn_eps=1e-3").model)
    assert eps_of(module.model.detector) == {1e-3}
    assert eps_of(module.model.encoder) == eps_of(default.model.encoder) == {1e-3}  # the sparse backbone's own
    assert module.hparams.detector["bn_eps"] == 1e-3  # a checkpoint rebuilds the same layers


def test_data_module_refuses_unknown_keys_and_bad_class_maps():
    cfg = _compose("finetune", "data=tiny")
    with pytest.raises(InstantiationException, match="unexpected keyword argument 'no_such_key'"):
        instantiate(cfg.data, no_such_key=1)
    with pytest.raises(InstantiationException, match="data.class_map sends labels to class 5, but data.classes"):
        instantiate(cfg.data, classes="etram3", class_map=[0, 1, 5])


def _export(folder, **voxelizer):
    folder.mkdir()
    backbone = {"in_channels": 3, "channels": [8, 16, 32, 64], "blocks": [1, 1, 1, 1], "strides": [[1, 1, 1]] * 4}
    config = {"backbone": {"class": "SparseVoxelBackbone", **backbone}, "voxelizer": {"width": 640, **voxelizer}}
    (folder / "backbone.json").write_text(json.dumps(config))
    return folder


def test_pretrained_overrides_adopt_the_exports_backbone_and_voxel_grid(tmp_path):
    export = _export(tmp_path / "run", window_us=40000, num_bins=5, downsample=2, voxel_size=[1, 1])
    cfg = _compose("finetune", "data=tiny", f"model.pretrained={export}")
    overrides = pretrained_overrides(cfg.model)
    assert overrides == [
        "backbone.in_channels=3",
        "backbone.channels=[8, 16, 32, 64]",
        "backbone.blocks=[1, 1, 1, 1]",
        "backbone.strides=[[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]",
        "voxel.window_us=40000",
        "voxel.num_bins=5",
        "voxel.downsample=2",
        "voxel.voxel_size=[1, 1]",
    ]
    adopted = with_overrides(cfg, overrides)
    assert cfg.voxel.downsample == 1 and cfg.backbone.channels == [16, 32, 64, 128]  # not mutated
    assert adopted.data.window_us == adopted.model.voxel.window_us == 40000
    assert adopted.data.num_bins == 5 and adopted.data.downsample == 2
    assert adopted.model.detector.backbone.channels == [8, 16, 32, 64]
    # The same overrides compose on the command line.
    composed = _compose("finetune", "data=tiny", *overrides)
    assert OmegaConf.to_container(composed.voxel) == OmegaConf.to_container(adopted.voxel)
    assert pretrained_overrides(_compose("finetune").model) == []
    with pytest.raises(ValueError, match="model=histogram"):
        pretrained_overrides(_compose("finetune", "model=histogram", f"model.pretrained={export}").model)


@pytest.mark.parametrize(
    "app,own,foreign",
    [
        (
            "finetune",
            ["data: bench, demo, etram, etram3, gen1, gen4, study, tiny", "model: histogram, sparse"],
            "masking",
        ),
        (
            "pretrain",
            ["masking: block, random, tube", "data: bench, demo, etram, gen1, gen4, study, tiny"],
            "model: histogram",
        ),
    ],
)
def test_help_lists_the_apps_own_groups(app, own, foreign):
    proc = subprocess.run(
        [sys.executable, "-m", f"evcmae.tools.{app}", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for line in own:
        assert line in proc.stdout
    assert foreign not in proc.stdout


@pytest.mark.parametrize("keep", [False, True])
def test_last_ckpt_is_the_latest_validation_and_best_the_best(tmp_path, keep):
    """The configured checkpoint callbacks on a toy model whose val/AP only falls: best-step=2 is
    the best, and last.ckpt holds the final step (what ckpt_path=last resumes), not a copy of
    the best (Lightning's save_last on the monitored callback alone would make it one). With
    callbacks.validations.keep=true every validation also leaves step=N.ckpt, weights only."""
    import pytorch_lightning as pl
    import torch

    class Falling(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, _):
            return (self.w - batch).pow(2).mean()

        def validation_step(self, batch, _):
            self.log("val/AP", 1.0 / self.global_step)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cfg = _compose("finetune", f"paths.output_dir={tmp_path}", f"callbacks.validations.keep={keep}")
    callbacks = [instantiate(cfg.callbacks[name]) for name in ("checkpoint", "last", "validations")]
    loader = torch.utils.data.DataLoader(torch.ones(8, 1), batch_size=1)
    trainer = pl.Trainer(
        max_steps=6,
        val_check_interval=2,  # not 1: Lightning reads that as once per epoch
        limit_val_batches=1,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Falling(), loader, loader)
    folder = tmp_path / "checkpoints"
    saved = sorted(p.name for p in folder.iterdir())
    every = ["step=2.ckpt", "step=4.ckpt", "step=6.ckpt"] if keep else []
    assert saved == sorted(["best-step=2.ckpt", "last.ckpt", *every])
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 6
    for name in every:
        ckpt = torch.load(folder / name, weights_only=False)
        assert ckpt["global_step"] == int(name[5:-5]) and "optimizer_states" not in ckpt
    if keep:  # a damaged last.ckpt resumes from a checkpoint that can resume, not a weights-only one
        (folder / "step=6.ckpt").touch()
        assert newest_loadable(folder, exclude=[folder / "last.ckpt"])[0].name == "best-step=2.ckpt"
