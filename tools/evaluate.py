"""evcmae-evaluate: Prophesee-protocol COCO metrics of a fine-tuned checkpoint on a split.

    evcmae-evaluate checkpoint=outputs/finetune/<run>/checkpoints/last.ckpt split=test
    evcmae-evaluate checkpoint=... split=val out=eval_val data.root=/data/etram   # other data

Writes metrics.json (AP, AP50, AP75, AP_S, AP_M, AP_L, AP_class_agnostic, AP_per_class, ...),
summary.txt and the confusion matrix into ``out`` (default ``<run>/eval_<split>``) as an
experiment record, and prints the summary. The data settings come from the checkpoint (those it
was trained with); ``data.KEY=VALUE`` overrides any of them.
"""

from __future__ import annotations

import sys
from pathlib import Path


def parse_overrides(argv) -> dict:
    """``key=value`` pairs; values parsed as YAML (numbers, lists, null)."""
    import yaml

    out = {}
    for arg in argv:
        if "=" not in arg:
            raise SystemExit(f"expected key=value, got {arg!r} (see --help)")
        key, value = arg.split("=", 1)
        out[key] = yaml.safe_load(value) if value else None
    return out


def load_checkpoint(path, data_overrides: dict | None = None, threads: int = 1):
    """(module in eval mode, data module) rebuilt from a fine-tuning checkpoint: the module from
    its hyperparameters, the data module from the data config stored with them (``data_overrides``,
    ``key`` or ``dotted.key`` -> value, change any of it)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from evcmae.finetune.module import FinetuneModule

    if threads:
        torch.set_num_threads(threads)
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"checkpoint={path}: no such file")
    module = FinetuneModule.load_from_checkpoint(path, map_location="cpu")
    module.eval()
    data = OmegaConf.create(dict(module.hparams.get("data") or {}))
    if "_target_" not in data:
        raise SystemExit(f"checkpoint={path}: no data config stored with it (written by an older evcmae-finetune?)")
    for key, value in (data_overrides or {}).items():
        OmegaConf.update(data, key, value, merge=False)
    data.input = module.model.input
    return module, instantiate(data)


def evaluate_checkpoint(
    checkpoint, split: str = "test", out=None, data_overrides: dict | None = None, accelerator: str = "cpu"
) -> dict:
    import pytorch_lightning as pl

    from evcmae.finetune.records import ExperimentRecord
    from evcmae.finetune.report import summary_text

    module, datamodule = load_checkpoint(checkpoint, data_overrides)
    datamodule.prepare_data()
    datamodule.splits["test"] = datamodule.splits.get(split, split)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=True,  # one step per chunk of the split's recordings
        enable_model_summary=False,
    )
    trainer.test(module, datamodule=datamodule, verbose=False)
    out = Path(out) if out else Path(checkpoint).resolve().parent.parent / f"eval_{split}"
    record = ExperimentRecord.create(
        out.parent,
        experiment_id=None if out.exists() else out.name,
        config={
            "checkpoint": str(checkpoint),
            "split": split,
            "data": {k: v for k, v in datamodule.__dict__.items() if isinstance(v, (int, float, str))},
        },
        name=f"eval-{split}",
    )
    record.write_metrics(module.last_metrics, module.last_confusion)
    record.set_checkpoint(checkpoint)
    print(summary_text(module.last_metrics))
    print(f"evcmae: metrics written to {record.path}")
    return {"metrics": module.last_metrics, "path": str(record.path)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    args = parse_overrides(argv)
    if "checkpoint" not in args:
        raise SystemExit("checkpoint=PATH is required")
    data = {k[len("data.") :]: v for k, v in args.items() if k.startswith("data.")}
    evaluate_checkpoint(
        args["checkpoint"], str(args.get("split", "test")), args.get("out"), data, args.get("accelerator", "cpu")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
