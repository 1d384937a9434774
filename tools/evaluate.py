"""evcmae-evaluate: Prophesee-protocol COCO metrics of a detector on a split, or of box files.

    evcmae-evaluate checkpoint=outputs/finetune/<run>/checkpoints/last.ckpt split=test
    evcmae-evaluate 'checkpoint=outputs/finetune/<run>/checkpoints/best-step=*.ckpt'  # the one val chose
    evcmae-evaluate checkpoint=... split=val out=eval_val data.root=/data/etram   # other data
    evcmae-evaluate checkpoint=rvt-t.ckpt data.root=/data/gen4 split=test          # an RVT checkpoint as it is
    evcmae-evaluate checkpoint=... eval.protocol=yolox                             # YOLOX's scoring
    evcmae-evaluate checkpoint=... split=val precise_bn=20                         # statistics re-estimated first
    evcmae-evaluate labels=GT_DIR detections=DET_DIR classes=gen1                  # *_bbox.npy files

Writes metrics.json (AP, AP50, AP75, AP_S, AP_M, AP_L, AP_class_agnostic, AP_per_class, the
protocol used, ...), summary.txt and the confusion matrix into ``out`` (default
``<run>/eval_<split>``, or beside a checkpoint outside a run) as an experiment record, and prints the summary. The data settings come
from the checkpoint (those it was trained with; for an RVT checkpoint, its dataset's config,
``dataset=gen1|gen4|etram3|...`` when the class count does not tell); ``data.KEY=VALUE``
overrides any of them. ``eval.KEY=VALUE`` overrides the evaluation (finetune.evaluation.EvalConfig):
``eval.protocol=rvt`` (default: RVT's evaluator, class-confidence score, predictions within
±50 ms of a label time) or ``yolox`` (objectness × class, exact times); ``eval.backend``.

BatchNorm: a checkpoint's layers whose running variance is below 1e-4 (var + eps below 1.1e-4, so
the layer's own eps counts) in at least a tenth of their channels are named in a warning and in the
record (``batchnorm_near_constant``): at evaluation they multiply small shifts of their input about
a hundredfold, which is how one fine-tuned detector collapsed (docs/study.md). ``precise_bn=N``
re-estimates the statistics on N batches of the checkpoint's own training data (its labelled
subset, seed 0 for the draws) before scoring;
``precise_bn_scope=detector`` (default: every BatchNorm outside the sparse encoder) or ``all``.

Box files: every ``NAME_bbox.npy`` under ``labels`` is paired with ``NAME_detections_bbox.npy``
(what evcmae-detect writes) or ``NAME_bbox.npy`` under ``detections``; a detection's score is
its ``class_confidence`` (evcmae-detect writes the protocol's score), as in RVT's evaluator. Boxes
are compared in the files' pixels: set ``eval.min_box_diag``/``eval.min_box_side`` for them
(default 30/10: Gen1, or Gen4/eTraM at half resolution).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from evcmae.tools.cli import entry

EVAL_KEYS = ("skip_ts_us", "min_box_diag", "min_box_side", "protocol", "time_tol_us", "backend")


def parse_overrides(argv) -> dict:
    """``key=value`` pairs (``--key value`` also accepted); values parsed as YAML (numbers, lists, null)."""
    import yaml

    out, argv = {}, list(argv)
    while argv:
        arg = argv.pop(0)
        if arg.startswith("--") and "=" not in arg and argv:
            arg = f"{arg[2:]}={argv.pop(0)}"
        elif arg.startswith("--"):
            arg = arg[2:]
        if "=" not in arg:
            raise SystemExit(f"expected key=value, got {arg!r} (see --help)")
        key, value = arg.split("=", 1)
        out[key] = yaml.safe_load(value) if value else None
    return out


def _prefixed(args: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in args.items() if k.startswith(prefix)}


def load_module(path, threads: int = 1, dataset: str | None = None):
    """The fine-tuned module (eval mode) of an evcmae checkpoint or an RVT one."""
    import torch

    from evcmae.finetune.module import FinetuneModule
    from evcmae.finetune.rvt_checkpoint import load_rvt, rvt_state_dict
    from evcmae.pretrain.checkpointing import read_checkpoint, require_kind, resolve_checkpoint

    if threads:
        torch.set_num_threads(threads)
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise SystemExit(f"checkpoint={path}: no such file")
    content = read_checkpoint(path)
    if rvt_state_dict(content) is not None:
        module, _ = load_rvt(path, dataset, checkpoint=content)
    else:
        require_kind(path, content, "finetune")  # damaged, or a pretraining one: one line
        del content
        module = FinetuneModule.load_from_checkpoint(path, map_location="cpu")
    return module.eval()


def load_checkpoint(path, data_overrides: dict | None = None, threads: int = 1, dataset: str | None = None):
    """(module in eval mode, data module) rebuilt from a fine-tuning checkpoint or an RVT one: the
    module from its hyperparameters, the data module from the data config stored with them
    (``data_overrides``, ``key`` or ``dotted.key`` -> value, change any of it)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    module = load_module(path, threads, dataset)
    data = OmegaConf.create(dict(module.hparams.get("data") or {}))
    if "_target_" not in data:
        raise SystemExit(f"checkpoint={path}: no data config stored with it (written by an older evcmae-finetune?)")
    for key, value in (data_overrides or {}).items():
        OmegaConf.update(data, key, value, merge=False)
    data.input = module.model.input
    if data.get("root") in (None, "", "???") or str(data.get("root")).startswith("${"):
        raise SystemExit(
            f"checkpoint={path} does not say where its data is: add data.root=/path/to/the/dataset "
            f"(the folder holding train/ val/ test/; classes {module.classes})"
        )
    return module, instantiate(data)


