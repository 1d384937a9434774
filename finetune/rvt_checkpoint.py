"""RVT's released checkpoints as evcmae detectors: a strict, one-to-one rename of every tensor.

RVT (uzh-rpg/RVT) saves Lightning checkpoints whose ``state_dict`` holds its detector under
``mdl.``: ``backbone`` (``RNNDetector``: stages of ``downsample_cf2cl`` → ``att_blocks`` of
``att_window``/``att_grid`` → ``lstm``), ``fpn`` (``YOLOPAFPN``: ``lateral_conv0``, ``C3_p4``,
``reduce_conv1``, ``C3_p3``, ``bu_conv2``, ``C3_n3``, ``bu_conv1``, ``C3_n4``) and ``yolox_head``.
The histogram detector here (``EventDetector(input="histogram")``) has the same layers with the
same shapes under other names, so a checkpoint converts by renaming alone.

The rename is written once, from our names to RVT's (:func:`rvt_name`); the list of keys an RVT
checkpoint must hold is that rename applied to our model's state dict, so loading is strict both
ways: every RVT key must land on one of ours with the same shape and every one of ours must be
filled, else the error names the checkpoint and the keys. Architecture (size, classes, input
channels) is read from the tensors' shapes; the input resolution and class names come from the
dataset (``gen1``: 2 classes at 304x240, ``gen4``: 3 classes at 640x360, or any data config).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch

RVT_PREFIX = "mdl."
# RVT's embed dim -> our size name (head dim follows: small has 24, tiny and base 32).
SIZE_BY_EMBED = {32: "tiny", 48: "small", 64: "base"}
FPN_DEPTH_BY_BOTTLENECKS = {1: 0.33, 2: 0.67}
# The dataset RVT trained a checkpoint on, from its class count (RVT's gen1: 2, gen4: 3).
DATASET_BY_CLASSES = {2: "gen1", 3: "gen4"}

# Our 3-level PAFPN's lists -> RVT's named layers (YOLOPAFPN's forward order, coarse to fine,
# then back up): lateral[1] reduces the stride-32 map, lateral[0] the stride-16 one, and so on.
_FPN_NAMES = {
    "lateral.1": "lateral_conv0",
    "td_csp.1": "C3_p4",
    "lateral.0": "reduce_conv1",
    "td_csp.0": "C3_p3",
    "down.0": "bu_conv2",
    "bu_csp.0": "C3_n3",
    "down.1": "bu_conv1",
    "bu_csp.1": "C3_n4",
}
_RULES = (
    (re.compile(r"^detector\.backbone\.stages\.(\d+)\.downsample\."), r"backbone.stages.\1.downsample_cf2cl."),
    (re.compile(r"^detector\.backbone\.stages\.(\d+)\.blocks\."), r"backbone.stages.\1.att_blocks."),
    (re.compile(r"\.mlp\.0\."), ".mlp.net.0.0."),  # RVT's MLP: Sequential(Sequential(Linear, GELU), Dropout, Linear)
    (re.compile(r"\.mlp\.2\."), ".mlp.net.2."),
    (re.compile(r"^detector\.backbone\."), "backbone."),
    (re.compile(r"^detector\.fpn\.((?:lateral|td_csp|down|bu_csp)\.\d+)\."), lambda m: f"fpn.{_fpn_name(m[1])}."),
    (re.compile(r"^detector\.head\."), "yolox_head."),
)


def _fpn_name(layer: str) -> str:
    if layer not in _FPN_NAMES:
        raise KeyError(f"fpn.{layer}: RVT's neck has 3 levels (fpn_stages 2, 3, 4)")
    return _FPN_NAMES[layer]


class RVTCheckpointError(ValueError):
    """An RVT checkpoint that does not map onto the detector; the message names the file."""


def rvt_name(key: str) -> str:
    """RVT's name (without ``mdl.``) of one ``EventDetector`` state-dict key."""
    if not key.startswith(("detector.backbone.", "detector.fpn.", "detector.head.")):
        raise KeyError(f"{key}: not part of RVT's detector (RVT has no sparse encoder)")
    out = key
    for pattern, replacement in _RULES:
        out = pattern.sub(replacement, out)
    return out


def read_checkpoint(path) -> dict:
    """A ``.ckpt`` as a dict. Tensors-only loading first; RVT's checkpoints also pickle their
    config objects, which then needs the full unpickler (only for files you trust)."""
    from evcmae.pretrain.checkpointing import read_checkpoint as read  # one reader: damage named once

    try:
        return read(path, weights_only=True)
    except Exception as exc:  # config objects in the pickle (omegaconf, enums): not loadable tensors-only
        if type(exc).__name__ == "CheckpointError":
            raise
        return read(path, weights_only=False)


