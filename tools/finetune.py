"""evcmae-finetune: fine-tune the RVT/YOLOX detector on the pretrained sparse encoder (Hydra).

    evcmae-finetune                                                   # demo preset, from scratch
    evcmae-finetune model.pretrained=outputs/runs/<run>               # from a pretraining export
    evcmae-finetune model.pretrained=outputs/runs/<run>/checkpoints/last.ckpt model.encoder_mode=freeze
    evcmae-finetune model=histogram                    # the stacked-histogram baseline
    evcmae-finetune data=tiny trainer.max_steps=20
    evcmae-finetune -m data.label_fraction=0.1,0.5,1.0                # label efficiency

Each run writes checkpoints/ (best by val/AP, and last), csv/ logs and an experiment record
(config, command, metrics.json, summary, confusion matrix, checkpoint pointer) under
``record.root``. The encoder's shapes come from the pretrained export's backbone.json, and so
do the voxel grid settings (num_bins, downsample, voxel size, window), which must match.
"""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from evcmae.tools.cli import entry
from evcmae.tools.config_checks import check_finetune_config
from evcmae.tools.pretrain import config_dir

VOXEL_KEYS = {"window_us": "window_us", "num_bins": "num_bins", "downsample": "downsample", "voxel_size": "voxel_size"}


def _adopt_pretrained_config(cfg: DictConfig) -> None:
    """Backbone shapes and voxel grid from the pretrained source, so the weights fit and mean
    what they meant in pretraining."""
    from evcmae.finetune.transfer import backbone_config

    kwargs, voxelizer = backbone_config(cfg.model.pretrained, cfg.model.pretrained_which)
    with open_dict(cfg):
        cfg.backbone = OmegaConf.create({"_target_": "evcmae.backbones.sparse_resnet.SparseVoxelBackbone", **kwargs})
        for src, dst in VOXEL_KEYS.items():
            if voxelizer and src in voxelizer and cfg.data.get(dst) != voxelizer[src]:
                print(
                    f"evcmae: data.{dst}={cfg.data.get(dst)} -> {voxelizer[src]} (the pretrained encoder's voxel grid)"
                )
                cfg.data[dst] = voxelizer[src]


def build_module(cfg: DictConfig, datamodule):
    from evcmae.finetune.module import FinetuneModule

    m = cfg.model
    model = dict(
        input=m.input,
        size=m.size,
        num_classes=int(cfg.data.num_classes),
        fpn_stages=list(m.fpn_stages),
        size_aware=OmegaConf.to_container(m.size_aware) if OmegaConf.is_config(m.size_aware) else m.size_aware,
    )
    h, w = datamodule.frame_hw
    model.update(height=h, width=w, partition_split=int(cfg.data.get("partition_split", 2)))
    if m.input == "sparse":
        backbone = {k: v for k, v in OmegaConf.to_container(cfg.backbone, resolve=True).items() if k != "_target_"}
        model.update(grid=list(datamodule.voxelizer.spatial_shape), backbone=backbone, output=m.output)
    evalcfg = {
        **OmegaConf.to_container(cfg.eval, resolve=True),
        **OmegaConf.to_container(cfg.data.get("eval", {}), resolve=True),
    }
    classes = cfg.data.classes
    classes = OmegaConf.to_container(classes) if OmegaConf.is_config(classes) else classes
    data = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k != "eval"}
    return FinetuneModule(
        model,
        classes,
        lr=cfg.optim.lr,
        batch_size=int(cfg.data.batch_size),
        encoder_mode=m.encoder_mode,
        lr_scale=float(m.lr_scale),
        encoder_freeze_steps=int(m.get("encoder_freeze_steps", 0)),
        bn_recalibration_batches=int(m.get("bn_recalibration_batches", 0)),
        warmup=float(cfg.optim.warmup),
        eval=evalcfg,
        conf_threshold=float(cfg.conf_threshold),
        nms_threshold=float(cfg.nms_threshold),
        data=data,
    )


def build(cfg: DictConfig, extra_callbacks=()):
    """(datamodule, module, trainer) from a composed config, the pretrained weights loaded."""
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate

    check_finetune_config(cfg)  # before any work: a bad value is one line, not a crash later
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    pl.seed_everything(cfg.seed, workers=True)
    from evcmae.finetune.rvt_checkpoint import is_detector_checkpoint, load_detector_weights

    whole_detector = bool(cfg.model.pretrained) and is_detector_checkpoint(cfg.model.pretrained)
    if cfg.model.pretrained and cfg.model.input == "sparse" and not whole_detector:
        _adopt_pretrained_config(cfg)
    data_cfg = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k != "eval"}
    datamodule = instantiate({**data_cfg, "input": cfg.model.input})
    module = build_module(cfg, datamodule)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    if whole_detector:  # a fine-tuned or RVT detector: every tensor, strictly
        load_detector_weights(module.model, cfg.model.pretrained)
    elif cfg.model.pretrained:
        if module.model.encoder is None:
            raise ValueError("model.pretrained needs the sparse input (model=sparse)")
        from evcmae.finetune.transfer import load_pretrained

        load_pretrained(module.model.encoder, cfg.model.pretrained, cfg.model.pretrained_which, logger or None)
    callbacks = [
        instantiate(cfg.checkpoint),
        pl.callbacks.LearningRateMonitor(logging_interval="step"),
        *extra_callbacks,
    ]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return datamodule, module, trainer


def run(cfg: DictConfig) -> dict:
    """Fine-tune, then evaluate the best checkpoint on the val split into an experiment record."""
    from evcmae.finetune.records import ExperimentRecord
    from evcmae.finetune.report import summary_text

    start = time.perf_counter()
    datamodule, module, trainer = build(cfg)
    record = None
    if trainer.is_global_zero:
        record = ExperimentRecord.create(
            cfg.record.root, hypothesis=cfg.record.hypothesis, config=cfg, name=cfg.record.name
        )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    checkpoint = trainer.checkpoint_callback
    best = (checkpoint.best_model_path or checkpoint.last_model_path) if checkpoint else ""
    metrics = {}
    if cfg.get("test_after_fit", True):
        datamodule.splits["test"] = datamodule.splits["val"]
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics = module.last_metrics or {}
        if record is not None:
            record.write_metrics(metrics, module.last_confusion)
            print(summary_text(metrics))
    if record is not None:
        if best:
            record.set_checkpoint(best)
        print(
            f"evcmae: {trainer.global_step} steps in {time.perf_counter() - start:.0f} s; record {record.path}"
            + (f"; checkpoint {best}" if best else "")
        )
    return {"metrics": metrics, "checkpoint": best, "record": str(record.path) if record else None}


@entry("evcmae-finetune")
@hydra.main(version_base="1.3", config_path=config_dir("finetune"), config_name="finetune")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)["metrics"].get("AP")


if __name__ == "__main__":
    main()