def set_eval_config(datamodule, overrides: dict) -> None:
    """Replace the data's evaluation settings (the protocol, the filters) by its own with
    ``overrides`` applied."""
    from evcmae.finetune.evaluation import EvalConfig

    unknown = sorted(set(overrides) - set(EvalConfig.__dataclass_fields__))
    if unknown:
        raise SystemExit(f"unknown eval setting(s) {unknown}; known: {sorted(EvalConfig.__dataclass_fields__)}")
    current = asdict(datamodule.eval_config)
    if "protocol" in overrides and "time_tol_us" not in overrides:
        current["time_tol_us"] = None  # the new protocol's own tolerance
    datamodule.eval_config = EvalConfig(**{**current, **overrides})


def precise_bn_of(module, datamodule, batches: int, scope: str = "detector") -> dict:
    """Re-estimates ``module``'s BatchNorm statistics on ``batches`` batches of the data module's
    training loader (seeded, so a repeat gives the same statistics); what was done, for the record."""
    import torch

    if batches < 0:
        raise ValueError(f"precise_bn must be a number of batches >= 0, got {batches}")
    torch.manual_seed(0)
    datamodule.setup("fit")
    windows = module.precise_bn(datamodule.train_dataloader(), batches, scope)
    if not windows:
        raise ValueError(f"precise_bn={batches}: the training split gave no labelled window to estimate from")
    print(f"evcmae-evaluate: BatchNorm statistics ({scope}) re-estimated on {windows} labelled windows")
    return {"batches": batches, "scope": scope, "labelled_windows": windows}


def evaluate_checkpoint(
    checkpoint,
    split: str = "test",
    out=None,
    data_overrides: dict | None = None,
    accelerator: str = "cpu",
    eval_overrides: dict | None = None,
    dataset: str | None = None,
    precise_bn: int = 0,
    precise_bn_scope: str = "detector",
) -> dict:
    import pytorch_lightning as pl

    from evcmae.backbones.batchnorm import near_constant_channels, near_constant_text
    from evcmae.events.validation import check_class_ids
    from evcmae.finetune.records import ExperimentRecord
    from evcmae.finetune.report import summary_text
    from evcmae.pretrain.checkpointing import resolve_checkpoint

    checkpoint = resolve_checkpoint(checkpoint)  # the record names the file, not a pattern
    module, datamodule = load_checkpoint(checkpoint, data_overrides, dataset=dataset)
    set_eval_config(datamodule, eval_overrides or {})
    datamodule.prepare_data()
    recalibrated = precise_bn_of(module, datamodule, precise_bn, precise_bn_scope) if precise_bn else None
    near_constant = near_constant_channels(module.model)
    if near_constant:
        print(
            f"evcmae-evaluate: warning: {checkpoint}: near-constant BatchNorm channels (variance + eps < 1.1e-4) "
            f"in {near_constant_text(near_constant)}"
        )
    datamodule.splits["test"] = datamodule.splits.get(split, split)
    for rec in datamodule.recordings("test"):  # ids the model has no output for: one line, not a crash
        check_class_ids(
            rec.gt(), module.model.num_classes, getattr(rec, "path", rec.name), "the checkpoint's num_classes"
        )
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=True,  # one step per chunk of the split's recordings
        enable_model_summary=False,
    )
    trainer.test(module, datamodule=datamodule, verbose=False)
    if out is None:  # <run>/eval_<split> for a run's checkpoints/, else beside the checkpoint file
        folder = Path(checkpoint).resolve().parent
        out = (folder.parent if folder.name == "checkpoints" else folder) / f"eval_{split}"
    out = Path(out)
    record = ExperimentRecord.create(
        out.parent,
        experiment_id=None if out.exists() else out.name,
        config={
            "checkpoint": str(checkpoint),
            "split": split,
            "eval": asdict(datamodule.eval_config),
            "data": {k: v for k, v in datamodule.__dict__.items() if isinstance(v, (int, float, str))},
            "precise_bn": recalibrated,
            "batchnorm_near_constant": {name: list(counts) for name, counts in near_constant.items()},
        },
        name=f"eval-{split}",
    )
    record.write_metrics(module.last_metrics, module.last_confusion)
    record.set_checkpoint(checkpoint)
    print(summary_text(module.last_metrics))
    print(f"evcmae: metrics written to {record.path}")
    return {"metrics": module.last_metrics, "path": str(record.path)}


