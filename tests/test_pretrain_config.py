"""The Hydra config tree composes for every group option and builds what it names."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf" / "pretrain"
COMMON = CONF.parent / "common"
GROUPS = {
    "data": ["demo", "tiny", "study", "bench", "etram", "gen1", "gen4"],
    "voxel": ["full", "half"],
    "backbone": ["default"],
    "masking": ["tube", "random", "block"],
    "loss": ["default"],
    "optim": ["adamw"],
    "trainer": ["default", "ddp"],
    "logger": ["csv", "wandb", "tensorboard"],
    "experiment": ["occupancy_only", "bench_gpu"],
}
PATHS = ["paths.root_dir=/r", "paths.output_dir=/r/out"]


def _compose(overrides, hydra_cfg=False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("pretrain", overrides=overrides, return_hydra_config=hydra_cfg)


def test_every_group_option_has_a_file():
    for group, options in GROUPS.items():
        folder = CONF / group if (CONF / group).is_dir() else COMMON / group
        on_disk = sorted(p.stem for p in folder.glob("*.yaml"))
        assert on_disk == sorted(options), group


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_group_option_composes_and_resolves(group, option):
    overrides = [*PATHS, f"{group}={option}"]
    if option in ("etram", "gen1", "gen4"):  # real datasets: data.root is required
        overrides.append(f"data.root=/data/{option}")
    cfg = _compose(overrides)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.model.objectives.keys() == {
        "occupancy",
        "reconstruction",
        "voxel_nce",
        "frame_contrastive",
        "rvt_stages",
    }
    assert {k: o.weight for k, o in cfg.model.objectives.items()} == dict(cfg.loss.weights)


def test_defaults_are_the_documented_ones():
    cfg = _compose(PATHS)
    assert dict(cfg.loss.weights) == {
        "occupancy": 1.0,
        "reconstruction": 1.0,
        "voxel_nce": 0.6,
        "frame_contrastive": 0.3,
        "rvt_stages": 1.0,  # the detector's RVT stages too
    }
    assert cfg.loss.temperature == 0.1
    objectives = cfg.loss.objectives
    assert objectives.voxel_nce.criterion.temperature == objectives.frame_contrastive.criterion.temperature == 0.1
    # every objective reads the scale the detector's encoder hands on, and scores hidden sites only
    assert {objectives[n].scale for n in ("occupancy", "voxel_nce", "frame_contrastive", "rvt_stages")} == {"x_conv3"}
    assert objectives.reconstruction.masked_only and objectives.voxel_nce.masked_only
    assert cfg.model.probe.scale == "x_conv3" and cfg.masking.patch_size == "auto"
    assert cfg.model.ema.init_share == 1e-3 and cfg.loss.balance.mode == "grad_norm"
    assert cfg.data.synth_preset == "demo" and cfg.masking.strategy == "tube"
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1
    assert cfg.callbacks.checkpoint.save_last is True
    ddp = _compose([*PATHS, "trainer=ddp", "trainer.num_nodes=3"])
    assert ddp.trainer.strategy._target_.endswith("DDPStrategy") and ddp.trainer.num_nodes == 3


def test_experiment_overrides_groups():
    cfg = _compose([*PATHS, "experiment=occupancy_only"])
    assert cfg.masking.strategy == "random"
    assert [k for k, v in cfg.loss.weights.items() if v] == ["occupancy"]


def test_model_and_data_instantiate():
    cfg = _compose([*PATHS, "data=tiny", "loss.weights.frame_contrastive=0"])
    module = instantiate(cfg.model)
    assert set(module.objectives) == {"occupancy", "reconstruction", "voxel_nce", "rvt_stages"}  # λ = 0: not built
    assert set(module.student) == {"backbone"}
    # no objective reads x_conv4, so the backbone stops at x_conv3: nothing untrained is exported
    assert module.until == "x_conv3" and not hasattr(module.backbone, "conv4")
    assert all(not p.requires_grad for p in module.teacher.parameters())
    assert all(not p.requires_grad for p in module.objectives["voxel_nce"].teacher_head.parameters())
    dm = instantiate(cfg.data)
    assert dm.voxelizer.spatial_shape == (10, 180, 320) and dm.root == Path("/r/data/tiny")


@pytest.mark.parametrize("launcher", ["basic", "submitit_local", "submitit_slurm", "slurm_gpu"])
def test_launchers_compose(launcher):
    cfg = _compose(
        [*PATHS, f"hydra/launcher={launcher}", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
        hydra_cfg=True,
    )
    if launcher == "slurm_gpu":
        launcher_cfg = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
        assert launcher_cfg["gpus_per_node"] == "${trainer.devices}"
        assert cfg.trainer.devices == 4 and cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.num}"  # one folder per job


def test_wandb_goes_offline_without_a_key(tmp_path, monkeypatch, capsys):
    from evcmae.pretrain.loggers import wandb_api_key_configured, wandb_logger

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not wandb_api_key_configured()
    logger = wandb_logger(save_dir=str(tmp_path))
    assert logger._offline
    assert "offline" in capsys.readouterr().out
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / "netrc").chmod(0o600)
    assert wandb_api_key_configured()
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_api_key_configured()
