"""Pretrained weights into the detector's sparse encoder, loudly.

A silently partial load is the failure users report most (docs/architecture.md, "Weight
transfer"), so this module refuses what ``pretrain.export.load_into`` would merely report: a
tensor whose name matches but whose shape differs (the encoder was built with another config) and
a load that matched nothing (wrong file or prefix). Everything else — missing and unexpected
names — is printed and logged.

The RVT stages, when pretraining trained them (``objectives/rvt_stages.py``), load into the
detector's RVT backbone the same way, whole or not at all (:func:`load_pretrained_rvt`).

Sources: an export folder (or one of its ``*_backbone.pt``, or ``backbone.json``) or a pretraining
Lightning ``.ckpt`` (keys ``teacher.backbone.*`` / ``student.backbone.*``). The encoder must be
built from the source's own backbone config, which :func:`backbone_config` reads so shapes fit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from torch import nn

from evcmae.events.errors import EvcmaeError
from evcmae.pretrain.checkpointing import read_checkpoint
from evcmae.pretrain.export import (
    CONFIG_FILE,
    STUDENT_FILE,
    TEACHER_FILE,
    WEIGHT_FILES,
    backbone_kwargs,
    load_into,
    read_export_config,
)

log = logging.getLogger(__name__)
WHICH = ("teacher", "student")
MODES = ("full", "freeze", "lr_scale")


class TransferError(EvcmaeError, RuntimeError):
    """Pretrained weights that do not fit the encoder (a user error: one line from the CLI)."""


def _which(which: str) -> str:
    if which not in WHICH:
        raise ValueError(f"pretrained_which must be one of {WHICH}, got {which!r}")
    return which


def export_json(path) -> dict | None:
    """``backbone.json`` of an export, or of the run folder a ``.ckpt`` sits in (``<run>/checkpoints``)."""
    path = Path(path)
    candidates = [path if path.is_dir() else path.parent]
    if path.suffix == ".ckpt":
        candidates.append(path.parent.parent)
    for folder in candidates:
        if (folder / CONFIG_FILE).is_file():
            return read_export_config(folder / CONFIG_FILE)
    return None


def weights_file(path, which: str = "teacher") -> Path:
    """The file the weights come from (an export folder resolves to its ``*_backbone.pt``)."""
    path = Path(path)
    if path.is_dir() or path.name == CONFIG_FILE:
        folder = path if path.is_dir() else path.parent
        return folder / WEIGHT_FILES[_which(which)]
    return path


def backbone_state(path, which: str = "teacher") -> dict:
    """The backbone's own state dict (no prefix) from any supported source."""
    path, which = Path(path), _which(which)
    if not path.exists():
        raise FileNotFoundError(f"model.pretrained={path}: no such file or folder")
    path = weights_file(path, which)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.pretrained: {path} not found (an export folder holds {TEACHER_FILE}, {STUDENT_FILE}, {CONFIG_FILE})"
        )
    if path.suffix == ".ckpt":
        ckpt = read_checkpoint(path)  # a truncated file: CheckpointError naming it
        state = ckpt.get("state_dict", ckpt)
        # a pretraining checkpoint holds teacher.backbone.* / student.backbone.*; a fine-tuning one
        # holds its (trained) encoder under model.encoder.backbone.*
        for prefix in (f"{which}.backbone.", "model.encoder.backbone."):
            out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if out:
                return out
        prefixes = sorted({k.split(".")[0] for k in state})
        raise TransferError(
            f"{path}: no '{which}.backbone.*' or 'model.encoder.backbone.*' tensors in the checkpoint "
            f"(top-level names: {prefixes})"
        )
    state = read_checkpoint(path, weights_only=True)
    if not isinstance(state, dict):
        raise TransferError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def backbone_config(path, which: str = "teacher") -> tuple[dict, dict | None]:
    """(backbone constructor kwargs, voxelizer settings or None) for a pretrained source."""
    info = export_json(path)
    if info is not None:
        return backbone_kwargs(info), info.get("voxelizer")
    from evcmae.backbones.sparse_resnet import config_from_state  # spconv only when needed

    return config_from_state(backbone_state(path, which)), None


def load_pretrained(
    encoder: nn.Module, path, which: str = "teacher", logger=None, echo: Callable[[str], None] = print
) -> dict:
    """Load ``which`` backbone weights from ``path`` into ``encoder.backbone``; returns the report
    (with ``loaded_count``/``total``). Tensors after the encoder's cut (e.g. ``conv4``) are expected
    to be unused and are reported as such, not as errors."""
    backbone = getattr(encoder, "backbone", encoder)
    state = backbone_state(path, which)
    path = weights_file(path, which)
    own = backbone.state_dict()
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise TransferError(
            f"{path} ({which}): {len(mismatched)} tensors have the encoder's names but other "
            f"shapes (built from a different backbone config?): " + "; ".join(mismatched[:5])
        )
    lines = []
    report = load_into(backbone, state, log=lines.append)
    if not report["loaded"]:
        raise TransferError(
            f"{path} ({which}): no tensor matches the encoder by name; file has e.g. "
            f"{sorted(state)[:5]}, encoder expects e.g. {sorted(own)[:5]}"
        )
    stages = list(backbone.stage_modules()) if hasattr(backbone, "stage_modules") else []
    _announce(report, len(own), stages, f"pretrained encoder from {path} ({which}): " + lines[0], echo)
    if logger is not None and hasattr(logger, "log_hyperparams"):
        logger.log_hyperparams({"pretrained/loaded": report["loaded_count"], "pretrained/total": report["total"]})
    return report


