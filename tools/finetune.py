"""evcmae-finetune: fine-tune the RVT/YOLOX detector on the pretrained sparse encoder (Hydra).

    evcmae-finetune                                                   # demo preset, from scratch
    evcmae-finetune model.pretrained=outputs/runs/<time>              # from a pretraining export
    evcmae-finetune model.pretrained=outputs/runs/<time>/checkpoints/last.ckpt model.encoder_mode=freeze
    evcmae-finetune model=histogram                    # the stacked-histogram baseline
    evcmae-finetune data=tiny trainer.max_steps=20
    evcmae-finetune -m data.label_fraction=0.1,0.5,1.0                # label efficiency

Built like pretraining (and lightning-hydra-template's train.py): data, model, callbacks, logger
and trainer come from the config's ``_target_``s; fit; then the best checkpoint (by val/AP) is
validated once more, logged as ``val/*`` and written to an experiment record (config, command,
metrics.json, summary, confusion matrix, checkpoint pointer) under ``record.root``. Each run also
writes checkpoints/ and csv/ (with curves.png). From a pretrained export, the export's backbone
shapes and voxel grid replace the config's (:func:`pretrained_overrides`), so the weights fit.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from evcmae.tools.cli import entry
from evcmae.tools.config_checks import check_finetune_config
from evcmae.tools.pretrain import build, config_dir


def pretrained_overrides(model: DictConfig) -> list[str]:
    """The Hydra overrides that adopt ``model.pretrained``'s settings: its backbone's constructor
    arguments (``backbone.*``) and the voxel grid it was trained on (``voxel.*``), so the weights
    load by shape and mean what they meant in pretraining; with pretrained RVT stages, also RVT's
    size and the encoder output under them (``model.detector.*``). Empty without a pretrained
    source."""
    from evcmae.finetune.rvt_checkpoint import is_detector_checkpoint
    from evcmae.finetune.transfer import backbone_config, export_json

    if not model.get("pretrained") or is_detector_checkpoint(model.pretrained):
        return []  # a whole detector (fine-tuned or RVT): its tensors are loaded as they are
    if model.detector.input != "sparse":
        raise ValueError("model.pretrained needs the sparse input (model=sparse), not model=histogram")
    backbone, voxelizer = backbone_config(model.pretrained, model.pretrained_which)
    voxel = {k: v for k, v in (voxelizer or {}).items() if k in ("window_us", "num_bins", "downsample", "voxel_size")}
    overrides = [f"backbone.{k}={json.dumps(v)}" for k, v in backbone.items()]
    overrides += [f"voxel.{k}={json.dumps(v)}" for k, v in voxel.items()]
    # Pretrained RVT stages fit the detector only at their RVT size, above the same encoder output.
    rvt = (export_json(model.pretrained) or {}).get("rvt") if model.get("pretrained_rvt", True) else None
    if rvt:
        overrides += [f"model.detector.size={rvt['size']}", f"model.detector.output={rvt['source']}"]
    return overrides


def with_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """A copy of ``cfg`` with ``key=value`` overrides applied, saying which values change."""
    if not overrides:
        return cfg
    changed = OmegaConf.from_dotlist(overrides)
    for line in overrides:
        key = line.split("=", 1)[0]
        old, new = OmegaConf.select(cfg, key), OmegaConf.select(changed, key)
        old = OmegaConf.to_container(old) if OmegaConf.is_config(old) else old
        new = OmegaConf.to_container(new) if OmegaConf.is_config(new) else new
        if old != new:
            print(f"evcmae: {key}={old} -> {new} (the pretrained encoder's)")
    return OmegaConf.merge(cfg, changed)


def load_start(module, model_cfg: DictConfig, logger=None) -> None:
    """The starting weights named by ``model.pretrained``: a whole detector (a fine-tuning or RVT
    checkpoint) loads every tensor strictly; a pretraining export or checkpoint loads the encoder, and
    the RVT stages where pretraining trained them."""
    from evcmae.finetune.rvt_checkpoint import is_detector_checkpoint, load_detector_weights

    if model_cfg.get("pretrained") and is_detector_checkpoint(model_cfg.pretrained):
        load_detector_weights(module.model, model_cfg.pretrained)
    else:
        module.load_pretrained(logger)


def write_labelled_subset(datamodule, out: Path) -> dict:
    """Record which labelled training data the run uses (``labelled_subset.json``), and say so."""
    subset = datamodule.labelled_subset()
    out.mkdir(parents=True, exist_ok=True)
    (out / "labelled_subset.json").write_text(json.dumps(subset, indent=2) + "\n")
    names = subset["recordings"]
    shown = ", ".join(names[:4]) + (f", +{len(names) - 4}" if len(names) > 4 else "")
    print(
        f"evcmae: labelled training data ({subset['label_fraction']:g}, {subset['mode']}, seed {subset['seed']}): "
        f"{len(names)} of {subset['of_recordings']} recordings ({shown}), {subset['boxes']} boxes in "
        f"{subset['label_frames']} label frames"
    )
    return subset


class LabelledSubsetRecord(pl.Callback):
    """Writes ``labelled_subset.json`` into ``out`` when fitting starts: the data has been prepared
    and set up by then, so nothing is done twice."""

    def __init__(self, out):
        self.out = Path(out)

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            write_labelled_subset(trainer.datamodule, self.out)


def train(cfg: DictConfig) -> dict:
    """Fit, then validate the best checkpoint into an experiment record. Returns the final
    ``metrics`` (val/*, from the best checkpoint when ``validate_best``), ``checkpoint``, ``record``."""
    from evcmae.finetune.records import ExperimentRecord
    from evcmae.finetune.report import summary_text

    start = time.perf_counter()
    # Checked as given, before the export's settings replace backbone.* and voxel.*: an explicit
    # value that contradicts model.pretrained is refused here, not silently replaced.
    check_finetune_config(cfg)
    cfg = with_overrides(cfg, pretrained_overrides(cfg.model))
    datamodule, model, trainer = build(cfg, [LabelledSubsetRecord(cfg.paths.output_dir)], check=False)
    if not cfg.get("ckpt_path"):  # resuming restores the weights from the checkpoint instead
        load_start(model, cfg.model, trainer.logger)
    record = None
    if trainer.is_global_zero:
        record = ExperimentRecord.create(
            cfg.record.root, hypothesis=cfg.record.hypothesis, config=cfg, name=cfg.record.name
        )
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    # The best val/AP checkpoint (a monitored callback's; an unmonitored one's "best" is merely
    # its latest save); without one (no validation ran), the latest last.ckpt.
    saved = trainer.checkpoint_callbacks
    best = next((c.best_model_path for c in saved if c.monitor and c.best_model_path), "") or next(
        (c.last_model_path for c in saved if c.last_model_path), ""
    )
    if cfg.get("validate_best"):
        trainer.validate(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        if record is not None:
            record.write_metrics(model.last_metrics or {}, model.last_confusion)
            print(summary_text(model.last_metrics or {}))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
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
    return train(cfg)["metrics"].get("val/AP")  # what a Hydra sweeper (e.g. Optuna) would optimise


if __name__ == "__main__":
    main()