def box_file_pairs(labels_dir, detections_dir) -> list[tuple[str, Path, Path | None]]:
    """``(name, labels, detections or None)`` for every ``NAME_bbox.npy`` under ``labels_dir``."""
    labels_dir, detections_dir = Path(labels_dir), Path(detections_dir)
    for folder, what in ((labels_dir, "labels"), (detections_dir, "detections")):
        if not folder.is_dir():
            raise SystemExit(f"{what}={folder}: no such folder")
    found = {}
    for f in detections_dir.rglob("*_bbox.npy"):
        found.setdefault(f.name.removesuffix("_bbox.npy").removesuffix("_detections"), f)
    pairs = []
    for f in sorted(labels_dir.rglob("*_bbox.npy")):
        if f.name.endswith("_detections_bbox.npy"):
            continue
        name = f.name.removesuffix("_bbox.npy")
        pairs.append((name, f, found.get(name)))
    if not pairs:
        raise SystemExit(f"labels={labels_dir}: no *_bbox.npy files")
    return pairs


def evaluate_files(
    labels_dir, detections_dir, classes, out=None, eval_overrides: dict | None = None, height: int = 0, width: int = 0
) -> dict:
    """The protocol on box files: ground truth from ``labels_dir``, detections from ``detections_dir``."""
    import numpy as np

    from evcmae.events.labels import BBOX_DTYPE, load_labels
    from evcmae.finetune.evaluation import EvalConfig, Recording, evaluate
    from evcmae.finetune.records import ExperimentRecord
    from evcmae.finetune.report import summary_text

    config = EvalConfig(**(eval_overrides or {}))
    pairs = box_file_pairs(labels_dir, detections_dir)
    recordings = [
        Recording(load_labels(gt), load_labels(dt) if dt else np.zeros(0, BBOX_DTYPE), height, width, 0, name)
        for name, gt, dt in pairs
    ]
    without = [name for name, _, dt in pairs if dt is None]
    if without:
        print(f"evcmae: no detection file for {len(without)} recording(s) (counted as no detections): {without[:5]}")
    metrics, confusion = evaluate(recordings, classes, config)
    out = Path(out) if out else Path(detections_dir).resolve().parent / "eval"
    record = ExperimentRecord.create(
        out.parent,
        experiment_id=None if out.exists() else out.name,
        config={
            "labels": str(labels_dir),
            "detections": str(detections_dir),
            "classes": classes,
            "eval": asdict(config),
        },
        name="eval-files",
    )
    record.write_metrics(metrics, confusion)
    print(summary_text(metrics))
    print(f"evcmae: metrics written to {record.path}")
    return {"metrics": metrics, "path": str(record.path)}


@entry("evcmae-evaluate")
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    args = parse_overrides(argv)
    evals = _prefixed(args, "eval.")
    if "protocol" in args:
        evals.setdefault("protocol", args["protocol"])
    unknown = sorted(set(evals) - set(EVAL_KEYS) - {"confusion_score", "confusion_iou"})
    if unknown:
        raise SystemExit(f"unknown eval setting(s) {unknown}; known: {', '.join(EVAL_KEYS)}")
    if "labels" in args or "detections" in args:
        if not ("labels" in args and "detections" in args and "classes" in args):
            raise SystemExit("box files need labels=DIR detections=DIR classes=NAME (e.g. gen1, gen4, etram8)")
        try:
            evaluate_files(
                args["labels"],
                args["detections"],
                args["classes"],
                args.get("out"),
                evals,
                int(args.get("height", 0)),
                int(args.get("width", 0)),
            )
        except ValueError as exc:
            raise SystemExit(f"evcmae-evaluate: {exc}") from None
        return 0
    if "checkpoint" not in args:
        raise SystemExit("checkpoint=PATH (or labels=DIR detections=DIR classes=NAME) is required")
    try:
        evaluate_checkpoint(
            args["checkpoint"],
            str(args.get("split", "test")),
            args.get("out"),
            _prefixed(args, "data."),
            args.get("accelerator", "cpu"),
            evals,
            args.get("dataset"),
            int(args.get("precise_bn") or 0),
            str(args.get("precise_bn_scope", "detector")),
        )
    except ValueError as exc:  # bad settings, an RVT checkpoint that does not map, ...
        raise SystemExit(f"evcmae-evaluate: {exc}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