def _announce(report: dict, total: int, stages: list[str], head: str, echo: Callable[[str], None]) -> None:
    """Completes a load report (``loaded_count``, ``total``, and per stage the detector uses how
    many of its tensors came from the file) and says it: ``head``, then the stages."""
    report["loaded_count"], report["total"] = len(report["loaded"]), total
    report["stages"] = {stage: sum(k.startswith(f"{stage}.") for k in report["loaded"]) for stage in stages}
    message = head
    if stages:
        message += "; stages used: " + ", ".join(f"{k} ({n} tensors)" for k, n in report["stages"].items())
    echo(message)
    log.info(message)


def rvt_state(path, which: str = "teacher") -> tuple[dict, Path, dict] | None:
    """(state dict, file, record) of the RVT stages a pretraining source holds (an export whose
    ``backbone.json`` has ``rvt``, or a pretraining ``.ckpt`` whose run trained them); None when
    it holds none (pretrained without the ``rvt_stages`` objective)."""
    path, which = Path(path), _which(which)
    info = export_json(path)
    record = (info or {}).get("rvt")
    if path.suffix == ".ckpt":
        state = read_checkpoint(path).get("state_dict", {})
        twin = "teacher_rvt" if which == "teacher" else "rvt"
        # objectives.<objective name>.<twin>.<tensor>
        owners = sorted({k.split(".")[1] for k in state if k.startswith("objectives.") and k.split(".")[2:3] == [twin]})
        if not owners:
            return None
        prefix = f"objectives.{owners[0]}.{twin}."
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, path, record or {}
    if record is None:
        return None
    folder = path if path.is_dir() else path.parent
    file = folder / record["files"][which]
    if not file.is_file():
        raise TransferError(f"{folder / CONFIG_FILE} lists the RVT stages in {file.name}, which is missing")
    return read_checkpoint(file, weights_only=True), file, record


def load_pretrained_rvt(
    rvt: nn.Module, path, which: str = "teacher", logger=None, echo: Callable[[str], None] = print
) -> dict | None:
    """Load the RVT stages a pretraining run trained (``objectives/rvt_stages.py``) into the
    detector's RVT backbone; returns the load report, None when the source has none. Names and
    shapes must match whole: a stage pretrained for another RVT size or encoder cut is refused."""
    found = rvt_state(path, which)
    if found is None:
        return None
    state, file, _ = found
    own = rvt.state_dict()
    wrong = sorted(set(own) ^ set(state)) + [k for k in own if k in state and own[k].shape != state[k].shape]
    if wrong:
        raise TransferError(
            f"{file} ({which}): the pretrained RVT stages do not fit the detector's (another RVT size or "
            f"encoder output?): {len(wrong)} tensors differ, e.g. {wrong[:3]}"
        )
    lines = []
    report = load_into(rvt, state, log=lines.append)
    stages = [f"stages.{i}" for i in range(len(rvt.stages))]
    _announce(report, len(own), stages, f"pretrained RVT stages from {file} ({which}): " + lines[0], echo)
    if logger is not None and hasattr(logger, "log_hyperparams"):
        logger.log_hyperparams({"pretrained/rvt_loaded": report["loaded_count"]})
    return report


def encoder_param_groups(model: nn.Module, lr: float, mode: str = "full", lr_scale: float = 1.0) -> list[dict]:
    """Optimizer groups: ``full`` trains everything at ``lr``; ``lr_scale`` gives the encoder
    ``lr * lr_scale``; ``freeze`` leaves the encoder out (call ``encoder.freeze()`` too)."""
    if mode not in MODES:
        raise ValueError(f"encoder mode must be one of {MODES}, got {mode!r}")
    encoder = getattr(model, "encoder", None)
    enc_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    rest = [p for p in model.parameters() if id(p) not in enc_ids and p.requires_grad]
    enc = [p for p in encoder.parameters() if p.requires_grad] if encoder is not None else []
    if mode == "freeze" or not enc:
        return [{"params": rest, "lr": lr, "name": "detector"}]
    if mode == "full":
        return [{"params": rest + enc, "lr": lr, "name": "all"}]
    return [
        {"params": rest, "lr": lr, "name": "detector"},
        {"params": enc, "lr": lr * float(lr_scale), "name": "encoder"},
    ]
