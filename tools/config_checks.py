"""Configs checked before any work starts: a value that cannot work is a one-line ``ConfigError``
(``key=value: problem``) at the top of ``build``, not a crash minutes later inside spconv, a loss
or the first checkpoint save.

``check_pretrain_config`` and ``check_finetune_config`` check, where the config has the key:

* ranges: masking ratio in (0, 1), loss weights >= 0 (one of them > 0), temperatures, learning
  rates and thresholds > 0, fractions in [0, 1), sizes and counts >= 1;
* the data: each recording's stated sensor size against ``data.width`` x ``data.height``; (fine-
  tuning) every box label's class id against the classes of ``data.classes`` (through ``data.class_map``);
* the pretrained encoder (fine-tuning): a backbone setting given explicitly (``backbone.X=...``
  on the command line, or a value other than the group default) must match the pretrained
  encoder's, whose weights need it; it is refused, not silently replaced;
* the folders the run writes (outputs, checkpoints, experiment records) are writable;
* a resume checkpoint other than ``last`` exists.

Data that is generated on first use (``synth_preset``) is not there yet and is not checked.
"""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from evcmae.events.errors import ConfigError

_MISSING = object()


def _get(cfg: DictConfig, key: str):
    value = OmegaConf.select(cfg, key, default=_MISSING)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _number(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(key, value, "must be a finite number")
    return float(value)


def _require(cfg: DictConfig, key: str, test, rule: str, why: str = "", optional: bool = False) -> None:
    """``test(value)`` must hold for ``cfg.key`` (skipped when the key is absent, or null and
    ``optional``)."""
    value = _get(cfg, key)
    if value is _MISSING or (value is None and optional):
        return
    ok = test(value) if isinstance(value, (list, tuple)) else test(_number(key, value))
    if not ok:
        raise ConfigError(key, value, f"must be {rule}" + (f" ({why})" if why else ""))


def _positive_ints(n: int):
    return lambda v: isinstance(v, (list, tuple)) and len(v) == n and all(isinstance(i, int) and i >= 1 for i in v)


def _check_ranges(cfg: DictConfig, rules) -> None:
    for key, test, rule, *why in rules:
        _require(cfg, key, test, rule, *why)


def _integer(v: float) -> bool:
    return float(v).is_integer()


_DATA_RULES = [
    ("data.width", lambda v: v >= 1 and _integer(v), "a positive integer"),
    ("data.height", lambda v: v >= 1 and _integer(v), "a positive integer"),
    ("data.num_bins", lambda v: v >= 1 and _integer(v), "a positive integer"),
    ("data.downsample", lambda v: v >= 1 and _integer(v), "a positive integer"),
    ("data.batch_size", lambda v: v >= 1 and _integer(v), "a positive integer"),
    ("data.voxel_size", _positive_ints(2), "two positive integers (y, x)"),
]
_TRAINER_RULES = [
    ("trainer.accumulate_grad_batches", lambda v: v >= 1 and _integer(v), "a positive integer"),
    ("trainer.gradient_clip_val", lambda v: v >= 0, ">= 0", "0 turns clipping off"),
]


def _check_window(cfg: DictConfig) -> None:
    window, bins = _get(cfg, "data.window_us"), _get(cfg, "data.num_bins")
    if window is _MISSING or bins is _MISSING:
        return
    if not (isinstance(window, int) and isinstance(bins, int) and window >= bins >= 1):
        raise ConfigError("data.window_us", window, f"must be an integer number of µs >= data.num_bins ({bins})")


def _check_max_steps(cfg: DictConfig, needed: bool) -> None:
    steps = _get(cfg, "trainer.max_steps")
    if steps is _MISSING:
        return
    if not isinstance(steps, int) or steps == 0 or steps < -1 or (needed and steps < 1):
        rule = "a positive integer (the LR schedule needs the real length)" if needed else "-1 or a positive integer"
        raise ConfigError("trainer.max_steps", steps, f"must be {rule}")


# -- data ----------------------------------------------------------------------------------------
def _recordings(root: Path, splits) -> list[Path]:
    return [f for s in splits if (root / s).is_dir() for f in sorted((root / s).glob("*_td.h5"))]


def _check_sensor(cfg: DictConfig, files: list[Path]) -> None:
    """Every recording that states its sensor size must state the configured one."""
    from evcmae.events.h5 import H5EventFile

    want = (_get(cfg, "data.width"), _get(cfg, "data.height"))
    for path in files:
        with H5EventFile(path, on_unsorted="ignore") as f:
            size = (f.width, f.height)
        if None not in size and size != want:
            raise ConfigError(
                "data.width/height",
                f"{want[0]}x{want[1]}",
                f"{path} is a {size[0]}x{size[1]} recording; set data.width={size[0]} data.height={size[1]}",
            )


def _label_files(cfg: DictConfig, root: Path, splits) -> list[tuple[Path, str]]:
    """(file, kind) of the box labels a fine-tuning run reads: ``*_bbox.npy`` beside the raw
    recordings, or RVT's ``labels_v2/labels.npz`` for the histogram input."""
    if _get(cfg, "model.detector.input") == "histogram":
        rvt = _get(cfg, "data.rvt_root")
        rvt = Path(rvt) if isinstance(rvt, str) else root.with_name(root.name + "_rvt")
        return [(p, "npz") for s in splits for p in sorted((rvt / s).glob("*/labels_v2/labels.npz"))]
    return [(p, "npy") for s in splits if (root / s).is_dir() for p in sorted((root / s).glob("*_bbox.npy"))]


def _check_class_ids(cfg: DictConfig, root: Path, splits) -> None:
    import numpy as np

    from evcmae.events.labels import as_bbox_array, load_labels
    from evcmae.events.validation import check_class_ids

    classes = _get(cfg, "data.classes")
    if classes in (_MISSING, None):
        return
    from evcmae.finetune.classes import class_names

    try:
        num_classes = len(class_names(classes))
    except (KeyError, ValueError) as exc:
        raise ConfigError("data.classes", classes, str(exc).strip("'\"")) from None
    class_map = _get(cfg, "data.class_map")
    if class_map not in (None, _MISSING):
        bad = [c for c in class_map if not isinstance(c, int) or not 0 <= c < num_classes]
        if bad:
            raise ConfigError("data.class_map", class_map, f"entries must be class ids 0..{num_classes - 1}")
        limit, what = len(class_map), "len(data.class_map)"
    else:
        limit, what = num_classes, "the number of data.classes"
    keep = _get(cfg, "data.keep_classes")
    for path, kind in _label_files(cfg, root, splits):
        if kind == "npy":
            labels = load_labels(path)
            if isinstance(keep, list):  # ids the label filter drops (1 Mpx: 3-6) never reach the model
                labels = labels[np.isin(labels["class_id"], keep)]
        else:
            with np.load(path, allow_pickle=False) as data:
                labels = as_bbox_array(data["labels"], path)
        check_class_ids(labels, limit, path, what)


# -- folders and checkpoints ---------------------------------------------------------------------
def _check_outputs(cfg: DictConfig, keys) -> None:
    from omegaconf.errors import InterpolationResolutionError

    from evcmae.pretrain.checkpointing import check_writable

    for key, what in keys:
        try:
            folder = _get(cfg, key)
        except InterpolationResolutionError:  # ${hydra:...} outside a Hydra app: Lightning's default
            continue
        if isinstance(folder, str) and folder:
            check_writable(folder, what)


def _check_resume(cfg: DictConfig) -> None:
    ckpt = _get(cfg, "ckpt_path")
    if isinstance(ckpt, str) and ckpt != "last" and not Path(ckpt).is_file():
        raise ConfigError("ckpt_path", ckpt, "no such checkpoint file ('last' resumes the run's last.ckpt)")


def _data_root(cfg: DictConfig) -> Path | None:
    """The raw data folder, if it is there to check (generated data comes later)."""
    root = _get(cfg, "data.root")
    if not isinstance(root, str):
        return None
    root = Path(root)
    if root.is_dir():
        return root
    if _get(cfg, "data.synth_preset") in (None, _MISSING):
        raise ConfigError("data.root", str(root), "no such folder (and no data.synth_preset to generate it)")
    return None


# -- the apps ------------------------------------------------------------------------------------
def check_pretrain_config(cfg: DictConfig) -> None:
    """Everything a pretraining run needs, before it starts (see the module docstring)."""
    _check_ranges(
        cfg,
        [
            (
                "masking.ratio",
                lambda v: 0 < v < 1,
                "in (0, 1)",
                "the fraction of masked units: 0 leaves nothing to learn",
            ),
            ("masking.block_size", _positive_ints(3), "three positive integers (pt, py, px)"),
            ("loss.temperature", lambda v: v > 0, "> 0"),
            ("optim.optimizer.lr", lambda v: v > 0, "> 0"),
            ("optim.optimizer.weight_decay", lambda v: v >= 0, ">= 0"),
            ("optim.warmup_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("optim.warmup_start_factor", lambda v: 0 < v <= 1, "in (0, 1]"),
            ("optim.min_lr_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("model.ema.base", lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("model.ema.final", lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("model.max_nonfinite", lambda v: v >= 1 and _integer(v), "a positive integer"),
            ("data.neighbour_offset", lambda v: v >= 1 and _integer(v), "a positive integer"),
            *_DATA_RULES,
            *_TRAINER_RULES,
        ],
    )
    patch = _get(cfg, "masking.patch_size")
    if patch is not _MISSING and patch != "auto" and not _positive_ints(2)(patch):
        raise ConfigError(
            "masking.patch_size", patch, "must be auto (sized by the data's boxes) or two positive integers (py, px)"
        )
    _require(cfg, "model.ema.init_share", lambda v: 0 < v < 1, "in (0, 1) (or null: keep ema.base)", optional=True)
    weights = _get(cfg, "loss.weights")
    if isinstance(weights, dict):
        for term, value in weights.items():
            if _number(f"loss.weights.{term}", value) < 0:
                raise ConfigError(f"loss.weights.{term}", value, "must be >= 0 (0 turns the term off)")
        if not any(v > 0 for v in weights.values()):
            raise ConfigError("loss.weights", weights, "all zero: nothing to train")
    _check_window(cfg)
    _check_max_steps(cfg, needed=False)
    _check_resume(cfg)
    root = _data_root(cfg)
    if root is not None:
        splits = list(_get(cfg, "data.splits") or []) + [_get(cfg, "data.fallback_split"), _get(cfg, "data.val_split")]
        _check_sensor(cfg, _recordings(root, [s for s in splits if isinstance(s, str)]))
    _check_outputs(cfg, [("paths.output_dir", "output folder"), ("callbacks.checkpoint.dirpath", "checkpoint folder")])


def _explicit_backbone_keys(cfg: DictConfig) -> set[str]:
    """Backbone settings the user chose: overridden on the command line (when Hydra says), or
    different from the ``backbone`` group's default file."""
    keys = set()
    try:
        from hydra.core.hydra_config import HydraConfig

        for override in HydraConfig.get().overrides.task:
            key = override.lstrip("+~").split("=", 1)[0]
            if key.startswith("backbone."):
                keys.add(key[len("backbone.") :].split(".")[0])
    except (ValueError, ImportError):  # no Hydra app running (tests, notebooks)
        pass
    from evcmae.tools.pretrain import config_dir

    default_file = Path(config_dir("common")) / "backbone" / "default.yaml"
    if default_file.is_file():
        default = OmegaConf.to_container(OmegaConf.load(default_file))
        current = _get(cfg, "backbone")
        if isinstance(current, dict):
            keys |= {k for k, v in current.items() if k != "_target_" and default.get(k, _MISSING) != v}
    return keys


def _check_pretrained_backbone(cfg: DictConfig) -> None:
    pretrained = _get(cfg, "model.pretrained")
    if not pretrained or _get(cfg, "model.detector.input") != "sparse":
        return
    if not Path(pretrained).exists():
        raise ConfigError("model.pretrained", pretrained, "no such file or folder")
    from evcmae.finetune.rvt_checkpoint import is_detector_checkpoint

    if is_detector_checkpoint(pretrained):
        return  # a whole detector: every tensor is loaded as it is
    from evcmae.finetune.transfer import backbone_config

    kwargs, _ = backbone_config(pretrained, _get(cfg, "model.pretrained_which") or "teacher")
    current = _get(cfg, "backbone")
    for key in sorted(_explicit_backbone_keys(cfg)):
        mine, theirs = current.get(key), kwargs.get(key, _MISSING)
        if isinstance(mine, list) and isinstance(theirs, list) and len(mine) > len(theirs):
            # per-stage settings of an export cut after its last trained stage (x_conv3): the
            # stages it has must match, the ones after the cut are never built
            mine = mine[: len(theirs)]
        if theirs is not _MISSING and mine != theirs:
            raise ConfigError(
                f"backbone.{key}",
                mine,
                f"the pretrained encoder ({pretrained}) was built with {key}={theirs}, and its weights need it; "
                "drop the override to use the pretrained shapes, or fine-tune from scratch (model.pretrained=null)",
            )


def check_finetune_config(cfg: DictConfig) -> None:
    """Everything a fine-tuning run needs, before it starts (see the module docstring)."""
    from evcmae.finetune.transfer import MODES, WHICH

    _check_ranges(
        cfg,
        [
            ("data.seq_len", lambda v: v >= 1 and _integer(v), "a positive integer"),
            ("data.label_fraction", lambda v: 0 < v <= 1, "in (0, 1]"),
            ("data.stream_fraction", lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("model.lr_scale", lambda v: v > 0, "> 0"),
            ("optim.warmup", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("model.conf_threshold", lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("model.nms_threshold", lambda v: 0 < v <= 1, "in (0, 1]"),
            *_DATA_RULES,
            *_TRAINER_RULES,
        ],
    )
    _require(cfg, "optim.lr", lambda v: v > 0, "> 0 (or null: 2e-4 * sqrt(batch / 8))", optional=True)
    for key, allowed in (
        ("model.detector.input", ("sparse", "histogram")),
        ("model.encoder_mode", MODES),
        ("model.pretrained_which", WHICH),
        ("data.sampling", ("stream", "random", "mixed")),
    ):
        value = _get(cfg, key)
        if value is not _MISSING and value not in allowed:
            raise ConfigError(key, value, f"must be one of {', '.join(allowed)}")
    _check_window(cfg)
    _check_max_steps(cfg, needed=True)
    _check_resume(cfg)
    _check_pretrained_backbone(cfg)
    root = _data_root(cfg)
    if root is not None:
        splits = [s for s in (_get(cfg, f"data.{k}_split") for k in ("train", "val", "test")) if isinstance(s, str)]
        splits = splits or ["train", "val", "test"]
        if _get(cfg, "model.detector.input") != "histogram":
            _check_sensor(cfg, _recordings(root, splits))
        _check_class_ids(cfg, root, splits)
    _check_outputs(
        cfg,
        [
            ("paths.output_dir", "output folder"),
            ("callbacks.checkpoint.dirpath", "checkpoint folder"),
            ("record.root", "experiment record folder"),
        ],
    )