def rvt_state_dict(checkpoint: Mapping) -> dict[str, torch.Tensor] | None:
    """The detector tensors of an RVT checkpoint with ``mdl.`` removed, or None if it is not one."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or f"{RVT_PREFIX}backbone.stages.0.downsample_cf2cl.conv.weight" not in state:
        return None
    return {k[len(RVT_PREFIX) :]: v for k, v in state.items() if k.startswith(RVT_PREFIX)}


def is_rvt_checkpoint(path) -> bool:
    return rvt_state_dict(read_checkpoint(path)) is not None


def infer_architecture(state: Mapping[str, torch.Tensor], path="checkpoint") -> dict:
    """Size, class count, input channels and neck depth from the tensors' shapes."""
    stem = state["backbone.stages.0.downsample_cf2cl.conv.weight"]
    embed, in_channels, kernel = int(stem.shape[0]), int(stem.shape[1]), int(stem.shape[-1])
    if embed not in SIZE_BY_EMBED:
        raise RVTCheckpointError(f"{path}: embed dim {embed} is none of RVT's sizes {SIZE_BY_EMBED}")
    if kernel != 7:
        raise RVTCheckpointError(f"{path}: stem kernel {kernel}: only RVT's patch size 4 (7x7 stem) is supported")
    bottlenecks = len({k.split(".")[3] for k in state if k.startswith("fpn.C3_p4.m.")})
    if bottlenecks not in FPN_DEPTH_BY_BOTTLENECKS:
        raise RVTCheckpointError(
            f"{path}: {bottlenecks} bottlenecks per CSP layer; RVT uses 1 (depth 0.33) or 2 (0.67)"
        )
    return {
        "size": SIZE_BY_EMBED[embed],
        "num_classes": int(state["yolox_head.cls_preds.0.weight"].shape[0]),
        "in_channels": in_channels,
        "fpn_depth": FPN_DEPTH_BY_BOTTLENECKS[bottlenecks],
    }


