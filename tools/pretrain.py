"""evcmae-pretrain: self-supervised pretraining of the sparse voxel backbone (Hydra entry point).

    evcmae-pretrain                                   # demo preset, generated on first use
    evcmae-pretrain data=tiny trainer.max_steps=20 logger=wandb
    evcmae-pretrain trainer=ddp trainer.accelerator=cpu trainer.devices=2      # DDP over gloo
    evcmae-pretrain -m loss.weights.voxel_nce=0,0.3,0.6 data=tiny trainer.max_steps=30
    evcmae-pretrain -m hydra/launcher=slurm_gpu trainer=ddp trainer.devices=4 loss.temperature=0.07,0.1,0.2
    evcmae-sweep-summary outputs/multiruns/<time>                      # one table for the sweep
    evcmae-pretrain ckpt_path=last hydra.run.dir=outputs/runs/<run>   # resume that run (same settings)

Each run writes into its own folder (outputs/runs/<time>, sweeps outputs/multiruns/<time>/<n>):
the composed config (.hydra/), checkpoints/, csv/ logs, final_metrics.json and the exported
backbone (teacher_backbone.pt, student_backbone.pt, backbone.json). The wiring is all in conf/.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from evcmae.tools.cli import entry
from evcmae.tools.config_checks import check_pretrain_config


def config_dir(app: str = "pretrain") -> str:
    """The Hydra config folder of one app (``pretrain``, ``finetune`` or ``study``), inside
    ``evcmae.conf``: conf/<app>/ of the checkout under an editable install, the installed copy
    otherwise. Groups shared by the apps live in conf/common/, on each app's search path."""
    import evcmae.conf

    return str(Path(evcmae.conf.__file__).resolve().parent / app)


def build(cfg: DictConfig, extra_callbacks=(), check=None):
    """(datamodule, module, trainer) from a composed config (pretraining's or fine-tuning's); seeds
    first, so weights are reproducible. ``check`` validates the config first; by default the rules
    of the app the config belongs to (a fine-tuning config has no ``loss``); ``False`` when the
    caller has checked it already."""
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    if check is None:
        from evcmae.tools.config_checks import check_finetune_config

        check = check_pretrain_config if "loss" in cfg else check_finetune_config
    if check is not False:
        check(cfg)  # before any work: a bad value is one line, not a crash later
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None and "_target_" in c]
    callbacks += list(extra_callbacks)
    if cfg.trainer.get("enable_progress_bar") is False:  # no bar asked for: the loss bar goes too
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return datamodule, module, trainer


def run(cfg: DictConfig, extra_callbacks=()) -> dict:
    """Pretrain, validate once more (the final probe), and return the final metrics."""
    from evcmae.pretrain.callbacks import BackboneExport, FinalMetrics

    start = time.perf_counter()
    datamodule, module, trainer = build(cfg, extra_callbacks)
    ckpt = cfg.get("ckpt_path")
    if ckpt == "last" and not any(Path(cfg.paths.output_dir, "checkpoints").glob("last*.ckpt")):
        print(
            f"evcmae: ckpt_path=last but {cfg.paths.output_dir}/checkpoints holds no last.ckpt; "
            "starting from scratch (point hydra.run.dir at the run to resume)"
        )
        ckpt = None
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    if cfg.get("final_validation", True) and datamodule.val_set is not None and len(datamodule.val_set):
        trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = next((c.metrics for c in trainer.callbacks if isinstance(c, FinalMetrics)), {})
    export = next((c for c in trainer.callbacks if isinstance(c, BackboneExport)), None)
    if trainer.is_global_zero:
        shown = ", ".join(
            f"{k} {v:.4g}"
            for k, v in metrics.items()
            if isinstance(v, float) and k.split("/")[0] in ("train", "probe") and k.split("/")[-1] != "nonfinite_steps"
        )
        print(f"evcmae: {trainer.global_step} steps in {time.perf_counter() - start:.0f} s; {shown}")
        if export is not None and export.paths:
            print(
                f"evcmae: pretrained backbone (fine-tune from the teacher): {export.paths['teacher']}\n"
                f"        config: {export.paths['config']}"
            )
    return metrics


@entry("evcmae-pretrain")
@hydra.main(version_base="1.3", config_path=config_dir("pretrain"), config_name="pretrain")
def main(cfg: DictConfig) -> float | None:
    return run(cfg).get("probe/knn_acc")  # what a Hydra sweeper (e.g. Optuna) would optimise


if __name__ == "__main__":
    main()