def map_state_dict(
    rvt_state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], path="checkpoint"
) -> dict[str, torch.Tensor]:
    """RVT-named tensors -> the ``target`` state dict's names, strictly: the same key set (after
    the rename) and the same shapes, or ``RVTCheckpointError`` naming ``path`` and the keys."""
    try:
        ours_by_rvt = {rvt_name(k): k for k in target}
    except KeyError as exc:
        raise RVTCheckpointError(f"{path}: the detector is not RVT's architecture: {exc.args[0]}") from None
    missing = sorted(set(ours_by_rvt) - set(rvt_state))
    unexpected = sorted(set(rvt_state) - set(ours_by_rvt))
    shapes = [
        f"{k} {tuple(rvt_state[k].shape)} vs {tuple(target[ours_by_rvt[k]].shape)}"
        for k in sorted(set(ours_by_rvt) & set(rvt_state))
        if tuple(rvt_state[k].shape) != tuple(target[ours_by_rvt[k]].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                parts.append(f"{len(keys)} {what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
        raise RVTCheckpointError(f"{path}: does not map onto RVT-{target_size_hint(target)}: " + "; ".join(parts))
    return {ours_by_rvt[k]: v for k, v in rvt_state.items()}


def target_size_hint(target: Mapping[str, torch.Tensor]) -> str:
    w = target.get("detector.backbone.stages.0.downsample.conv.weight")
    return SIZE_BY_EMBED.get(int(w.shape[0]), "?") if w is not None else "?"


def dataset_settings(dataset: str, data_overrides: Mapping | None = None) -> dict:
    """The fine-tuning config composed for ``data=<dataset> model=histogram`` (no root set), as a
    plain dict: its ``model`` and ``data`` sections are what a ``FinetuneModule`` is built from."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException
    from omegaconf import OmegaConf

    from evcmae.tools.pretrain import config_dir

    folder = config_dir("finetune")
    overrides = [f"data={dataset}", "model=histogram", "data.root=null", "paths.output_dir=."]
    overrides += [f"data.{k}={v}" for k, v in (data_overrides or {}).items()]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=folder, version_base="1.3"):
            cfg = compose(config_name="finetune", overrides=overrides)
    except MissingConfigException:
        known = sorted(p.stem for p in (Path(folder) / "data").glob("*.yaml"))
        raise RVTCheckpointError(f"no data config {dataset!r}; known: {', '.join(known)}") from None
    return OmegaConf.to_container(cfg, resolve=True)


def module_hparams(arch: Mapping, dataset: str, data_overrides: Mapping | None = None) -> dict:
    """``FinetuneModule`` arguments for an RVT detector on ``dataset``: the config's histogram model
    with the checkpoint's size and input width, at the data's resolution."""
    from evcmae.finetune.classes import class_names

    cfg = dataset_settings(dataset, data_overrides)
    data = cfg["data"]
    classes = len(class_names(data["classes"]))
    if classes != int(arch["num_classes"]):
        raise RVTCheckpointError(
            f"the checkpoint has {arch['num_classes']} classes but data={dataset} has {classes}; "
            "pick the dataset it was trained on (--dataset)"
        )
    model = {k: v for k, v in cfg["model"].items() if not k.startswith("_")}
    model["detector"] = {**model["detector"], "size": arch["size"], "in_channels": int(arch["in_channels"])}
    model["data"] = data
    return model


def load_rvt(
    path,
    dataset: str | None = None,
    data_overrides: Mapping | None = None,
    verbose: bool = True,
    checkpoint: Mapping | None = None,
):
    """An RVT checkpoint as a ``FinetuneModule`` (eval mode) and a short report; ``checkpoint``:
    the file's content when already read."""
    from evcmae.finetune.module import FinetuneModule

    state = rvt_state_dict(read_checkpoint(path) if checkpoint is None else checkpoint)
    if state is None:
        raise RVTCheckpointError(f"{path}: not an RVT checkpoint (no 'mdl.backbone.stages.0.downsample_cf2cl' tensors)")
    arch = infer_architecture(state, path)
    if dataset is None:
        if arch["num_classes"] not in DATASET_BY_CLASSES:
            raise RVTCheckpointError(
                f"{path}: {arch['num_classes']} classes: name the dataset it was trained on (--dataset, e.g. etram3)"
            )
        dataset = DATASET_BY_CLASSES[arch["num_classes"]]
    hparams = module_hparams(arch, dataset, data_overrides)
    module = FinetuneModule(**hparams)
    target = module.model.state_dict()
    mapped = map_state_dict(state, target, path)
    module.model.load_state_dict(mapped, strict=True)
    module.eval()
    report = {
        "loaded": len(mapped),
        "total": len(target),
        "size": arch["size"],
        "num_classes": arch["num_classes"],
        "dataset": dataset,
    }
    if verbose:
        print(
            f"evcmae: {path}: RVT-{arch['size']}, {arch['num_classes']} classes, data={dataset}: "
            f"loaded {report['loaded']} of {report['total']} tensors"
        )
    return module, report


def save_module_checkpoint(module, out_path, source=None) -> Path:
    """An ordinary evcmae fine-tuning checkpoint (what ``FinetuneModule.load_from_checkpoint``,
    ``evcmae-evaluate``, ``evcmae-detect`` and ``evcmae-finetune model.pretrained=...`` read)."""
    import pytorch_lightning as pl

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": pl.__version__,
            "epoch": 0,
            "global_step": 0,
            "evcmae_source": {"converted_from": str(source)} if source else {},
        },
        out_path,
    )
    return out_path


def convert(rvt_path, out_path, dataset: str | None = None, data_overrides: Mapping | None = None) -> dict:
    """RVT ``.ckpt`` -> evcmae fine-tuning ``.ckpt``; returns the load report."""
    module, report = load_rvt(rvt_path, dataset, data_overrides)
    save_module_checkpoint(module, out_path, source=Path(rvt_path).resolve())
    return {**report, "out": str(out_path)}


def is_detector_checkpoint(path) -> bool:
    """Whether ``path`` holds a whole detector (an evcmae fine-tuning or an RVT checkpoint), as
    opposed to a pretraining export or checkpoint (only the sparse backbone)."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".ckpt":
        return False
    checkpoint = read_checkpoint(path)
    if rvt_state_dict(checkpoint) is not None:
        return True
    state = checkpoint.get("state_dict", {})
    return any(k.startswith("model.detector.") for k in state)


def load_detector_weights(model, path, verbose: bool = True) -> dict:
    """Every detector tensor of ``model`` (an ``EventDetector``) from a fine-tuning checkpoint or
    an RVT one, strictly by name and shape: the start of fine-tuning from a trained detector."""
    checkpoint = read_checkpoint(path)
    rvt = rvt_state_dict(checkpoint)
    target = model.state_dict()
    if rvt is not None:
        state = map_state_dict(rvt, target, path)
    else:
        raw = checkpoint.get("state_dict", checkpoint)
        state = {k.removeprefix("model."): v for k, v in raw.items() if k.startswith("model.")}
        missing = sorted(set(target) - set(state))
        unexpected = sorted(set(state) - set(target))
        shapes = sorted(k for k in set(state) & set(target) if tuple(state[k].shape) != tuple(target[k].shape))
        if missing or unexpected or shapes:
            raise RVTCheckpointError(
                f"{path}: does not fit the detector: {len(missing)} missing ({', '.join(missing[:3])}), "
                f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}), {len(shapes)} of another shape "
                f"({', '.join(shapes[:3])})"
            )
    model.load_state_dict(state, strict=True)
    if verbose:
        print(f"evcmae: {path}: loaded {len(state)} of {len(target)} detector tensors")
    return {"loaded": len(state), "total": len(target)}
